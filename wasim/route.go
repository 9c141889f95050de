package wasim

import (
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// routeMessage fans a client's message out to every addressed device:
// simulated phones decrypt in-process, companions get a queued stanza.
// The sender gets the server ack after routing.
func (s *Server) routeMessage(c *conn, n *waBinary.Node) {
	sender := c.dev
	id, _ := n.Attrs["id"].(string)
	to, _ := n.Attrs["to"].(types.JID)
	if id == "" || to.IsEmpty() {
		_ = c.send(waBinary.Node{Tag: "ack", Attrs: waBinary.Attrs{"class": "message", "id": id, "error": "400"}})
		return
	}
	if to.Server == types.GroupServer {
		code := "404"
		if g := s.lookupGroup(to); g != nil {
			code = s.routeGroupMessage(c, n, g, id)
		}
		attrs := waBinary.Attrs{"class": "message", "id": id, "t": nowUnix(), "from": to}
		if code != "" {
			attrs["error"] = code
		}
		_ = c.send(waBinary.Node{Tag: "ack", Attrs: attrs})
		return
	}
	if to.Server != types.DefaultUserServer && to.Server != types.HiddenUserServer {
		// Groups, broadcasts and newsletters are not simulated: fail the
		// send at once (any non-zero ack error does) instead of routing
		// it as a DM.
		s.logUnknownOnce("message-to:" + to.Server)
		_ = c.send(waBinary.Node{Tag: "ack", Attrs: waBinary.Attrs{"class": "message", "id": id, "error": "501"}})
		return
	}
	ts := nowUnix()
	if parts, ok := n.GetOptionalChildByTag("participants"); ok {
		for _, p := range parts.GetChildren() {
			target, ok := p.Attrs["jid"].(types.JID)
			if p.Tag != "to" || !ok {
				continue
			}
			s.routeTo(sender, n, to, target, encNodes(p), ts)
		}
	} else if encs := encNodes(*n); len(encs) > 0 {
		// Direct stanzas: retry resends (device_fanout=false) and peer
		// messages to the own phone.
		s.routeTo(sender, n, to, to, encs, ts)
	}
	_ = c.send(waBinary.Node{Tag: "ack", Attrs: waBinary.Attrs{
		"class": "message", "id": id, "t": ts, "from": to,
	}})
}

func encNodes(n waBinary.Node) []waBinary.Node {
	var out []waBinary.Node
	for _, ch := range n.GetChildren() {
		if ch.Tag == "enc" {
			out = append(out, ch)
		}
	}
	return out
}

// routeTo delivers the enc nodes addressed to target (one device).
func (s *Server) routeTo(sender *device, msg *waBinary.Node, chat, target types.JID, encs []waBinary.Node, ts int64) {
	if len(encs) == 0 {
		return
	}
	acct := s.lookupAccount(target)
	if acct == nil {
		return
	}
	s.stats.messagesRouted.Add(1)
	if target.Device == 0 {
		acct.phone.receive(sender, msg, chat, encs, ts)
		return
	}
	d := s.lookupDevice(target)
	if d == nil || d == sender {
		return
	}
	id, _ := msg.Attrs["id"].(string)
	attrs := waBinary.Attrs{
		"from":   sender.jid(),
		"id":     id,
		"t":      ts,
		"notify": sender.acct.name,
	}
	for _, k := range []string{"type", "edit", "category"} {
		if v, ok := msg.Attrs[k]; ok {
			attrs[k] = v
		}
	}
	if d.acct == sender.acct && chat.User != sender.acct.user {
		attrs["recipient"] = chat.ToNonAD()
	}
	s.deliver(d, 'm', id, waBinary.Node{Tag: "message", Attrs: attrs, Content: encs})
}

// handleReceipt handles a receipt from a companion: it acks it, dequeues
// the receipted stanzas, and forwards it to the device it names.
func (s *Server) handleReceipt(c *conn, n *waBinary.Node) {
	d := c.dev
	id, _ := n.Attrs["id"].(string)
	to, _ := n.Attrs["to"].(types.JID)
	typ, _ := n.Attrs["type"].(string)
	ids := []string{id}
	for _, item := range children(n.GetChildByTag("list")) {
		if iid, ok := item.Attrs["id"].(string); ok {
			ids = append(ids, iid)
		}
	}
	ack := waBinary.Attrs{"class": "receipt", "id": id, "from": to}
	if typ != "" {
		ack["type"] = typ
	}
	_ = c.send(waBinary.Node{Tag: "ack", Attrs: ack})
	if typ != "retry" && typ != "server-error" {
		d.dequeue('m', ids...)
	}
	if id == "" || to.IsEmpty() {
		return
	}
	s.stats.receiptsRouted.Add(1)
	from := types.JID(d.jid())
	if to.Server == types.GroupServer {
		// Group receipts name the sender of the message as participant.
		part, ok := n.Attrs["participant"].(types.JID)
		if !ok {
			return
		}
		from, to = to, part
	}
	acct := s.lookupAccount(to)
	if acct == nil {
		return
	}
	if to.Device == 0 {
		acct.phone.receiveReceipt(d, n, ids)
		return
	}
	target := s.lookupDevice(to)
	if target == nil {
		return
	}
	attrs := waBinary.Attrs{"from": from, "id": id, "t": nowUnix()}
	if from != d.jid() {
		attrs["participant"] = d.jid()
	}
	for _, k := range []string{"type", "participant", "recipient", "category"} {
		if k == "participant" && from != d.jid() {
			continue
		}
		if v, ok := n.Attrs[k]; ok {
			attrs[k] = v
		}
	}
	var content []waBinary.Node
	for _, ch := range n.GetChildren() {
		content = append(content, ch)
	}
	out := waBinary.Node{Tag: "receipt", Attrs: attrs}
	if len(content) > 0 {
		out.Content = content
	}
	s.deliver(target, 'r', id, out)
}

// handleClientAck dequeues what the companion acknowledged without a
// receipt (undecryptable messages, receipts, notifications).
func (s *Server) handleClientAck(c *conn, n *waBinary.Node) {
	id, _ := n.Attrs["id"].(string)
	switch n.Attrs["class"] {
	case "message":
		c.dev.dequeue('m', id)
	case "receipt":
		c.dev.dequeue('r', id)
	case "notification":
		c.dev.dequeue('n', id)
	}
}
