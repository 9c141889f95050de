package wasim

import (
	"errors"
	"io"
	"log/slog"
	"time"
)

// Config holds every tunable of a Server. Zero values take the defaults
// documented on each field (see DefaultConfig).
type Config struct {
	// Addr is the TCP listen address. Default "127.0.0.1:0".
	Addr string
	// RootPrivateKey is the 32-byte X25519 private key of the certificate root
	// that signs the Noise certificate chain. Nil means a random key per
	// Server; clients must trust its public half (see SetRootKey).
	RootPrivateKey []byte
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
	// MaxFrameSize bounds one WhatsApp frame payload. Default 4 MiB.
	MaxFrameSize int
	// HandshakeTimeout bounds the Noise handshake. Default 20 s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one websocket write. Default 10 s.
	WriteTimeout time.Duration
	// StreamErrorCloseDelay is how long the server waits after sending a
	// terminal stream error (replaced, device_removed, 515) before closing the
	// socket, so the client registers the error first (notes §9.1). Default 500 ms.
	StreamErrorCloseDelay time.Duration
	// MediaHost is the host name handed out in media_conn and upload URLs.
	// Clients must route it to this server (see HTTPClient). Default "mmg.whatsapp.net".
	MediaHost string
	// OfflineQueueLimit caps the stanzas queued for one device. Default 10000.
	OfflineQueueLimit int
	// PhoneInboxLimit caps the received messages a simulated phone keeps
	// for the admin API; the oldest are dropped. Default 10000.
	PhoneInboxLimit int
	// ReplaceGrace is how long a login waits for an older connection of the
	// same device to close on its own (a quick reconnect) before replacing
	// it with stream error 440. Default 200 ms.
	ReplaceGrace time.Duration
	// IdleTimeout closes a connection that sent nothing for this long
	// (whatsmeow pings every 20-30 s). Default 90 s.
	IdleTimeout time.Duration
	// PairTimeout bounds how long a link request waits for the companion's
	// pair-device-sign. Default 15 s.
	PairTimeout time.Duration
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = 4 << 20
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 20 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.StreamErrorCloseDelay == 0 {
		c.StreamErrorCloseDelay = 500 * time.Millisecond
	}
	if c.MediaHost == "" {
		c.MediaHost = "mmg.whatsapp.net"
	}
	if c.OfflineQueueLimit == 0 {
		c.OfflineQueueLimit = 10000
	}
	if c.PhoneInboxLimit == 0 {
		c.PhoneInboxLimit = 10000
	}
	if c.ReplaceGrace == 0 {
		c.ReplaceGrace = 200 * time.Millisecond
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 90 * time.Second
	}
	if c.PairTimeout == 0 {
		c.PairTimeout = 15 * time.Second
	}
}

func (c *Config) validate() error {
	if c.RootPrivateKey != nil && len(c.RootPrivateKey) != 32 {
		return errors.New("wasim: RootPrivateKey must be 32 bytes")
	}
	if c.MaxFrameSize < 1024 || c.MaxFrameSize >= 1<<24 {
		return errors.New("wasim: MaxFrameSize must be in [1 KiB, 16 MiB)")
	}
	return nil
}
