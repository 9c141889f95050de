package wasim

// Group administration: participant changes and subject changes driven by
// the admin API (or the Go API), the w:gp2 notifications whatsmeow turns
// into events.JoinedGroup / events.GroupInfo, the "participating" query
// behind GetJoinedGroups, and sender-key bookkeeping of simulated phones.

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"go.mau.fi/libsignal/protocol"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/wasim/phone"
)

// ErrUnknownGroup is returned for a group JID the server does not know.
var ErrUnknownGroup = errors.New("wasim: unknown group")

// groupState is the server's group bookkeeping besides the groups
// themselves. The zero value is ready to use.
type groupState struct {
	mu sync.Mutex
	// once makes phones distribute their sender key to each device once
	// per group, like real clients (see SetSenderKeyOnce).
	once bool
	// given: (phone account, group, device) that already got the key.
	given map[skGiven]bool
	// seen: the sender key id a phone last got from a device in a group.
	seen map[skSeen]uint32
	// retries counts group messages phones re-sent after a retry receipt.
	retries atomic.Uint64
}

// GroupRetries is how many group messages simulated phones re-sent (with
// their sender key) because a companion could not decrypt them.
func (s *Server) GroupRetries() uint64 { return s.gx.retries.Load() }

type skGiven struct {
	from  *account
	group string
	to    types.JID
}

type skSeen struct {
	phone  *account
	group  string
	sender types.JID
}

// SetSenderKeyOnce makes simulated phones send their sender key
// distribution to a companion device only the first time they send to a
// group (and again on a retry receipt), as real clients do. Off (the
// default), every group message of a phone carries it, which hides a
// companion that lost the sender keys it had received.
func (s *Server) SetSenderKeyOnce(on bool) {
	s.gx.mu.Lock()
	defer s.gx.mu.Unlock()
	s.gx.once = on
}

// senderKeyFor returns dist if phone p must send its sender key of g to
// device d with this message, nil if d already has it.
func (s *Server) senderKeyFor(p *Phone, g *group, d *device, dist *waE2E.Message) *waE2E.Message {
	s.gx.mu.Lock()
	defer s.gx.mu.Unlock()
	if !s.gx.once {
		return dist
	}
	k := skGiven{from: p.acct, group: g.jid.User, to: d.jid()}
	if s.gx.given[k] {
		return nil
	}
	if s.gx.given == nil {
		s.gx.given = map[skGiven]bool{}
	}
	s.gx.given[k] = true
	return dist
}

// noteSenderKey records the id of a sender key a phone received from
// sender (a device) in g.
func (s *Server) noteSenderKey(p *Phone, g *group, sender types.JID, skdm []byte) {
	m, err := protocol.NewSenderKeyDistributionMessageFromBytes(skdm, phone.Serializer.SenderKeyDistributionMessage)
	if err != nil {
		return
	}
	s.gx.mu.Lock()
	defer s.gx.mu.Unlock()
	if s.gx.seen == nil {
		s.gx.seen = map[skSeen]uint32{}
	}
	s.gx.seen[skSeen{phone: p.acct, group: g.jid.User, sender: sender}] = m.ID()
}

// SenderKeyID returns the id of the sender key this phone last received
// from device sender in group, and whether it received one. A companion
// that keeps its sender key (across restarts, failovers) keeps its id.
func (p *Phone) SenderKeyID(group, sender types.JID) (uint32, bool) {
	s := p.srv
	s.gx.mu.Lock()
	defer s.gx.mu.Unlock()
	id, ok := s.gx.seen[skSeen{phone: p.acct, group: group.User, sender: sender}]
	return id, ok
}

// node is the <group> element of group info answers and create
// notifications (group.go: parseGroupNode).
func (g *group) node() waBinary.Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	parts := make([]waBinary.Node, 0, len(g.members))
	for _, m := range g.members {
		attrs := waBinary.Attrs{"jid": m.jid()}
		if m == g.creator {
			attrs["type"] = "superadmin"
		}
		parts = append(parts, waBinary.Node{Tag: "participant", Attrs: attrs})
	}
	return waBinary.Node{Tag: "group", Attrs: waBinary.Attrs{
		"id": g.jid.User, "creation": g.created, "subject": g.subject, "s_t": g.subjectT,
		"creator": g.creator.jid(), "size": len(g.members),
	}, Content: parts}
}

// notifyGroup sends one w:gp2 notification about g, made by by, to every
// companion of the accounts in to (notification.go: handleNotification).
func (s *Server) notifyGroup(g *group, by *account, to []*account, child waBinary.Node) {
	id := randomID(8)
	n := waBinary.Node{Tag: "notification", Attrs: waBinary.Attrs{
		"from": g.jid, "type": "w:gp2", "id": id, "t": nowUnix(),
		"participant": by.jid(), "notify": by.name,
	}, Content: []waBinary.Node{child}}
	for _, a := range to {
		for _, d := range s.companions(a) {
			s.deliver(d, 'n', id, n)
		}
	}
}

// notifyCreated tells the companions of to that they are in g now
// (whatsmeow: events.JoinedGroup). reason is "" for a new group.
func (s *Server) notifyCreated(g *group, by *account, to []*account, reason string) {
	attrs := waBinary.Attrs{"key": randomID(8)}
	if reason == "" {
		attrs["type"] = "new"
	} else {
		attrs["reason"] = reason
	}
	s.notifyGroup(g, by, to, waBinary.Node{Tag: "create", Attrs: attrs, Content: []waBinary.Node{g.node()}})
}

func participantList(tag string, accts []*account) waBinary.Node {
	parts := make([]waBinary.Node, 0, len(accts))
	for _, a := range accts {
		parts = append(parts, waBinary.Node{Tag: "participant", Attrs: waBinary.Attrs{"jid": a.jid()}})
	}
	return waBinary.Node{Tag: tag, Content: parts}
}

// groupFor resolves a group and the admin acting on it (the creator when
// by is nil).
func (s *Server) groupFor(gid types.JID, by *Phone) (*group, *account, error) {
	g := s.lookupGroup(gid)
	if g == nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrUnknownGroup, gid)
	}
	if by == nil {
		return g, g.creator, nil
	}
	if !g.has(by.acct) {
		return nil, nil, fmt.Errorf("%w: %s is not in %s", ErrInvalidRequest, by.acct.jid(), gid)
	}
	return g, by.acct, nil
}

// AddParticipants adds phones to group gid on behalf of by (nil: the
// creator). Members already in the group are skipped. The companions of
// the existing members get an <add> notification (events.GroupInfo.Join),
// those of the new members a <create> notification (events.JoinedGroup);
// whatsmeow then includes the new members' devices in its next group send.
func (s *Server) AddParticipants(gid types.JID, by *Phone, phones ...*Phone) error {
	g, actor, err := s.groupFor(gid, by)
	if err != nil {
		return err
	}
	accts, err := distinctAccounts(phones)
	if err != nil {
		return err
	}
	g.mu.Lock()
	old := append([]*account(nil), g.members...)
	var added []*account
	for _, a := range accts {
		if !containsAcct(g.members, a) {
			added = append(added, a)
		}
	}
	g.members = append(g.members, added...)
	g.mu.Unlock()
	if len(added) == 0 {
		return nil
	}
	s.notifyGroup(g, actor, old, participantList("add", added))
	s.notifyCreated(g, actor, added, "add")
	return nil
}

// distinctAccounts returns the accounts of phones without repeats; a nil
// phone (an unknown number) is an error.
func distinctAccounts(phones []*Phone) ([]*account, error) {
	var out []*account
	for _, p := range phones {
		if p == nil {
			return nil, fmt.Errorf("%w: unknown participant", ErrUnknownPhone)
		}
		if !containsAcct(out, p.acct) {
			out = append(out, p.acct)
		}
	}
	return out, nil
}

// RemoveParticipants removes phones from group gid on behalf of by (nil:
// the creator). Every member before the change, the removed ones included,
// gets a <remove> notification (events.GroupInfo.Leave). The creator
// cannot be removed.
func (s *Server) RemoveParticipants(gid types.JID, by *Phone, phones ...*Phone) error {
	g, actor, err := s.groupFor(gid, by)
	if err != nil {
		return err
	}
	accts, err := distinctAccounts(phones)
	if err != nil {
		return err
	}
	if containsAcct(accts, g.creator) {
		return fmt.Errorf("%w: the creator cannot be removed", ErrInvalidRequest)
	}
	g.mu.Lock()
	old := append([]*account(nil), g.members...)
	var removed, kept []*account
	for _, m := range g.members {
		if containsAcct(accts, m) {
			removed = append(removed, m)
		} else {
			kept = append(kept, m)
		}
	}
	g.members = kept
	g.mu.Unlock()
	if len(removed) == 0 {
		return nil
	}
	s.notifyGroup(g, actor, old, participantList("remove", removed))
	return nil
}

// SetGroupSubject renames group gid on behalf of by (nil: the creator);
// every member's companions get a <subject> notification
// (events.GroupInfo.Name).
func (s *Server) SetGroupSubject(gid types.JID, by *Phone, subject string) error {
	if subject == "" || len(subject) > 100 {
		return fmt.Errorf("%w: subject must be 1-100 bytes", ErrInvalidRequest)
	}
	g, actor, err := s.groupFor(gid, by)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.subject, g.subjectT = subject, nowUnix()
	t := g.subjectT
	g.mu.Unlock()
	s.notifyGroup(g, actor, g.list(), waBinary.Node{Tag: "subject", Attrs: waBinary.Attrs{
		"subject": subject, "s_t": t, "s_o": actor.jid(),
	}})
	return nil
}

// GroupInfo is a group as GET /admin/groups/{jid} shows it.
type GroupInfo struct {
	JID          string   `json:"jid"`
	Subject      string   `json:"subject"`
	Creator      string   `json:"creator"`
	Participants []string `json:"participants"`
}

// Group returns group gid's current subject and members.
func (s *Server) Group(gid types.JID) (GroupInfo, error) {
	g := s.lookupGroup(gid)
	if g == nil {
		return GroupInfo{}, fmt.Errorf("%w: %s", ErrUnknownGroup, gid)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	in := GroupInfo{JID: g.jid.String(), Subject: g.subject, Creator: g.creator.jid().String()}
	for _, m := range g.members {
		in.Participants = append(in.Participants, m.jid().String())
	}
	return in, nil
}

func containsAcct(list []*account, a *account) bool {
	for _, m := range list {
		if m == a {
			return true
		}
	}
	return false
}

// groupsParticipating answers <iq xmlns="w:g2" type="get" to="g.us">
// <participating/></iq> (group.go: GetJoinedGroups) with every group the
// requesting account is in.
func (s *Server) groupsParticipating(c *conn, iq *waBinary.Node) {
	s.mu.RLock()
	all := make([]*group, 0, len(s.groups))
	for _, g := range s.groups {
		all = append(all, g)
	}
	s.mu.RUnlock()
	var nodes []waBinary.Node
	for _, g := range all {
		if g.has(c.dev.acct) {
			nodes = append(nodes, g.node())
		}
	}
	_ = c.send(iqResult(iq, waBinary.Node{Tag: "groups", Content: nodes}))
}

// groupAdminRoutes registers the group admin endpoints (docs/wasim.md).
func (s *Server) groupAdminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/groups/{jid}", s.adminGetGroup)
	mux.HandleFunc("POST /admin/groups/{jid}/participants", s.adminGroupParticipants)
	mux.HandleFunc("POST /admin/groups/{jid}/subject", s.adminGroupSubject)
}

func groupFromPath(r *http.Request) (types.JID, error) {
	raw := r.PathValue("jid")
	if !strings.Contains(raw, "@") {
		raw += "@" + types.GroupServer
	}
	jid, err := types.ParseJID(raw)
	if err != nil || jid.Server != types.GroupServer || jid.User == "" {
		return types.EmptyJID, fmt.Errorf("%w: bad group jid %q", ErrInvalidRequest, r.PathValue("jid"))
	}
	return jid, nil
}

func (s *Server) writeGroupErr(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrUnknownGroup) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	}
	writeErr(w, err)
}

func (s *Server) adminGetGroup(w http.ResponseWriter, r *http.Request) {
	gid, err := groupFromPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	in, err := s.Group(gid)
	if err != nil {
		s.writeGroupErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

// actor resolves the optional "by" of a group admin request (nil: the
// creator).
func (s *Server) actor(number string) (*Phone, error) {
	if number == "" {
		return nil, nil
	}
	if p := s.Phone(number); p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownPhone, number)
}

// phones resolves phone numbers; the first unknown one is an error.
func (s *Server) phones(numbers []string) ([]*Phone, error) {
	out := make([]*Phone, 0, len(numbers))
	for _, n := range numbers {
		p := s.Phone(strings.TrimSuffix(n, "@"+types.DefaultUserServer))
		if p == nil {
			return nil, fmt.Errorf("%w: %s", ErrUnknownPhone, n)
		}
		out = append(out, p)
	}
	return out, nil
}

func (s *Server) adminGroupParticipants(w http.ResponseWriter, r *http.Request) {
	gid, err := groupFromPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	var req struct {
		By     string   `json:"by"`
		Add    []string `json:"add"`
		Remove []string `json:"remove"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if len(req.Add) == 0 && len(req.Remove) == 0 {
		writeErr(w, fmt.Errorf("%w: add or remove required", ErrInvalidRequest))
		return
	}
	by, err := s.actor(req.By)
	if err != nil {
		writeErr(w, err)
		return
	}
	add, err := s.phones(req.Add)
	if err == nil {
		var remove []*Phone
		if remove, err = s.phones(req.Remove); err == nil {
			if err = s.AddParticipants(gid, by, add...); err == nil {
				err = s.RemoveParticipants(gid, by, remove...)
			}
		}
	}
	if err != nil {
		s.writeGroupErr(w, err)
		return
	}
	in, _ := s.Group(gid)
	writeJSON(w, http.StatusOK, in)
}

func (s *Server) adminGroupSubject(w http.ResponseWriter, r *http.Request) {
	gid, err := groupFromPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	var req struct {
		By      string `json:"by"`
		Subject string `json:"subject"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	by, err := s.actor(req.By)
	if err != nil {
		writeErr(w, err)
		return
	}
	if err := s.SetGroupSubject(gid, by, req.Subject); err != nil {
		s.writeGroupErr(w, err)
		return
	}
	in, _ := s.Group(gid)
	writeJSON(w, http.StatusOK, in)
}
