package wasim

import (
	"fmt"
	"strconv"
	"sync"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/amarula/amarula/wasim/phone"
)

// group is a simulated group chat (PN addressing). Members and subject
// change through the admin calls of groups_admin.go; mu guards them.
type group struct {
	jid     types.JID
	creator *account
	created int64

	mu       sync.Mutex
	subject  string
	subjectT int64
	members  []*account
}

func (g *group) has(a *account) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.members {
		if m == a {
			return true
		}
	}
	return false
}

// list returns a snapshot of the members.
func (g *group) list() []*account {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*account(nil), g.members...)
}

// CreateGroup creates a group with subject whose members are creator and
// members. Any member's phone or companions can then send to it.
func (s *Server) CreateGroup(subject string, creator *Phone, members ...*Phone) (types.JID, error) {
	if creator == nil {
		return types.EmptyJID, fmt.Errorf("%w: creator required", ErrInvalidRequest)
	}
	g := &group{subject: subject, creator: creator.acct, created: nowUnix(), members: []*account{creator.acct}}
	g.subjectT = g.created
	for _, m := range members {
		if m == nil {
			return types.EmptyJID, fmt.Errorf("%w: unknown member", ErrUnknownPhone)
		}
		if !g.has(m.acct) {
			g.members = append(g.members, m.acct)
		}
	}
	s.mu.Lock()
	s.groupSeq++
	g.jid = types.NewJID("120363"+strconv.FormatUint(100000000000+s.groupSeq, 10), types.GroupServer)
	s.groups[g.jid.User] = g
	s.mu.Unlock()
	s.notifyCreated(g, creator.acct, g.list(), "")
	return g.jid, nil
}

func (s *Server) lookupGroup(jid types.JID) *group {
	if jid.Server != types.GroupServer {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.groups[jid.User]
}

// groupInfo answers <iq xmlns="w:g2" type="get"><query/></iq>.
func (s *Server) groupInfo(c *conn, iq *waBinary.Node) {
	to, _ := iq.Attrs["to"].(types.JID)
	g := s.lookupGroup(to)
	switch {
	case g == nil:
		_ = c.send(iqError(iq, 404, "item-not-found"))
		return
	case !g.has(c.dev.acct):
		_ = c.send(iqError(iq, 403, "forbidden"))
		return
	}
	_ = c.send(iqResult(iq, g.node()))
}

// routeGroupMessage fans a client's group message out: each member device
// gets its own pkmsg/msg (the sender key distribution) if the sender
// included one, plus the shared skmsg.
func (s *Server) routeGroupMessage(c *conn, n *waBinary.Node, g *group, id string) string {
	sender := c.dev
	if !g.has(sender.acct) {
		return "403"
	}
	perDevice := map[types.JID][]waBinary.Node{}
	if parts, ok := n.GetOptionalChildByTag("participants"); ok {
		for _, p := range parts.GetChildren() {
			if jid, ok := p.Attrs["jid"].(types.JID); ok && p.Tag == "to" {
				perDevice[jid] = encNodes(p)
			}
		}
	}
	var shared []waBinary.Node
	for _, e := range encNodes(*n) {
		if e.Attrs["type"] == "skmsg" {
			shared = append(shared, e)
		}
	}
	ts := nowUnix()
	for _, m := range g.list() {
		// Every member's phone, the sender's own included, gets it.
		m.phone.receiveGroup(sender, g, n, perDevice[m.jid()], shared, ts)
		for _, d := range s.companions(m) {
			if d == sender {
				continue
			}
			content := append(append([]waBinary.Node{}, perDevice[d.jid()]...), shared...)
			if len(content) == 0 {
				continue
			}
			attrs := waBinary.Attrs{
				"from": g.jid, "participant": sender.jid(), "id": id, "t": ts, "notify": sender.acct.name,
			}
			for _, k := range []string{"type", "edit"} {
				if v, ok := n.Attrs[k]; ok {
					attrs[k] = v
				}
			}
			s.stats.messagesRouted.Add(1)
			s.deliver(d, 'm', id, waBinary.Node{Tag: "message", Attrs: attrs, Content: content})
		}
	}
	return ""
}

// receiveGroup decrypts a member device's group message on this phone.
func (p *Phone) receiveGroup(sender *device, g *group, msg *waBinary.Node, direct, shared []waBinary.Node, ts int64) {
	id, _ := msg.Attrs["id"].(string)
	for _, enc := range direct {
		typ, _ := enc.Attrs["type"].(string)
		ct, _ := enc.Content.([]byte)
		m, err := p.dev.DecryptMessage(sender.jid(), typ, ct)
		if err != nil {
			p.srv.log.Info("phone: group key message does not decrypt", "phone", p.acct.user, "from", sender.jid().String(), "err", err)
			continue
		}
		if skdm := m.GetSenderKeyDistributionMessage(); skdm != nil {
			if err := p.dev.ProcessSenderKeyDistribution(g.jid, sender.jid(), skdm.GetAxolotlSenderKeyDistributionMessage()); err != nil {
				p.srv.log.Info("phone: bad sender key distribution", "err", err)
			} else {
				p.srv.noteSenderKey(p, g, sender.jid(), skdm.GetAxolotlSenderKeyDistributionMessage())
			}
		}
	}
	for _, enc := range shared {
		ct, _ := enc.Content.([]byte)
		pt, err := p.dev.GroupDecrypt(g.jid, sender.jid(), ct)
		if err != nil {
			p.srv.log.Info("phone: group message does not decrypt", "phone", p.acct.user, "from", sender.jid().String(), "err", err)
			continue
		}
		m, err := phone.DecodeMessage(pt)
		if err != nil {
			continue
		}
		sum := phone.Describe(m)
		rm := ReceivedMessage{
			ID: id, From: sender.jid().String(), Chat: g.jid.String(), Type: sum.Type, Text: sum.Text,
			TargetID: sum.TargetID, Timestamp: ts, Message: m, FromMe: sender.acct == p.acct,
		}
		p.accept(sender, rm, sum.Media, waBinary.Attrs{"from": g.jid, "participant": p.acct.jid()})
		return
	}
}

// sendGroup sends m from this phone to group g: one sender-key ciphertext
// for everyone, plus the sender key distribution to every companion of
// every member; member phones record it in-process.
func (p *Phone) sendGroup(g *group, m *waE2E.Message) (string, error) {
	if !g.has(p.acct) {
		return "", fmt.Errorf("%w: %s is not in %s", ErrInvalidRequest, p.acct.jid(), g.jid)
	}
	pt, err := phone.EncodeMessage(m)
	if err != nil {
		return "", err
	}
	skdm, skmsg, err := p.dev.GroupEncrypt(g.jid, pt)
	if err != nil {
		return "", err
	}
	dist := senderKeyDistribution(g, skdm)
	id := "3A" + randomID(9)
	ts := nowUnix()
	p.remember(id, g.jid, m)
	sum := phone.Describe(m)
	if sum.Media != nil {
		p.srv.media.remember(id, sum.Media.FileEncSHA256)
	}
	for _, mem := range g.list() {
		if mem != p.acct {
			mem.phone.record(ReceivedMessage{ID: id, From: p.acct.jid().String(), Chat: g.jid.String(),
				Type: sum.Type, Text: sum.Text, TargetID: sum.TargetID, Timestamp: ts, Message: m})
		}
		for _, d := range p.srv.companions(mem) {
			p.deliverGroup(d, g, id, ts, p.srv.senderKeyFor(p, g, d, dist), skmsg, sum, 0)
		}
	}
	return id, nil
}

func senderKeyDistribution(g *group, skdm []byte) *waE2E.Message {
	return &waE2E.Message{SenderKeyDistributionMessage: &waE2E.SenderKeyDistributionMessage{
		GroupID: proto.String(g.jid.String()), AxolotlSenderKeyDistributionMessage: skdm,
	}}
}

// deliverGroup queues one companion's copy of a phone's group message: its
// own pkmsg/msg with the sender key distribution (unless dist is nil: the
// device already has the key), then the skmsg.
func (p *Phone) deliverGroup(d *device, g *group, id string, ts int64, dist *waE2E.Message, skmsg []byte, sum phone.Summary, retryCount int) {
	var content []waBinary.Node
	if dist != nil {
		encType, ct, err := p.encryptFor(d, dist)
		if err != nil {
			p.srv.log.Info("phone: group key encrypt failed", "device", d.jid().String(), "err", err)
			return
		}
		encAttrs := waBinary.Attrs{"v": "2", "type": encType}
		if retryCount > 0 {
			encAttrs["count"] = retryCount
		}
		content = append(content, waBinary.Node{Tag: "enc", Attrs: encAttrs, Content: ct})
	}
	attrs := waBinary.Attrs{
		"from": g.jid, "participant": p.acct.jid(), "id": id, "t": ts,
		"type": sum.StanzaType, "notify": p.acct.name,
	}
	if sum.Edit != "" {
		attrs["edit"] = sum.Edit
	}
	skAttrs := waBinary.Attrs{"v": "2", "type": "skmsg"}
	if sum.EncMediaType != "" {
		skAttrs["mediatype"] = sum.EncMediaType
	}
	if retryCount > 0 {
		skAttrs["count"] = retryCount
	}
	content = append(content, waBinary.Node{Tag: "enc", Attrs: skAttrs, Content: skmsg})
	p.srv.stats.messagesRouted.Add(1)
	p.srv.deliver(d, 'm', id, waBinary.Node{Tag: "message", Attrs: attrs, Content: content})
}

// resendGroup re-sends a group message to one device after its retry
// receipt: the current sender key and a fresh skmsg.
func (p *Phone) resendGroup(d *device, g *group, id string, m *waE2E.Message, retryCount int) {
	p.srv.gx.retries.Add(1)
	pt, err := phone.EncodeMessage(m)
	if err != nil {
		return
	}
	skdm, skmsg, err := p.dev.GroupEncrypt(g.jid, pt)
	if err != nil {
		return
	}
	p.deliverGroup(d, g, id, nowUnix(), senderKeyDistribution(g, skdm), skmsg, phone.Describe(m), retryCount)
}
