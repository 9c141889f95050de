package wasim

// Group administration from a client (<iq xmlns="w:g2" type="set">):
// whatsmeow's CreateGroup, UpdateGroupParticipants (add, remove) and
// SetGroupName. The client's account acts as its phone would through the
// admin API; only the group's creator may change it.

import (
	"errors"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// groupSet answers a w:g2 set iq; ok is false for requests it does not
// simulate (the caller answers 501).
func (s *Server) groupSet(c *conn, iq *waBinary.Node, first waBinary.Node) (ok bool) {
	me := c.dev.acct.phone
	to, _ := iq.Attrs["to"].(types.JID)
	if first.Tag == "create" && to == types.GroupServerJID {
		subject, _ := first.Attrs["subject"].(string)
		var members []*Phone
		for _, p := range first.GetChildrenByTag("participant") {
			if jid, ok := p.Attrs["jid"].(types.JID); ok {
				if a := s.lookupAccount(jid); a != nil {
					members = append(members, a.phone)
				}
			}
		}
		gid, err := s.CreateGroup(subject, me, members...)
		if err != nil {
			_ = c.send(iqError(iq, 400, "bad-request"))
			return true
		}
		_ = c.send(iqResult(iq, s.lookupGroup(gid).node()))
		return true
	}
	g := s.lookupGroup(to)
	switch {
	case first.Tag != "add" && first.Tag != "remove" && first.Tag != "subject":
		return false
	case g == nil:
		_ = c.send(iqError(iq, 404, "item-not-found"))
		return true
	case g.creator != c.dev.acct:
		_ = c.send(iqError(iq, 403, "forbidden"))
		return true
	}
	if first.Tag == "subject" {
		b, _ := first.Content.([]byte)
		if err := s.SetGroupSubject(to, me, string(b)); err != nil {
			_ = c.send(iqError(iq, 406, "not-acceptable"))
			return true
		}
		_ = c.send(iqResult(iq))
		return true
	}
	var phones []*Phone
	var answer []waBinary.Node
	for _, p := range first.GetChildrenByTag("participant") {
		jid, _ := p.Attrs["jid"].(types.JID)
		attrs := waBinary.Attrs{"jid": jid}
		if a := s.lookupAccount(jid); a != nil {
			phones = append(phones, a.phone)
		} else {
			attrs["error"] = "404"
		}
		answer = append(answer, waBinary.Node{Tag: "participant", Attrs: attrs})
	}
	var err error
	if first.Tag == "add" {
		err = s.AddParticipants(to, me, phones...)
	} else {
		err = s.RemoveParticipants(to, me, phones...)
	}
	if errors.Is(err, ErrInvalidRequest) {
		_ = c.send(iqError(iq, 406, "not-acceptable"))
		return true
	}
	_ = c.send(iqResult(iq, waBinary.Node{Tag: first.Tag, Content: answer}))
	return true
}
