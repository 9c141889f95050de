package wasim

import (
	"errors"
	"fmt"
	"sync"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/wasim/phone"
)

// Phone is a simulated phone: the primary device (device 0) of an account.
// It links companions, sends to users and decrypts what devices send it.
type Phone struct {
	srv  *Server
	acct *account
	dev  *phone.Device

	mu           sync.Mutex
	inbox        []ReceivedMessage
	seq          int64
	sent         map[string]*sentMessage
	sentIDs      []string
	receipts     map[string]string          // message id → last receipt type ("delivery", "read", …)
	receiptTypes map[string]map[string]bool // message id → every receipt type seen
	senders      map[string]types.JID       // received message id → sender device
	retries      map[string]int             // received message id → retry receipts sent
}

// ReceivedMessage is a message a phone received and decrypted.
type ReceivedMessage struct {
	Seq       int64      `json:"seq"`
	ID        string     `json:"id"`
	From      string     `json:"from"`
	Chat      string     `json:"chat,omitempty"`
	Type      string     `json:"type"`
	Text      string     `json:"text,omitempty"`
	Media     *MediaInfo `json:"media,omitempty"`
	TargetID  string     `json:"target_id,omitempty"`
	FromMe    bool       `json:"from_me,omitempty"`
	Timestamp int64      `json:"timestamp"`
	// Data is the decrypted media content (Go API only).
	Data []byte `json:"-"`
	// Message is the decoded protobuf (Go API only).
	Message *waE2E.Message `json:"-"`
}

// MediaInfo describes decrypted media of a ReceivedMessage.
type MediaInfo struct {
	Kind     string `json:"kind"`
	Mime     string `json:"mime"`
	Size     int    `json:"size"`
	SHA256   string `json:"sha256"`
	FileName string `json:"file_name,omitempty"`
	Error    string `json:"error,omitempty"`
}

type sentMessage struct {
	to types.JID
	m  *waE2E.Message
}

const maxSentRemembered = 1024

// JID returns the phone's user JID.
func (p *Phone) JID() types.JID { return p.acct.jid() }

// LID returns the account's LID (device 0).
func (p *Phone) LID() types.JID { return p.acct.lidJID() }

// Device returns the phone's Signal device (for white-box tests).
func (p *Phone) Device() *phone.Device { return p.dev }

// Messages returns the received messages with Seq > after.
func (p *Phone) Messages(after int64) []ReceivedMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []ReceivedMessage{}
	for _, m := range p.inbox {
		if m.Seq > after {
			out = append(out, m)
		}
	}
	return out
}

// Receipt returns the last receipt type the phone got for a message it sent
// ("" if none, "delivery", "read", "played", …).
func (p *Phone) Receipt(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.receipts[id]
}

func (p *Phone) record(rm ReceivedMessage) {
	p.mu.Lock()
	p.seq++
	rm.Seq = p.seq
	p.inbox = append(p.inbox, rm)
	if limit := p.srv.cfg.PhoneInboxLimit; len(p.inbox) > limit {
		// Keep memory bounded under load: the oldest messages go (their
		// seq numbers are never reused).
		drop := len(p.inbox) - limit
		for _, old := range p.inbox[:drop] {
			delete(p.senders, old.ID)
			delete(p.retries, old.ID)
		}
		p.inbox = append([]ReceivedMessage(nil), p.inbox[drop:]...)
	}
	p.mu.Unlock()
}

// receive decrypts what a companion sent to this phone.
func (p *Phone) receive(sender *device, msg *waBinary.Node, chat types.JID, encs []waBinary.Node, ts int64) {
	id, _ := msg.Attrs["id"].(string)
	var m *waE2E.Message
	var err error
	for _, enc := range encs {
		typ, _ := enc.Attrs["type"].(string)
		ct, _ := enc.Content.([]byte)
		if typ != phone.EncTypePreKey && typ != phone.EncTypeMsg {
			continue
		}
		m, err = p.dev.DecryptMessage(sender.jid(), typ, ct)
		if err == nil {
			break
		}
	}
	if m == nil {
		if err == nil {
			err = errors.New("no decryptable enc")
		}
		p.srv.log.Info("phone could not decrypt, sending retry receipt", "phone", p.acct.user, "from", sender.jid().String(), "id", id, "err", err)
		p.sendRetryReceipt(sender, id, ts)
		return
	}
	sum := phone.Describe(m)
	rm := ReceivedMessage{
		ID: id, From: sender.jid().String(), Type: sum.Type, Text: sum.Text, TargetID: sum.TargetID,
		Timestamp: ts, Message: m, FromMe: sender.acct == p.acct,
	}
	if !sum.DeviceSentTo.IsEmpty() {
		rm.Chat = sum.DeviceSentTo.String()
	} else if sender.acct == p.acct {
		rm.Chat = chat.String()
	} else {
		rm.Chat = sender.acct.jid().String()
	}
	p.accept(sender, rm, sum.Media, waBinary.Attrs{"from": p.acct.jid()})
}

// accept stores a decrypted message (fetching its media) and sends the
// delivery receipt to the sending device of another account.
func (p *Phone) accept(sender *device, rm ReceivedMessage, media *phone.MediaRef, receipt waBinary.Attrs) {
	if media != nil {
		p.srv.media.remember(rm.ID, media.FileEncSHA256)
		rm.Media, rm.Data = p.srv.media.fetchForPhone(*media)
	}
	p.record(rm)
	p.mu.Lock()
	p.senders[rm.ID] = sender.jid()
	p.mu.Unlock()
	if sender.acct != p.acct {
		receipt["id"], receipt["t"] = rm.ID, nowUnix()
		p.srv.deliver(sender, 'r', rm.ID, waBinary.Node{Tag: "receipt", Attrs: receipt})
	}
}

func (p *Phone) sendRetryReceipt(sender *device, id string, ts int64) {
	p.mu.Lock()
	if len(p.retries) > maxSentRemembered {
		clear(p.retries)
	}
	p.retries[id]++
	count := p.retries[id]
	p.mu.Unlock()
	if count > 5 {
		return
	}
	p.srv.deliver(sender, 'r', id, waBinary.Node{Tag: "receipt", Attrs: waBinary.Attrs{
		"from": p.acct.jid(), "id": id, "t": nowUnix(), "type": "retry",
	}, Content: []waBinary.Node{
		{Tag: "retry", Attrs: waBinary.Attrs{"count": count, "id": id, "t": ts, "v": "1"}},
		{Tag: "registration", Content: be32(p.dev.RegistrationID())},
	}})
}

// HasReceipt reports whether the phone got a receipt of type typ
// ("delivery", "read", "hist_sync", "sender", …) for its message id.
func (p *Phone) HasReceipt(id, typ string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.receiptTypes[id][typ]
}

// receiveReceipt handles a companion's receipt for a message this phone sent.
func (p *Phone) receiveReceipt(from *device, n *waBinary.Node, ids []string) {
	typ, _ := n.Attrs["type"].(string)
	switch typ {
	case "retry":
		p.handleRetry(from, n)
		return
	case "server-error":
		p.srv.handleMediaRetry(from, n)
		return
	case "", "inactive":
		// "inactive" is a delivery receipt from a client that has not
		// sent presence available (notes §6.4).
		typ = "delivery"
	}
	p.mu.Lock()
	for _, id := range ids {
		if p.sent[id] == nil {
			continue // not (or no longer) ours: keep memory bounded
		}
		// Never downgrade read to delivery.
		if cur := p.receipts[id]; cur == "" || cur == "delivery" || typ != "delivery" {
			p.receipts[id] = typ
		}
		if p.receiptTypes[id] == nil {
			p.receiptTypes[id] = map[string]bool{}
		}
		p.receiptTypes[id][typ] = true
	}
	p.mu.Unlock()
}

// handleRetry re-encrypts a message the companion could not decrypt, on a
// fresh Signal session (notes §6.5).
func (p *Phone) handleRetry(d *device, n *waBinary.Node) {
	id, _ := n.Attrs["id"].(string)
	p.mu.Lock()
	sm := p.sent[id]
	p.mu.Unlock()
	if sm == nil {
		p.srv.log.Info("retry receipt for unknown message", "phone", p.acct.user, "id", id)
		return
	}
	retry := n.GetChildByTag("retry")
	count := retry.AttrGetter().OptionalInt("count")
	var b *bundle
	if keys, ok := n.GetOptionalChildByTag("keys"); ok {
		b = bundleFromRetry(n, keys)
	}
	if b == nil {
		var ok bool
		if b, ok = p.srv.bundleFor(d.jid()); !ok {
			return
		}
	}
	if err := p.processBundle(d.jid(), b); err != nil {
		p.srv.log.Info("retry: bad bundle", "err", err)
		return
	}
	if g := p.srv.lookupGroup(sm.to); g != nil {
		p.resendGroup(d, g, id, sm.m, count)
		return
	}
	p.sendTo(d, id, nowUnix(), sm.to, sm.m, count)
}

func bundleFromRetry(n *waBinary.Node, keys waBinary.Node) *bundle {
	reg, _ := n.GetChildByTag("registration").Content.([]byte)
	ident, _ := keys.GetChildByTag("identity").Content.([]byte)
	skey := keys.GetChildByTag("skey")
	sid, _ := skey.GetChildByTag("id").Content.([]byte)
	sval, _ := skey.GetChildByTag("value").Content.([]byte)
	ssig, _ := skey.GetChildByTag("signature").Content.([]byte)
	if len(reg) != 4 || len(ident) != 32 || len(sid) != 3 || len(sval) != 32 || len(ssig) != 64 {
		return nil
	}
	b := &bundle{regID: parseBE(reg), identity: [32]byte(ident), skeyID: parseBE(sid), skey: [32]byte(sval), skeySig: [64]byte(ssig)}
	key := keys.GetChildByTag("key")
	kid, _ := key.GetChildByTag("id").Content.([]byte)
	kval, _ := key.GetChildByTag("value").Content.([]byte)
	if len(kid) == 3 && len(kval) == 32 {
		b.pkID, b.pk = parseBE(kid), kval
	}
	return b
}

func (p *Phone) processBundle(peer types.JID, b *bundle) error {
	var pkID *uint32
	var pk *[32]byte
	if b.pk != nil {
		id, k := b.pkID, [32]byte(b.pk)
		pkID, pk = &id, &k
	}
	pb, err := phone.BundleFrom(b.regID, uint32(peer.Device), b.identity, b.skeyID, b.skey, b.skeySig, pkID, pk)
	if err != nil {
		return err
	}
	return p.dev.ProcessBundle(peer, pb)
}

// Send sends m from this phone to user to: to every companion of to, to
// to's phone (in-process, without Signal), and as a DeviceSentMessage to
// this account's own companions. It returns the message id.
func (p *Phone) Send(to types.JID, m *waE2E.Message) (string, error) {
	if to.Server == types.GroupServer {
		g := p.srv.lookupGroup(to)
		if g == nil {
			return "", fmt.Errorf("%w: group %s", ErrUnknownPhone, to)
		}
		return p.sendGroup(g, m)
	}
	to = to.ToNonAD()
	dst := p.srv.lookupAccount(to)
	if dst == nil {
		return "", fmt.Errorf("%w: %s", ErrUnknownPhone, to)
	}
	id := "3A" + randomID(9)
	ts := nowUnix()
	p.remember(id, dst.jid(), m)
	sum := phone.Describe(m)
	if sum.Media != nil {
		p.srv.media.remember(id, sum.Media.FileEncSHA256)
	}
	if dst != p.acct {
		dst.phone.record(ReceivedMessage{
			ID: id, From: p.acct.jid().String(), Chat: p.acct.jid().String(), Type: sum.Type, Text: sum.Text,
			TargetID: sum.TargetID, Timestamp: ts, Message: m,
		})
	}
	for _, d := range p.srv.companions(dst) {
		p.sendTo(d, id, ts, dst.jid(), m, 0)
	}
	if dst != p.acct {
		for _, d := range p.srv.companions(p.acct) {
			p.sendTo(d, id, ts, dst.jid(), m, 0)
		}
	}
	return id, nil
}

// remember keeps a sent message for retries, media retries and receipts;
// the oldest of more than maxSentRemembered are forgotten.
func (p *Phone) remember(id string, to types.JID, m *waE2E.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent[id] = &sentMessage{to: to, m: m}
	p.sentIDs = append(p.sentIDs, id)
	if len(p.sentIDs) > maxSentRemembered {
		old := p.sentIDs[0]
		delete(p.sent, old)
		delete(p.receipts, old)
		delete(p.receiptTypes, old)
		p.sentIDs = p.sentIDs[1:]
	}
}

// companions lists an account's linked, not removed companion devices.
func (s *Server) companions(a *account) []*device {
	s.mu.RLock()
	devs := make([]*device, 0, len(a.devices))
	for _, d := range a.devices {
		devs = append(devs, d)
	}
	s.mu.RUnlock()
	out := devs[:0]
	for _, d := range devs {
		d.mu.Lock()
		ok := d.linked && !d.removed
		d.mu.Unlock()
		if ok {
			out = append(out, d)
		}
	}
	return out
}

// sendTo encrypts m for one companion and queues the stanza.
func (p *Phone) sendTo(d *device, id string, ts int64, chat types.JID, m *waE2E.Message, retryCount int) {
	own := d.acct == p.acct
	payload := m
	if own && !directToOwnDevice(m) {
		payload = phone.WrapDeviceSent(chat, m)
	}
	encType, ct, err := p.encryptFor(d, payload)
	if err != nil {
		p.srv.log.Info("phone: encrypt failed", "device", d.jid().String(), "err", err)
		return
	}
	sum := phone.Describe(m)
	attrs := waBinary.Attrs{
		"from": p.acct.jid(), "id": id, "t": ts, "type": sum.StanzaType, "notify": p.acct.name,
	}
	if sum.Edit != "" {
		attrs["edit"] = sum.Edit
	}
	if own && chat != p.acct.jid() {
		attrs["recipient"] = chat
	}
	encAttrs := waBinary.Attrs{"v": "2", "type": encType}
	if sum.EncMediaType != "" {
		encAttrs["mediatype"] = sum.EncMediaType
	}
	if sum.HideFail {
		encAttrs["decrypt-fail"] = "hide"
	}
	if retryCount > 0 {
		encAttrs["count"] = retryCount
	}
	p.srv.stats.messagesRouted.Add(1)
	p.srv.deliver(d, 'm', id, waBinary.Node{Tag: "message", Attrs: attrs, Content: []waBinary.Node{
		{Tag: "enc", Attrs: encAttrs, Content: ct},
	}})
}

// encryptFor encrypts m for device d, starting a Signal session from a
// fresh prekey bundle when there is none.
func (p *Phone) encryptFor(d *device, m *waE2E.Message) (string, []byte, error) {
	peer := d.jid()
	if !p.dev.HasSession(peer) {
		b, ok := p.srv.bundleFor(peer)
		if !ok {
			return "", nil, fmt.Errorf("%w: no bundle for %s", ErrUnknownDevice, peer)
		}
		if err := p.processBundle(peer, b); err != nil {
			return "", nil, err
		}
	}
	return p.dev.EncryptMessage(peer, m)
}

// MarkRead sends a read receipt for a message this phone received.
func (p *Phone) MarkRead(id string) error {
	p.mu.Lock()
	from, ok := p.senders[id]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: message %s", ErrUnknownMessage, id)
	}
	d := p.srv.lookupDevice(from)
	if d == nil {
		return ErrUnknownDevice
	}
	p.srv.deliver(d, 'r', id, waBinary.Node{Tag: "receipt", Attrs: waBinary.Attrs{
		"from": p.acct.jid(), "id": id, "t": nowUnix(), "type": "read",
	}})
	return nil
}

// directToOwnDevice reports whether m goes to the account's own companions
// as is rather than wrapped in a DeviceSentMessage: history sync and app
// state key shares are addressed to the companion itself.
func directToOwnDevice(m *waE2E.Message) bool {
	switch m.GetProtocolMessage().GetType() {
	case waE2E.ProtocolMessage_HISTORY_SYNC_NOTIFICATION, waE2E.ProtocolMessage_APP_STATE_SYNC_KEY_SHARE:
		return true
	}
	return false
}
