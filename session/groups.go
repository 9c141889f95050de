package session

// Groups: metadata queries (GetJoinedGroups / GetGroupInfo) cached in the
// profile's "groups" namespace, and group notifications (events.JoinedGroup,
// events.GroupInfo) stored as group.* events together with the cache update,
// before whatsmeow acknowledges them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/amarula/amarula/storage"
)

// NSGroups is the storage namespace of the group cache: key group JID,
// value JSON Group.
const NSGroups = "groups"

// Group event types (appended to the profile's event log).
const (
	// EventGroupJoined: the account was put in a group (created with it,
	// or added). Data: the Group plus "reason", "type" and "by".
	EventGroupJoined = "group.joined"
	// EventGroupParticipantsChanged: members joined, left, were promoted
	// or demoted. Data: {jid, join, leave, promote, demote, by, timestamp}.
	EventGroupParticipantsChanged = "group.participants_changed"
	// EventGroupUpdated: subject, description or settings changed. Data:
	// {jid, subject?, topic?, announce?, locked?, ephemeral?, by, timestamp}.
	EventGroupUpdated = "group.updated"
)

// Group errors. ErrGroupNotFound and ErrNotInGroup are whatsmeow's own
// sentinels, so errors from a send to such a group match them too.
var (
	// ErrGroupNotFound: WhatsApp does not know the group (404).
	ErrGroupNotFound = whatsmeow.ErrGroupNotFound
	// ErrNotInGroup: the account is not a participant of the group (403).
	ErrNotInGroup = whatsmeow.ErrNotInGroup
)

// Group is a group chat as the API shows it.
type Group struct {
	JID          string        `json:"jid"`
	Subject      string        `json:"subject"`
	Topic        string        `json:"topic,omitempty"`
	Owner        string        `json:"owner,omitempty"`
	Created      int64         `json:"created,omitempty"` // Unix seconds
	Participants []Participant `json:"participants"`
	// Updated is when the cached entry was last written (Unix seconds).
	Updated int64 `json:"updated"`
}

// Participant is one member of a Group.
type Participant struct {
	JID        string `json:"jid"`
	Admin      bool   `json:"admin"`
	SuperAdmin bool   `json:"super_admin,omitempty"`
}

var groupUserRE = regexp.MustCompile(`^[0-9]{1,24}(-[0-9]{1,16})?$`)

// ParseGroupJID parses a group JID ("120363…@g.us"; the "@g.us" may be
// left out). Anything else wraps ErrInvalidRequest.
func ParseGroupJID(s string) (types.JID, error) {
	user, server, found := cut(s, '@')
	if !found {
		server = types.GroupServer
	}
	if server != types.GroupServer || !groupUserRE.MatchString(user) {
		return types.EmptyJID, fmt.Errorf("%w: %q is not a group JID (digits@g.us)", ErrInvalidRequest, s)
	}
	return types.NewJID(user, types.GroupServer), nil
}

func cut(s string, sep byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// groupFrom converts whatsmeow's group info (participants in phone-number
// form when WhatsApp sent it).
func groupFrom(in *types.GroupInfo, now time.Time) Group {
	g := Group{
		JID: in.JID.String(), Subject: in.Name, Topic: in.Topic,
		Participants: make([]Participant, 0, len(in.Participants)), Updated: now.Unix(),
	}
	if !in.OwnerJID.IsEmpty() {
		g.Owner = preferPN(in.OwnerJID, in.OwnerPN).String()
	}
	if !in.GroupCreated.IsZero() {
		g.Created = in.GroupCreated.Unix()
	}
	for _, p := range in.Participants {
		g.Participants = append(g.Participants, Participant{
			JID: preferPN(p.JID, p.PhoneNumber).String(), Admin: p.IsAdmin, SuperAdmin: p.IsSuperAdmin,
		})
	}
	return g
}

// preferPN is jid without device, or its phone number when jid is a LID
// and the number is known (msgstore.Normalize does the same for senders).
func preferPN(jid, pn types.JID) types.JID {
	if jid.Server == types.HiddenUserServer && pn.Server == types.DefaultUserServer {
		return pn.ToNonAD()
	}
	return jid.ToNonAD()
}

func jidStrings(jids []types.JID) []string {
	out := make([]string, 0, len(jids))
	for _, j := range jids {
		out = append(out, j.ToNonAD().String())
	}
	return out
}

// ListGroups returns the groups the account is in: asked from WhatsApp
// while connected (and the cache refreshed: groups no longer listed are
// dropped), otherwise read from the cache. Sorted by JID.
func (s *Session) ListGroups(ctx context.Context) ([]Group, error) {
	cli := s.client()
	if cli == nil || !cli.IsLoggedIn() || !s.running() {
		return CachedGroups(ctx, s.cfg.Store, s.cfg.Profile)
	}
	infos, err := cli.GetJoinedGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("session %s: list groups: %w", s.cfg.Profile, err)
	}
	now := time.Now()
	out := make([]Group, 0, len(infos))
	for _, in := range infos {
		out = append(out, groupFrom(in, now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID < out[j].JID })
	cached, err := CachedGroups(ctx, s.st, s.cfg.Profile)
	if err != nil {
		s.log.Warn("group cache unreadable", "err", err)
	}
	listed := map[string]bool{}
	_, err = s.st.Txn(ctx, s.cfg.Profile, s.cfg.Token, func(tx storage.Tx) error {
		for _, g := range out {
			listed[g.JID] = true
			b, err := json.Marshal(g)
			if err != nil {
				return err
			}
			tx.Put(NSGroups, g.JID, b)
		}
		for _, g := range cached {
			if !listed[g.JID] {
				tx.Delete(NSGroups, g.JID)
			}
		}
		return nil
	})
	if err != nil {
		// The answer is still right; only the cache is behind.
		s.log.Warn("group cache not updated", "err", err)
	}
	return out, nil
}

// GroupInfo returns one group the account is in: asked from WhatsApp while
// connected (and cached), otherwise from the cache. A group WhatsApp does
// not know answers ErrGroupNotFound, one the account is not in
// ErrNotInGroup (and its cache entry is dropped).
func (s *Session) GroupInfo(ctx context.Context, jid types.JID) (Group, error) {
	cli := s.client()
	if cli == nil || !cli.IsLoggedIn() || !s.running() {
		return CachedGroup(ctx, s.cfg.Store, s.cfg.Profile, jid)
	}
	in, err := cli.GetGroupInfo(ctx, jid)
	if err != nil {
		if errors.Is(err, ErrNotInGroup) || errors.Is(err, ErrGroupNotFound) {
			if derr := s.st.Delete(ctx, s.cfg.Profile, s.cfg.Token, NSGroups, jid.String()); derr != nil {
				s.log.Warn("group cache not updated", "group", jid.String(), "err", derr)
			}
		}
		return Group{}, fmt.Errorf("session %s: group %s: %w", s.cfg.Profile, jid, err)
	}
	g := groupFrom(in, time.Now())
	if b, err := json.Marshal(g); err == nil {
		if err := s.st.Put(ctx, s.cfg.Profile, s.cfg.Token, NSGroups, g.JID, b); err != nil {
			s.log.Warn("group cache not updated", "group", g.JID, "err", err)
		}
	}
	return g, nil
}

// CachedGroups reads every cached group of profile (sorted by JID) from
// storage; any node can answer it.
func CachedGroups(ctx context.Context, kv storage.KV, profile string) ([]Group, error) {
	kvs, err := kv.Scan(ctx, profile, NSGroups, "")
	if err != nil {
		return nil, fmt.Errorf("read group cache of %s: %w", profile, err)
	}
	out := make([]Group, 0, len(kvs))
	for _, e := range kvs {
		var g Group
		if json.Unmarshal(e.Value, &g) == nil && g.JID != "" {
			out = append(out, g)
		}
	}
	return out, nil
}

// CachedGroup reads one cached group; a group not in the cache answers
// ErrNotInGroup (the account is not known to be in it).
func CachedGroup(ctx context.Context, kv storage.KV, profile string, jid types.JID) (Group, error) {
	b, err := kv.Get(ctx, profile, NSGroups, jid.String())
	if errors.Is(err, storage.ErrNotFound) {
		return Group{}, fmt.Errorf("group %s of %s is not cached: %w", jid, profile, ErrNotInGroup)
	}
	if err != nil {
		return Group{}, fmt.Errorf("read group cache of %s: %w", profile, err)
	}
	var g Group
	if err := json.Unmarshal(b, &g); err != nil || g.JID == "" {
		return Group{}, fmt.Errorf("group %s of %s is not cached: %w", jid, profile, ErrNotInGroup)
	}
	return g, nil
}

// onGroupEvent stores a group notification: the group.* event and the
// cache change in one transaction. false (a failed write) leaves the
// notification unacknowledged, so WhatsApp delivers it again.
func (s *Session) onGroupEvent(evt any) bool {
	if !s.enter() {
		return false
	}
	defer s.inflight.Done()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StoreTimeout)
	defer cancel()
	var err error
	switch e := evt.(type) {
	case *events.JoinedGroup:
		err = s.storeJoined(ctx, e)
	case *events.GroupInfo:
		err = s.storeGroupChange(ctx, e)
	}
	if err != nil {
		s.failed("group notification", "", err)
		return false
	}
	return true
}

func (s *Session) storeJoined(ctx context.Context, e *events.JoinedGroup) error {
	g := groupFrom(&e.GroupInfo, time.Now())
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	data := map[string]any{
		"jid": g.JID, "subject": g.Subject, "owner": g.Owner, "created": g.Created,
		"participants": g.Participants, "reason": e.Reason, "type": e.Type,
	}
	if e.Sender != nil {
		data["by"] = preferPN(*e.Sender, derefJID(e.SenderPN)).String()
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	_, err = s.st.Txn(ctx, s.cfg.Profile, s.cfg.Token, func(tx storage.Tx) error {
		tx.Put(NSGroups, g.JID, b)
		tx.Append(EventGroupJoined, raw)
		return nil
	})
	return err
}

func derefJID(j *types.JID) types.JID {
	if j == nil {
		return types.EmptyJID
	}
	return *j
}

// storeGroupChange appends group.participants_changed and/or
// group.updated and applies the change to the cached group (a group the
// account left is dropped from the cache).
func (s *Session) storeGroupChange(ctx context.Context, e *events.GroupInfo) error {
	jid := e.JID.String()
	common := func() map[string]any {
		d := map[string]any{"jid": jid, "timestamp": e.Timestamp.Unix()}
		if e.Sender != nil {
			d["by"] = preferPN(*e.Sender, derefJID(e.SenderPN)).String()
		}
		return d
	}
	var evs []struct {
		typ  string
		data map[string]any
	}
	if len(e.Join)+len(e.Leave)+len(e.Promote)+len(e.Demote) > 0 {
		d := common()
		d["join"], d["leave"] = jidStrings(e.Join), jidStrings(e.Leave)
		d["promote"], d["demote"] = jidStrings(e.Promote), jidStrings(e.Demote)
		evs = append(evs, struct {
			typ  string
			data map[string]any
		}{EventGroupParticipantsChanged, d})
	}
	upd := common()
	if e.Name != nil {
		upd["subject"] = e.Name.Name
	}
	if e.Topic != nil {
		upd["topic"] = e.Topic.Topic
	}
	if e.Announce != nil {
		upd["announce"] = e.Announce.IsAnnounce
	}
	if e.Locked != nil {
		upd["locked"] = e.Locked.IsLocked
	}
	if e.Ephemeral != nil {
		upd["ephemeral"] = e.Ephemeral.DisappearingTimer
	}
	if e.Delete != nil {
		upd["deleted"] = true
	}
	if len(upd) > len(common()) {
		evs = append(evs, struct {
			typ  string
			data map[string]any
		}{EventGroupUpdated, upd})
	}
	if len(evs) == 0 {
		return nil // nothing the API reports (invite links, …)
	}
	own, ownLID := s.identity()
	left := e.Delete != nil
	for _, l := range e.Leave {
		if l.ToNonAD() == own || (!ownLID.IsEmpty() && l.ToNonAD() == ownLID) {
			left = true
		}
	}
	_, err := s.st.Txn(ctx, s.cfg.Profile, s.cfg.Token, func(tx storage.Tx) error {
		for _, ev := range evs {
			raw, err := json.Marshal(ev.data)
			if err != nil {
				return err
			}
			tx.Append(ev.typ, raw)
		}
		if left {
			tx.Delete(NSGroups, jid)
			return nil
		}
		b, err := tx.Get(ctx, NSGroups, jid)
		if err != nil {
			return nil // not cached: the next query fills it
		}
		var g Group
		if json.Unmarshal(b, &g) != nil {
			tx.Delete(NSGroups, jid)
			return nil
		}
		applyChange(&g, e)
		g.Updated = time.Now().Unix()
		if b, err = json.Marshal(g); err != nil {
			return err
		}
		tx.Put(NSGroups, jid, b)
		return nil
	})
	return err
}

// applyChange applies a group notification to a cached group.
func applyChange(g *Group, e *events.GroupInfo) {
	drop := map[string]bool{}
	for _, j := range jidStrings(e.Leave) {
		drop[j] = true
	}
	kept := g.Participants[:0]
	for _, p := range g.Participants {
		if !drop[p.JID] {
			kept = append(kept, p)
		}
	}
	g.Participants = kept
	have := map[string]int{}
	for i, p := range g.Participants {
		have[p.JID] = i
	}
	for _, j := range jidStrings(e.Join) {
		if _, ok := have[j]; !ok {
			have[j] = len(g.Participants)
			g.Participants = append(g.Participants, Participant{JID: j})
		}
	}
	for _, j := range jidStrings(e.Promote) {
		if i, ok := have[j]; ok {
			g.Participants[i].Admin = true
		}
	}
	for _, j := range jidStrings(e.Demote) {
		if i, ok := have[j]; ok {
			g.Participants[i].Admin, g.Participants[i].SuperAdmin = false, false
		}
	}
	if e.Name != nil {
		g.Subject = e.Name.Name
	}
	if e.Topic != nil {
		g.Topic = e.Topic.Topic
	}
}

// identity returns the own PN and LID user JIDs.
func (s *Session) identity() (types.JID, types.JID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jid, s.lid
}

// groupSendError explains a refused group send: whatsmeow's group cache
// may still list a group the account was removed from, and then only the
// server's ack says no ("server returned error 403"). Asking for the
// group's info tells whether the account is (still) in it; the answer's
// ErrNotInGroup or ErrGroupNotFound is returned with the original error.
func (s *Session) groupSendError(ctx context.Context, chat types.JID, err error) error {
	if chat.Server != types.GroupServer || !errors.Is(err, whatsmeow.ErrServerReturnedError) {
		return err
	}
	if _, gerr := s.GroupInfo(ctx, chat); errors.Is(gerr, ErrNotInGroup) || errors.Is(gerr, ErrGroupNotFound) {
		return fmt.Errorf("%w (%w)", gerr, err)
	}
	return err
}
