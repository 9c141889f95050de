package wasim

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"time"

	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/wasim/phone"
)

var phoneNumberRE = regexp.MustCompile(`^[1-9][0-9]{6,15}$`)

// CreatePhone creates an account with a simulated phone for number (digits
// only, international format without '+') and push name name.
func (s *Server) CreatePhone(number, name string) (*Phone, error) {
	if !phoneNumberRE.MatchString(number) {
		return nil, fmt.Errorf("%w: phone must be 7-16 digits", ErrInvalidRequest)
	}
	dev, err := phone.NewDevice(types.NewJID(number, types.DefaultUserServer))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.accounts[number] != nil {
		return nil, ErrPhoneExists
	}
	s.lidSeq++
	a := &account{user: number, lid: strconv.FormatUint(s.lidSeq, 10), name: name, devices: map[uint16]*device{}}
	p := &Phone{srv: s, acct: a, dev: dev,
		sent: map[string]*sentMessage{}, receipts: map[string]string{}, receiptTypes: map[string]map[string]bool{},
		senders: map[string]types.JID{}, retries: map[string]int{}}
	a.phone = p
	s.accounts[number] = a
	s.byLID[a.lid] = a
	return p, nil
}

// Phone returns the simulated phone of number, or nil.
func (s *Server) Phone(number string) *Phone {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if a := s.accounts[number]; a != nil {
		return a.phone
	}
	return nil
}

// LinkQR makes the phone scan qr (the string a client shows, from
// whatsmeow's QR channel) and waits until the companion confirmed the
// pairing. It returns the new device JID.
func (p *Phone) LinkQR(ctx context.Context, qr string) (types.JID, error) {
	return p.srv.linkQR(ctx, p.acct, qr)
}

// LinkCode enters the 8-character code a client got from PairPhone on this
// phone and completes the pairing.
func (p *Phone) LinkCode(ctx context.Context, code string) (types.JID, error) {
	return p.srv.linkCode(ctx, p.acct, code)
}

// SendText sends a text message.
func (p *Phone) SendText(to types.JID, text string) (string, error) {
	return p.Send(to, phone.Text(text))
}

// SendMedia encrypts and uploads data and sends it as a message of kind
// image, video, audio, voice (an audio message with PTT set: a voice note)
// or sticker; any other kind is sent as a document.
func (p *Phone) SendMedia(to types.JID, kind, mime string, data []byte, caption, fileName string) (string, error) {
	upKind := kind
	switch kind {
	case phone.KindImage, phone.KindVideo, phone.KindAudio, phone.KindSticker:
	case "voice":
		upKind = phone.KindAudio
	default:
		kind, upKind = phone.KindDocument, phone.KindDocument
	}
	blob, up, err := p.srv.media.upload(upKind, data)
	if err != nil {
		return "", err
	}
	switch kind {
	case phone.KindImage:
		return p.Send(to, phone.Image(blob, up, mime, caption))
	case phone.KindVideo:
		return p.Send(to, phone.Video(blob, up, mime, caption))
	case phone.KindAudio, "voice":
		return p.Send(to, phone.Audio(blob, up, mime, kind == "voice"))
	case phone.KindSticker:
		return p.Send(to, phone.Sticker(blob, up, mime))
	}
	if fileName == "" {
		fileName = "file"
	}
	return p.Send(to, phone.Document(blob, up, mime, fileName, caption))
}

// targetKey builds the key of a message in the chat with `to`.
func (p *Phone) targetKey(to types.JID, id string) phone.MessageKey {
	p.mu.Lock()
	_, fromMe := p.sent[id]
	sender, received := p.senders[id]
	p.mu.Unlock()
	key := phone.MessageKey{Chat: to.ToNonAD(), ID: id, FromMe: fromMe}
	if to.Server == types.GroupServer && !fromMe && received {
		key.Participant = sender.ToNonAD()
	}
	return key
}

// SendReaction reacts to message targetID in the chat with to.
func (p *Phone) SendReaction(to types.JID, targetID, emoji string) (string, error) {
	return p.Send(to, phone.Reaction(p.targetKey(to, targetID), emoji))
}

// SendEdit edits the phone's own message targetID.
func (p *Phone) SendEdit(to types.JID, targetID, text string) (string, error) {
	return p.Send(to, phone.Edit(to.ToNonAD(), targetID, text))
}

// SendRevoke deletes the phone's own message targetID for everyone.
func (p *Phone) SendRevoke(to types.JID, targetID string) (string, error) {
	return p.Send(to, phone.Revoke(phone.MessageKey{Chat: to.ToNonAD(), ID: targetID, FromMe: true}))
}

// Unlink removes one of the phone's companion devices; a connected device
// gets stream error 401 (device_removed), later logins fail with 401.
func (p *Phone) Unlink(deviceJID types.JID) error {
	if deviceJID.User != p.acct.user || deviceJID.Device == 0 {
		return fmt.Errorf("%w: %s", ErrUnknownDevice, deviceJID)
	}
	d := p.srv.lookupDevice(deviceJID)
	if d == nil {
		return fmt.Errorf("%w: %s", ErrUnknownDevice, deviceJID)
	}
	p.srv.unlink(d, true)
	return nil
}

// DropSession makes the phone forget its Signal session with a device, so
// its next message starts a new session (white-box tests).
func (p *Phone) DropSession(deviceJID types.JID) { p.dev.DeleteSession(deviceJID) }

// DeviceInfo is one row of GET /admin/devices.
type DeviceInfo struct {
	JID              string `json:"jid"`
	LID              string `json:"lid"`
	Connected        bool   `json:"connected"`
	Removed          bool   `json:"removed,omitempty"`
	ConnectionsTotal uint64 `json:"connections_total"`
	ReplacedTotal    uint64 `json:"replaced_total"`
	OverlapMsTotal   int64  `json:"overlap_ms_total"`
	Queued           int    `json:"queued"`
	PreKeys          int    `json:"prekeys"`
}

// Devices lists every companion device ever linked, sorted by JID.
func (s *Server) Devices() []DeviceInfo {
	s.mu.RLock()
	var devs []*device
	for _, a := range s.accounts {
		for _, d := range a.devices {
			devs = append(devs, d)
		}
	}
	s.mu.RUnlock()
	out := make([]DeviceInfo, 0, len(devs))
	now := time.Now()
	for _, d := range devs {
		d.mu.Lock()
		if !d.linked {
			d.mu.Unlock()
			continue
		}
		overlap := d.overlap
		if !d.overlapSince.IsZero() {
			overlap += now.Sub(d.overlapSince)
		}
		out = append(out, DeviceInfo{
			JID: d.jid().String(), LID: d.lidJID().String(), Connected: d.conn != nil, Removed: d.removed,
			ConnectionsTotal: d.connectionsTotal, ReplacedTotal: d.replacedTotal,
			OverlapMsTotal: overlap.Milliseconds(), Queued: len(d.pending), PreKeys: d.preKeyCount(),
		})
		d.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID < out[j].JID })
	return out
}

// Stats are server-wide totals (GET /admin/stats).
type Stats struct {
	Phones            int    `json:"phones"`
	Devices           int    `json:"devices"`
	DevicesConnected  int    `json:"devices_connected"`
	Connections       int    `json:"connections"`
	ConnectionsOpened uint64 `json:"connections_opened"`
	HandshakeFailures uint64 `json:"handshake_failures"`
	BadFrames         uint64 `json:"bad_frames"`
	NodesReceived     uint64 `json:"nodes_received"`
	NodesSent         uint64 `json:"nodes_sent"`
	MessagesRouted    uint64 `json:"messages_routed"`
	ReceiptsRouted    uint64 `json:"receipts_routed"`
	Replaced          uint64 `json:"replaced"`
	Pairings          uint64 `json:"pairings"`
	UnknownRequests   uint64 `json:"unknown_requests"`
	MediaRetries      uint64 `json:"media_retries"`
	Queued            int    `json:"queued"`
	MediaBlobs        int    `json:"media_blobs"`
	MediaBytes        int64  `json:"media_bytes"`
}

// Stats returns server-wide totals.
func (s *Server) Stats() Stats {
	st := Stats{
		ConnectionsOpened: s.stats.connectionsOpened.Load(),
		HandshakeFailures: s.stats.handshakeFailures.Load(),
		BadFrames:         s.stats.badFrames.Load(),
		NodesReceived:     s.stats.nodesReceived.Load(),
		NodesSent:         s.stats.nodesSent.Load(),
		MessagesRouted:    s.stats.messagesRouted.Load(),
		ReceiptsRouted:    s.stats.receiptsRouted.Load(),
		Replaced:          s.stats.replaced.Load(),
		Pairings:          s.stats.pairings.Load(),
		UnknownRequests:   s.stats.unknownIQs.Load(),
		MediaRetries:      s.stats.mediaRetries.Load(),
	}
	s.mu.RLock()
	st.Phones = len(s.accounts)
	st.Connections = len(s.conns)
	var devs []*device
	for _, a := range s.accounts {
		for _, d := range a.devices {
			devs = append(devs, d)
		}
	}
	s.mu.RUnlock()
	for _, d := range devs {
		d.mu.Lock()
		if d.linked && !d.removed {
			st.Devices++
			if d.conn != nil {
				st.DevicesConnected++
			}
		}
		st.Queued += len(d.pending)
		d.mu.Unlock()
	}
	ms := s.media.store.Stats()
	st.MediaBlobs, st.MediaBytes = ms.Blobs, ms.Bytes
	return st
}
