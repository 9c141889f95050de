package node

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/amarula/amarula/media"
)

// Config is every setting of a node (design.md §6). Environment variables
// set the defaults; command-line flags of the same name override them.
type Config struct {
	Listen          string        // AMARULA_LISTEN
	DataDir         string        // AMARULA_DATA_DIR
	NodeName        string        // AMARULA_NODE_NAME
	Cluster         string        // AMARULA_CLUSTER
	EtcdEndpoints   []string      // AMARULA_ETCD_ENDPOINTS (empty: single-node mode)
	RedisURL        string        // AMARULA_REDIS_URL (empty: embedded bbolt)
	S3              S3Config      // AMARULA_S3_* (empty endpoint: files under the data dir)
	GossipBind      string        // AMARULA_GOSSIP_BIND
	GossipAdvertise string        // AMARULA_GOSSIP_ADVERTISE
	Join            []string      // AMARULA_JOIN
	AdvertiseURL    string        // AMARULA_ADVERTISE_URL
	AdminKey        string        // AMARULA_ADMIN_KEY (secret; never logged)
	LeaseTTL        time.Duration // AMARULA_LEASE_TTL
	ConnectRate     float64       // AMARULA_CONNECT_RATE
	WhatsAppURL     string        // AMARULA_WHATSAPP_URL (empty: real WhatsApp)
	WhatsAppRootKey string        // AMARULA_WHATSAPP_ROOT_KEY (hex; with a wasim URL)
	LogFormat       string        // AMARULA_LOG_FORMAT: json or text
	LogLevel        string        // AMARULA_LOG_LEVEL: debug, info, warn, error
	ShutdownTimeout time.Duration // AMARULA_SHUTDOWN_TIMEOUT
	MediaMaxBytes   int64         // AMARULA_MEDIA_MAX_BYTES

	// tuneMedia, set by tests, adjusts the media worker's tunables.
	tuneMedia func(*media.Config)
}

// S3Config locates the media object store.
type S3Config struct {
	Endpoint  string // AMARULA_S3_ENDPOINT
	Bucket    string // AMARULA_S3_BUCKET
	Region    string // AMARULA_S3_REGION
	AccessKey string // AMARULA_S3_ACCESS_KEY (secret)
	SecretKey string // AMARULA_S3_SECRET_KEY (secret)
}

// setting describes one configuration variable: its environment name, flag
// name, default, help text and where it lands in Config.
type setting struct {
	env, flag, def, help string
	secret               bool
	set                  func(c *Config, v string) error
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "amarula"
	}
	return strings.ToLower(h)
}

func settings() []setting {
	str := func(p func(*Config) *string) func(*Config, string) error {
		return func(c *Config, v string) error { *p(c) = strings.TrimSpace(v); return nil }
	}
	list := func(p func(*Config) *[]string) func(*Config, string) error {
		return func(c *Config, v string) error { *p(c) = splitList(v); return nil }
	}
	dur := func(p func(*Config) *time.Duration) func(*Config, string) error {
		return func(c *Config, v string) error {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("not a duration like 10s: %q", v)
			}
			*p(c) = d
			return nil
		}
	}
	return []setting{
		{"AMARULA_LISTEN", "listen", ":8080", "HTTP API listen address", false, str(func(c *Config) *string { return &c.Listen })},
		{"AMARULA_DATA_DIR", "data-dir", "./amarula_data", "embedded store and media fallback directory", false, str(func(c *Config) *string { return &c.DataDir })},
		{"AMARULA_NODE_NAME", "node-name", hostname(), "unique node name", false, str(func(c *Config) *string { return &c.NodeName })},
		{"AMARULA_CLUSTER", "cluster", "default", "cluster name: key prefix in etcd and Redis", false, str(func(c *Config) *string { return &c.Cluster })},
		{"AMARULA_ETCD_ENDPOINTS", "etcd-endpoints", "", "comma list of etcd endpoints; empty = single-node mode", false, list(func(c *Config) *[]string { return &c.EtcdEndpoints })},
		{"AMARULA_REDIS_URL", "redis-url", "", "redis:// or rediss:// URL; empty = embedded bbolt store", true, str(func(c *Config) *string { return &c.RedisURL })},
		{"AMARULA_S3_ENDPOINT", "s3-endpoint", "", "S3 endpoint URL; empty = media files under the data dir", false, str(func(c *Config) *string { return &c.S3.Endpoint })},
		{"AMARULA_S3_BUCKET", "s3-bucket", "amarula-media", "S3 bucket for media", false, str(func(c *Config) *string { return &c.S3.Bucket })},
		{"AMARULA_S3_REGION", "s3-region", "us-east-1", "S3 region", false, str(func(c *Config) *string { return &c.S3.Region })},
		{"AMARULA_S3_ACCESS_KEY", "s3-access-key", "", "S3 access key", true, str(func(c *Config) *string { return &c.S3.AccessKey })},
		{"AMARULA_S3_SECRET_KEY", "s3-secret-key", "", "S3 secret key", true, str(func(c *Config) *string { return &c.S3.SecretKey })},
		{"AMARULA_GOSSIP_BIND", "gossip-bind", "0.0.0.0:7946", "memberlist bind address", false, str(func(c *Config) *string { return &c.GossipBind })},
		{"AMARULA_GOSSIP_ADVERTISE", "gossip-advertise", "", "memberlist advertise address (default: bind address)", false, str(func(c *Config) *string { return &c.GossipAdvertise })},
		{"AMARULA_JOIN", "join", "", "seed members: host:port list or DNS name of a headless service", false, list(func(c *Config) *[]string { return &c.Join })},
		{"AMARULA_ADVERTISE_URL", "advertise-url", "", "how other nodes reach this node's API (default derived from listen address)", false, str(func(c *Config) *string { return &c.AdvertiseURL })},
		{"AMARULA_ADMIN_KEY", "admin-key", "", "admin bearer token; empty = generated once, printed, kept in the data dir", true, str(func(c *Config) *string { return &c.AdminKey })},
		{"AMARULA_LEASE_TTL", "lease-ttl", "10s", "etcd lease TTL", false, dur(func(c *Config) *time.Duration { return &c.LeaseTTL })},
		{"AMARULA_CONNECT_RATE", "connect-rate", "20", "session connects per second per node", false, func(c *Config, v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return fmt.Errorf("not a number: %q", v)
			}
			c.ConnectRate = f
			return nil
		}},
		{"AMARULA_WHATSAPP_URL", "whatsapp-url", "", "point sessions at a wasim instance (ws://127.0.0.1:…); empty = real WhatsApp", false, str(func(c *Config) *string { return &c.WhatsAppURL })},
		{"AMARULA_WHATSAPP_ROOT_KEY", "whatsapp-root-key", "", "hex root public key of the wasim instance", false, str(func(c *Config) *string { return &c.WhatsAppRootKey })},
		{"AMARULA_LOG_FORMAT", "log-format", "text", "log format: json or text", false, str(func(c *Config) *string { return &c.LogFormat })},
		{"AMARULA_LOG_LEVEL", "log-level", "info", "log level: debug, info, warn, error", false, str(func(c *Config) *string { return &c.LogLevel })},
		{"AMARULA_SHUTDOWN_TIMEOUT", "shutdown-timeout", "10s", "graceful shutdown budget", false, dur(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
		{"AMARULA_MEDIA_MAX_BYTES", "media-max-bytes", "104857600", "largest media accepted for sending or downloading", false, func(c *Config, v string) error {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return fmt.Errorf("not an integer: %q", v)
			}
			c.MediaMaxBytes = n
			return nil
		}},
	}
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// DefaultConfig returns the embedded defaults (no environment, no flags).
func DefaultConfig() Config {
	var c Config
	for _, s := range settings() {
		if err := s.set(&c, s.def); err != nil {
			panic("node: bad default for " + s.env + ": " + err.Error())
		}
	}
	return c
}

// ErrHelp is returned by LoadConfig when --help was asked for; the usage
// text has been written.
var ErrHelp = flag.ErrHelp

// LoadConfig builds the configuration from defaults, then the environment
// (getenv), then command-line args, and validates it. Errors are one line.
func LoadConfig(args []string, getenv func(string) string, usageOut io.Writer) (Config, error) {
	c := DefaultConfig()
	all := settings()
	for _, s := range all {
		if v := getenv(s.env); v != "" {
			if err := s.set(&c, v); err != nil {
				return Config{}, fmt.Errorf("config: %s: %v", s.env, err)
			}
		}
	}
	fs := flag.NewFlagSet("amarula-node", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.Usage = func() { writeUsage(usageOut, all) }
	for _, s := range all {
		s := s
		fs.Func(s.flag, s.help, func(v string) error { return s.set(&c, v) })
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, ErrHelp
		}
		return Config{}, fmt.Errorf("config: %v", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %q (settings are flags or AMARULA_* variables, see --help)", fs.Arg(0))
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func writeUsage(w io.Writer, all []setting) {
	fmt.Fprintf(w, "Usage: amarula-node [flags]\n\nEvery setting can be given as an environment variable or as a flag (the flag wins).\n\n")
	for _, s := range all {
		def := s.def
		if s.secret && def != "" {
			def = "(set)"
		}
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%-18s %-26s %s (default %s)\n", s.flag, s.env, s.help, def)
	}
}

var (
	nodeNamePattern    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)
	clusterNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
)

// SingleNode reports whether the node runs without etcd.
func (c Config) SingleNode() bool { return len(c.EtcdEndpoints) == 0 }

// Validate checks every setting and returns the first problem as one line.
func (c Config) Validate() error {
	bad := func(env, format string, a ...any) error {
		return fmt.Errorf("config: %s: %s", env, fmt.Sprintf(format, a...))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("AMARULA_LISTEN", "want host:port or :port, got %q", c.Listen)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return bad("AMARULA_DATA_DIR", "must not be empty")
	}
	if !nodeNamePattern.MatchString(c.NodeName) {
		return bad("AMARULA_NODE_NAME", "%q must match %s", c.NodeName, nodeNamePattern)
	}
	if !clusterNamePattern.MatchString(c.Cluster) {
		return bad("AMARULA_CLUSTER", "%q must match %s", c.Cluster, clusterNamePattern)
	}
	for _, e := range c.EtcdEndpoints {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("AMARULA_ETCD_ENDPOINTS", "%q is not an http(s)://host:port endpoint", e)
		}
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return bad("AMARULA_REDIS_URL", "want redis://host:port/db or rediss://…")
		}
	}
	if c.S3.Endpoint != "" {
		if u, err := url.Parse(c.S3.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("AMARULA_S3_ENDPOINT", "%q is not an http(s) URL", c.S3.Endpoint)
		}
		if c.S3.Bucket == "" {
			return bad("AMARULA_S3_BUCKET", "required with AMARULA_S3_ENDPOINT")
		}
		if c.S3.AccessKey == "" || c.S3.SecretKey == "" {
			return bad("AMARULA_S3_ACCESS_KEY", "AMARULA_S3_ACCESS_KEY and AMARULA_S3_SECRET_KEY are required with AMARULA_S3_ENDPOINT")
		}
	}
	if _, _, err := net.SplitHostPort(c.GossipBind); err != nil {
		return bad("AMARULA_GOSSIP_BIND", "want host:port, got %q", c.GossipBind)
	}
	if c.GossipAdvertise != "" {
		if _, _, err := net.SplitHostPort(c.GossipAdvertise); err != nil {
			return bad("AMARULA_GOSSIP_ADVERTISE", "want host:port, got %q", c.GossipAdvertise)
		}
	}
	if c.AdvertiseURL != "" {
		if u, err := url.Parse(c.AdvertiseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("AMARULA_ADVERTISE_URL", "%q is not an http(s) URL", c.AdvertiseURL)
		}
	}
	if c.AdminKey != "" && len(c.AdminKey) < 16 {
		return bad("AMARULA_ADMIN_KEY", "must be at least 16 characters")
	}
	if !c.SingleNode() && c.AdminKey == "" {
		return bad("AMARULA_ADMIN_KEY", "required in cluster mode (every node must accept the same key)")
	}
	if c.LeaseTTL < 2*time.Second || c.LeaseTTL > 5*time.Minute {
		return bad("AMARULA_LEASE_TTL", "must be between 2s and 5m, got %s", c.LeaseTTL)
	}
	if c.ConnectRate <= 0 || c.ConnectRate > 10000 {
		return bad("AMARULA_CONNECT_RATE", "must be in (0, 10000], got %v", c.ConnectRate)
	}
	if c.WhatsAppURL != "" {
		if u, err := url.Parse(c.WhatsAppURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return bad("AMARULA_WHATSAPP_URL", "%q is not a ws:// or wss:// URL", c.WhatsAppURL)
		}
		if c.WhatsAppRootKey == "" {
			return bad("AMARULA_WHATSAPP_ROOT_KEY", "required with AMARULA_WHATSAPP_URL (wasim prints it at start)")
		}
	}
	if c.WhatsAppRootKey != "" {
		if b, err := hex.DecodeString(c.WhatsAppRootKey); err != nil || len(b) != 32 {
			return bad("AMARULA_WHATSAPP_ROOT_KEY", "want 64 hex characters (a 32-byte public key)")
		}
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return bad("AMARULA_LOG_FORMAT", "want json or text, got %q", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("AMARULA_LOG_LEVEL", "want debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.ShutdownTimeout < time.Second || c.ShutdownTimeout > 10*time.Minute {
		return bad("AMARULA_SHUTDOWN_TIMEOUT", "must be between 1s and 10m, got %s", c.ShutdownTimeout)
	}
	if c.MediaMaxBytes < 1024 {
		return bad("AMARULA_MEDIA_MAX_BYTES", "must be at least 1024, got %d", c.MediaMaxBytes)
	}
	return nil
}
