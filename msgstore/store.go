package msgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/amarula/amarula/storage"
)

// Namespaces of the storage seam that the message store owns. They are
// wiped with every other namespace of a profile by storage.KV.Clear.
const (
	// NSMessages holds every message by id (JSON of Message).
	NSMessages = "messages"
	// NSChatIndex orders the messages of one chat: key
	// "<chat>|<timestamp, 20 digits>|<seq, 20 digits>", value the id. The
	// sequence (per profile, in store order) breaks ties between messages
	// of the same second, which WhatsApp timestamps cannot order.
	NSChatIndex = "msg_chat"
	// NSAllIndex orders every message of the profile: key
	// "<timestamp, 20 digits>|<seq, 20 digits>", value the id.
	NSAllIndex = "msg_all"
	// NSMeta holds the store's own counters (key "seq").
	NSMeta = "msg_meta"
	// NSBuckets lists, per chat (key: the chat; "~all" for the profile-wide
	// index), the non-empty time buckets of its index (JSON array of
	// bucket numbers, ascending), so List scans only the buckets a page
	// needs instead of the whole chat.
	NSBuckets = "msg_buckets"
	// NSPending keeps edits, revokes and reactions that arrived before
	// their original: key the target id, value a JSON array of Message.
	NSPending = "msg_pending"
	// NSEarlyAcks keeps the best receipt status of a message the store
	// does not know yet (a receipt can overtake the store write of a send):
	// key the message id, value the status. Applied when it is stored.
	NSEarlyAcks = "msg_early_ack"
	// NSIdempotency maps a client's Idempotency-Key to the id of the
	// message it sent (see Reserve).
	NSIdempotency = "msg_idem"
)

// Errors of the message store. Check them with errors.Is.
var (
	// ErrNotFound is returned by Get for an unknown message id.
	ErrNotFound = errors.New("msgstore: message not found")
	// ErrInvalid is returned for a message that cannot be stored (no id,
	// id too long, invalid chat) or a malformed list cursor.
	ErrInvalid = errors.New("msgstore: invalid message")
)

// MaxIDLen bounds a message id. WhatsApp ids are 16–32 characters; the
// bound only keeps garbage out of index keys.
const MaxIDLen = 128

// Backend is what the message store needs from the storage seam.
// storage.Store satisfies it.
type Backend interface {
	Get(ctx context.Context, profile, ns, key string) ([]byte, error)
	GetMany(ctx context.Context, profile, ns string, keys []string) (map[string][]byte, error)
	Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error)
	Txn(ctx context.Context, profile string, token storage.Token, fn func(tx storage.Tx) error) ([]string, error)
}

// Origin tells Put where a message comes from, which decides the event it
// appends.
type Origin int

const (
	// Received is a message that arrived from WhatsApp (including the
	// user's own messages sent from another device). A plain message
	// appends message.received; an edit, revoke or reaction appends
	// message.edited, message.revoked or message.reaction.
	Received Origin = iota
	// Sent is a message this gateway sent; it appends message.sent
	// whatever its type.
	Sent
	// History is a message from a history sync: stored (deduplicated) but
	// announced by one history.synced summary, not one event each.
	History
)

// Result reports what Put did.
type Result struct {
	// Message is the message as stored. For an original, it already has
	// every pending edit, revoke and reaction applied.
	Message Message
	// Target is, for an edit, revoke or reaction, the original after the
	// change; nil while the original is not stored yet (Pending).
	Target *Message
	// Duplicate is true when a message with this id was already stored:
	// nothing was written and no event appended.
	Duplicate bool
	// Pending is true for an edit, revoke or reaction whose original is
	// not stored yet; it is kept and applied when the original arrives.
	Pending bool
	// Event is the type of the appended event ("" when none).
	Event string
	// Cursor is the event log cursor of the appended event.
	Cursor string
}

// EventData is the JSON payload of message.* events: the message, plus
// for an edit, revoke or reaction the original after the change, both
// without the media download descriptor (Message.Public).
type EventData struct {
	Message
	Target *Message `json:"target,omitempty"`
}

// AckData is the JSON payload of a message.ack event.
type AckData struct {
	ID        string `json:"id"`
	Chat      string `json:"chat"`
	From      string `json:"from,omitempty"` // who delivered/read it
	Status    string `json:"status"`         // delivered, read, played
	Timestamp int64  `json:"timestamp"`
}

// Statuses of own messages, in the order they can only move forward.
const (
	StatusPending   = "pending"
	StatusSent      = "sent"
	StatusDelivered = "delivered"
	StatusRead      = "read"
	StatusPlayed    = "played"
)

var statusRank = map[string]int{"": 0, StatusPending: 1, StatusSent: 2, StatusDelivered: 3, StatusRead: 4, StatusPlayed: 5}

// Store is the message store over a storage backend. It is safe for
// concurrent use; writes of one profile are serialised inside the process,
// across Store instances (the lease guarantees one writing process per
// profile), because
// storage.Tx gives atomic commit but not isolation and applying an edit or
// reaction is a read-modify-write of the original.
type Store struct {
	b     Backend
	hooks []Hook
}

// profileLocks serialises the writes of one profile across every Store of
// the process: the session's, the registry's (API reads, deletes) and the
// media worker's UpdateMessage may be different instances over the same
// backend.
var profileLocks sync.Map // profile -> *sync.Mutex

// Hook runs inside the transaction that stores a new message — not for a
// duplicate, and not for an edit, revoke or reaction — so that work which
// must not be lost is recorded with the message (the media download job:
// media.Enqueue). m.Profile is set. An error aborts the transaction.
type Hook func(tx storage.Tx, m Message, origin Origin) error

// New returns a message store over b; hooks run for every new message.
func New(b Backend, hooks ...Hook) *Store { return &Store{b: b, hooks: hooks} }

func (s *Store) lock(profile string) func() {
	v, _ := profileLocks.LoadOrStore(profile, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// Put stores m (deduplicated on m.ID), applies or keeps it when it is an
// edit, revoke or reaction, and appends the matching event, all in one
// fenced transaction. A message whose id is already stored is a no-op that
// reports Duplicate. m.Profile is set to profile.
func (s *Store) Put(ctx context.Context, profile string, token storage.Token, m Message, origin Origin) (Result, error) {
	return s.put(ctx, profile, token, m, origin, "")
}

// PutSent is Put with origin Sent that also marks the idempotency key (if
// not empty) as done, in the same transaction.
func (s *Store) PutSent(ctx context.Context, profile string, token storage.Token, m Message, idemKey string) (Result, error) {
	return s.put(ctx, profile, token, m, Sent, idemKey)
}

func (s *Store) put(ctx context.Context, profile string, token storage.Token, m Message, origin Origin, idemKey string) (Result, error) {
	if err := validate(m); err != nil {
		return Result{}, err
	}
	m.Profile = profile
	unlock := s.lock(profile)
	defer unlock()
	var res Result
	cursors, err := s.b.Txn(ctx, profile, token, func(tx storage.Tx) error {
		var err error
		if res, err = apply(ctx, tx, m, origin, s.hooks); err != nil {
			return err
		}
		if idemKey != "" {
			return putTx(tx, NSIdempotency, idemKey, Reservation{ID: m.ID, Done: true})
		}
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("msgstore: put %s/%s: %w", profile, m.ID, err)
	}
	if len(cursors) > 0 {
		res.Cursor = cursors[0]
	}
	return res, nil
}

// BatchSize is how many messages PutBatch commits per transaction.
const BatchSize = 500

// PutBatch stores msgs as Put would (deduplicated, ops applied or kept),
// BatchSize per transaction, and appends one summary event of type event
// (unless "") with the data summary returns, in the last transaction. It
// reports how many were new and how many duplicates. On an error, earlier
// batches stay stored; retrying is safe (dedup).
func (s *Store) PutBatch(ctx context.Context, profile string, token storage.Token, msgs []Message, origin Origin,
	event string, summary func(stored, duplicates int) ([]byte, error)) (stored, duplicates int, err error) {
	valid := make([]Message, 0, len(msgs))
	for _, m := range msgs {
		if validate(m) == nil {
			m.Profile = profile
			valid = append(valid, m)
		}
	}
	unlock := s.lock(profile)
	defer unlock()
	for start := 0; start == 0 || start < len(valid); start += BatchSize {
		end := min(start+BatchSize, len(valid))
		last := end == len(valid)
		_, err := s.b.Txn(ctx, profile, token, func(tx storage.Tx) error {
			n, d := 0, 0
			for _, m := range valid[start:end] {
				res, err := apply(ctx, tx, m, origin, s.hooks)
				if err != nil {
					return err
				}
				if res.Duplicate {
					d++
				} else {
					n++
				}
			}
			if last && event != "" {
				data, err := summary(stored+n, duplicates+d)
				if err != nil {
					return fmt.Errorf("encode %s: %w", event, err)
				}
				tx.Append(event, data)
			}
			stored, duplicates = stored+n, duplicates+d
			return nil
		})
		if err != nil {
			return stored, duplicates, fmt.Errorf("msgstore: put batch %s: %w", profile, err)
		}
	}
	return stored, duplicates, nil
}

// PutTx is Put inside a transaction the caller already runs (for example
// together with other writes of the caller). The caller must serialise
// PutTx calls of one profile with each other and with Put. No Hook runs.
func PutTx(ctx context.Context, tx storage.Tx, profile string, m Message, origin Origin) (Result, error) {
	if err := validate(m); err != nil {
		return Result{}, err
	}
	m.Profile = profile
	return apply(ctx, tx, m, origin, nil)
}

func validate(m Message) error {
	switch {
	case m.ID == "" || len(m.ID) > MaxIDLen:
		return fmt.Errorf("%w: id must be 1..%d bytes", ErrInvalid, MaxIDLen)
	case strings.Contains(m.Chat, "|"):
		return fmt.Errorf("%w: chat %q", ErrInvalid, m.Chat)
	case isOp(m.Type) && m.TargetID == "":
		return fmt.Errorf("%w: %s %s without target_id", ErrInvalid, m.Type, m.ID)
	}
	return nil
}

func isOp(typ string) bool {
	return typ == TypeEdit || typ == TypeRevoke || typ == TypeReaction
}

// apply is the body of Put, run inside tx.
func apply(ctx context.Context, tx storage.Tx, m Message, origin Origin, hooks []Hook) (Result, error) {
	if _, err := tx.Get(ctx, NSMessages, m.ID); err == nil {
		return Result{Message: m, Duplicate: true}, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return Result{}, fmt.Errorf("read %s: %w", m.ID, err)
	}
	res := Result{Message: m}
	if isOp(m.Type) {
		target, err := getTx(ctx, tx, m.TargetID)
		switch {
		case err == nil:
			applyOp(&target, m)
			if err := putTx(tx, NSMessages, target.ID, target); err != nil {
				return Result{}, err
			}
			res.Target = &target
		case errors.Is(err, ErrNotFound):
			if err := addPending(ctx, tx, m); err != nil {
				return Result{}, err
			}
			res.Pending = true
		default:
			return Result{}, err
		}
		// The op itself is kept by id (dedup, GET by id) but is not listed
		// in the chat: it shows through its effect on the original.
		if err := putTx(tx, NSMessages, m.ID, m); err != nil {
			return Result{}, err
		}
	} else {
		ops, err := takePending(ctx, tx, m.ID)
		if err != nil {
			return Result{}, err
		}
		for _, op := range ops {
			applyOp(&m, op)
		}
		if err := applyEarlyAck(ctx, tx, &m); err != nil {
			return Result{}, err
		}
		if err := putTx(tx, NSMessages, m.ID, m); err != nil {
			return Result{}, err
		}
		seq, err := nextSeq(ctx, tx)
		if err != nil {
			return Result{}, err
		}
		tx.Put(NSChatIndex, m.Chat+"|"+indexSuffix(m.Timestamp, seq), []byte(m.ID))
		tx.Put(NSAllIndex, indexSuffix(m.Timestamp, seq), []byte(m.ID))
		for _, key := range []string{m.Chat, allBucketsKey} {
			if err := addBucket(ctx, tx, key, bucketOf(m.Timestamp)); err != nil {
				return Result{}, err
			}
		}
		res.Message = m
		for _, h := range hooks {
			if err := h(tx, m, origin); err != nil {
				return Result{}, fmt.Errorf("hook for %s: %w", m.ID, err)
			}
		}
	}
	res.Event = eventFor(m.Type, origin)
	if res.Event != "" {
		ev := EventData{Message: res.Message.Public()}
		if res.Target != nil {
			target := res.Target.Public()
			ev.Target = &target
		}
		data, err := json.Marshal(ev)
		if err != nil {
			return Result{}, fmt.Errorf("encode event: %w", err)
		}
		tx.Append(res.Event, data)
	}
	return res, nil
}

func eventFor(typ string, origin Origin) string {
	switch origin {
	case Sent:
		return EventMessageSent
	case History:
		return ""
	}
	switch typ {
	case TypeEdit:
		return EventMessageEdited
	case TypeRevoke:
		return EventMessageRevoked
	case TypeReaction:
		return EventMessageReaction
	}
	return EventMessageReceived
}

// applyOp applies an edit, revoke or reaction to the original msg.
func applyOp(msg *Message, op Message) {
	switch op.Type {
	case TypeEdit:
		if msg.Revoked {
			return // a deleted message stays deleted
		}
		msg.Edited = true
		current := msg.EditedAt
		if current == 0 {
			current = msg.Timestamp
		}
		if op.Timestamp >= current {
			msg.History = append(msg.History, Revision{Text: msg.Text, Timestamp: current})
			msg.Text = op.Text
			if msg.Media != nil {
				msg.Media.Caption = op.Text
			}
			msg.EditedAt = op.Timestamp
		} else {
			// An older edit arriving late only fills in the history.
			msg.History = append(msg.History, Revision{Text: op.Text, Timestamp: op.Timestamp})
			sort.SliceStable(msg.History, func(i, j int) bool { return msg.History[i].Timestamp < msg.History[j].Timestamp })
		}
	case TypeRevoke:
		msg.Revoked = true
		msg.Text = ""
		msg.History = nil
		msg.Poll = nil
		msg.Location = nil
		msg.Contacts = nil
		if msg.Media != nil {
			msg.Media.Caption = ""
		}
	case TypeReaction:
		if op.From == "" {
			return
		}
		if op.Reaction == "" {
			delete(msg.Reactions, op.From)
			if len(msg.Reactions) == 0 {
				msg.Reactions = nil
			}
			return
		}
		if msg.Reactions == nil {
			msg.Reactions = map[string]string{}
		}
		msg.Reactions[op.From] = op.Reaction
	}
}

func addPending(ctx context.Context, tx storage.Tx, op Message) error {
	var ops []Message
	raw, err := tx.Get(ctx, NSPending, op.TargetID)
	switch {
	case err == nil:
		if err := json.Unmarshal(raw, &ops); err != nil {
			ops = nil // a corrupt entry is a miss, as everywhere in the seam
		}
	case !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("read pending %s: %w", op.TargetID, err)
	}
	ops = append(ops, op)
	return putTx(tx, NSPending, op.TargetID, ops)
}

// takePending returns (and deletes) the ops kept for id, oldest first.
func takePending(ctx context.Context, tx storage.Tx, id string) ([]Message, error) {
	raw, err := tx.Get(ctx, NSPending, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read pending %s: %w", id, err)
	}
	tx.Delete(NSPending, id)
	var ops []Message
	if err := json.Unmarshal(raw, &ops); err != nil {
		return nil, nil
	}
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Timestamp < ops[j].Timestamp })
	return ops, nil
}

func getTx(ctx context.Context, tx storage.Tx, id string) (Message, error) {
	raw, err := tx.Get(ctx, NSMessages, id)
	if errors.Is(err, storage.ErrNotFound) {
		return Message{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	} else if err != nil {
		return Message{}, fmt.Errorf("read %s: %w", id, err)
	}
	var m Message
	if err := json.Unmarshal(raw, &m); err != nil {
		return Message{}, fmt.Errorf("%w: %s (undecodable)", ErrNotFound, id)
	}
	return m, nil
}

func putTx(tx storage.Tx, ns, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", ns, key, err)
	}
	tx.Put(ns, key, raw)
	return nil
}

// Ack records a receipt: every own message among ids moves forward to
// status (never backwards), and one message.ack event per id is appended,
// in one transaction. Receipts for messages the store does not know still
// produce their event.
func (s *Store) Ack(ctx context.Context, profile string, token storage.Token, acks []AckData) ([]string, error) {
	if len(acks) == 0 {
		return nil, nil
	}
	unlock := s.lock(profile)
	defer unlock()
	cursors, err := s.b.Txn(ctx, profile, token, func(tx storage.Tx) error {
		for _, a := range acks {
			if a.ID == "" || len(a.ID) > MaxIDLen {
				continue
			}
			m, err := getTx(ctx, tx, a.ID)
			switch {
			case err == nil:
				if m.FromMe && statusRank[a.Status] > statusRank[m.Status] {
					m.Status = a.Status
					if err := putTx(tx, NSMessages, m.ID, m); err != nil {
						return err
					}
				}
			case errors.Is(err, ErrNotFound):
				if err := keepEarlyAck(ctx, tx, a); err != nil {
					return err
				}
			default:
				return err
			}
			data, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("encode ack: %w", err)
			}
			tx.Append(EventMessageAck, data)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("msgstore: ack %s: %w", profile, err)
	}
	return cursors, nil
}

// UpdateMessage runs one fenced transaction of profile in which fn may
// change the stored message msgID (m is nil when no such message is
// stored) and add writes and events of its own to tx; *m is then stored.
// It is serialised with every other write of the profile's messages (a
// reaction landing at the same moment is not lost). An error from fn
// aborts the transaction and is returned wrapped. It does not move the
// message in the indexes: fn must not change ID, Chat or Timestamp.
func (s *Store) UpdateMessage(ctx context.Context, profile string, token storage.Token, msgID string,
	fn func(tx storage.Tx, m *Message) error) error {
	unlock := s.lock(profile)
	defer unlock()
	_, err := s.b.Txn(ctx, profile, token, func(tx storage.Tx) error {
		var m *Message
		got, err := getTx(ctx, tx, msgID)
		switch {
		case err == nil:
			m = &got
		case !errors.Is(err, ErrNotFound):
			return err
		}
		id, chat, ts := got.ID, got.Chat, got.Timestamp
		if err := fn(tx, m); err != nil {
			return err
		}
		if m == nil {
			return nil
		}
		m.ID, m.Chat, m.Timestamp = id, chat, ts
		return putTx(tx, NSMessages, msgID, *m)
	})
	if err != nil {
		return fmt.Errorf("msgstore: update %s/%s: %w", profile, msgID, err)
	}
	return nil
}

// keepEarlyAck remembers the best status of a receipt for an unknown id.
func keepEarlyAck(ctx context.Context, tx storage.Tx, a AckData) error {
	raw, err := tx.Get(ctx, NSEarlyAcks, a.ID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("read early ack %s: %w", a.ID, err)
	}
	if statusRank[a.Status] > statusRank[string(raw)] {
		tx.Put(NSEarlyAcks, a.ID, []byte(a.Status))
	}
	return nil
}

// applyEarlyAck moves an own message's status forward to a receipt that
// arrived before the message was stored.
func applyEarlyAck(ctx context.Context, tx storage.Tx, m *Message) error {
	raw, err := tx.Get(ctx, NSEarlyAcks, m.ID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read early ack %s: %w", m.ID, err)
	}
	tx.Delete(NSEarlyAcks, m.ID)
	if m.FromMe && statusRank[string(raw)] > statusRank[m.Status] {
		m.Status = string(raw)
	}
	return nil
}

// Get returns one message by id, with every edit, revoke and reaction
// applied. It returns ErrNotFound for an unknown id.
func (s *Store) Get(ctx context.Context, profile, id string) (Message, error) {
	if id == "" || len(id) > MaxIDLen {
		return Message{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	raw, err := s.b.Get(ctx, profile, NSMessages, id)
	if errors.Is(err, storage.ErrNotFound) {
		return Message{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	} else if err != nil {
		return Message{}, fmt.Errorf("msgstore: get %s/%s: %w", profile, id, err)
	}
	var m Message
	if err := json.Unmarshal(raw, &m); err != nil {
		return Message{}, fmt.Errorf("%w: %s (undecodable)", ErrNotFound, id)
	}
	return m, nil
}

// Query selects a page of List.
type Query struct {
	// Chat restricts the list to one chat; empty lists the whole profile.
	Chat string
	// Before keeps messages with a timestamp strictly lower (0: no bound).
	Before int64
	// Cursor continues a previous page (its Next); it wins over Before.
	Cursor string
	// Limit bounds the page (default 50, at most MaxLimit).
	Limit int
}

// Default and maximum page sizes of List.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// Page is one page of List, newest first.
type Page struct {
	Messages []Message
	// Next is the cursor of the following (older) page; "" at the end.
	Next string
}

// List returns stored messages newest first (ordered by timestamp, then
// id), edits, revokes and reactions applied. Edits, revokes and reactions
// themselves are not listed.
//
// The index is read with a prefix scan, so one call costs O(messages in
// the chat) index keys; fine for the chat sizes of a gateway, and the first
// thing to revisit if a chat grows to millions.
func (s *Store) List(ctx context.Context, profile string, q Query) (Page, error) {
	if strings.Contains(q.Chat, "|") {
		return Page{}, fmt.Errorf("%w: chat %q", ErrInvalid, q.Chat)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	if limit > MaxLimit {
		limit = MaxLimit
	}
	ns, prefix, bucketsKey := NSAllIndex, "", allBucketsKey
	if q.Chat != "" {
		ns, prefix, bucketsKey = NSChatIndex, q.Chat+"|", q.Chat
	}
	bound, boundTS := "", int64(-1) // keys must sort strictly below prefix+bound
	switch {
	case q.Cursor != "":
		ts, seq, err := parseCursor(q.Cursor)
		if err != nil {
			return Page{}, err
		}
		bound, boundTS = indexSuffix(ts, seq), ts
	case q.Before > 0:
		bound, boundTS = pad(q.Before), q.Before
	}
	scans, err := s.scans(ctx, profile, bucketsKey)
	if err != nil {
		return Page{}, fmt.Errorf("msgstore: list %s: %w", profile, err)
	}
	// Walk the buckets newest first, each with one prefix scan, until the
	// page is full; more tells whether anything older is left.
	var ids, keys []string
	more := false
	for b := len(scans) - 1; b >= 0 && !more; b-- {
		if boundTS >= 0 && scans[b].start > boundTS {
			continue // the whole bucket is after the bound
		}
		kvs, err := s.b.Scan(ctx, profile, ns, prefix+scans[b].prefix)
		if err != nil {
			return Page{}, fmt.Errorf("msgstore: list %s: %w", profile, err)
		}
		for i := len(kvs) - 1; i >= 0; i-- {
			if bound != "" && kvs[i].Key >= prefix+bound {
				continue
			}
			if len(ids) == limit {
				more = true
				break
			}
			ids = append(ids, string(kvs[i].Value))
			keys = append(keys, strings.TrimPrefix(kvs[i].Key, prefix))
		}
		if len(ids) == limit && b > 0 {
			more = true // older buckets are never empty
		}
	}
	page := Page{Messages: make([]Message, 0, len(ids))}
	if len(ids) == 0 {
		return page, nil
	}
	raws, err := s.b.GetMany(ctx, profile, NSMessages, ids)
	if err != nil {
		return Page{}, fmt.Errorf("msgstore: list %s: %w", profile, err)
	}
	for _, id := range ids {
		var m Message
		if raw, ok := raws[id]; ok && json.Unmarshal(raw, &m) == nil {
			page.Messages = append(page.Messages, m)
		}
	}
	if more {
		last := keys[len(keys)-1] // "<ts20>|<seq20>"
		ts, _ := strconv.ParseInt(last[:20], 10, 64)
		seq, _ := strconv.ParseUint(last[21:], 10, 64)
		page.Next = strconv.FormatInt(ts, 10) + "." + strconv.FormatUint(seq, 10)
	}
	return page, nil
}

// Time buckets of the index: a bucket spans bucketSpan seconds (about 28
// hours), which is exactly the first 15 of the 20 timestamp digits of an
// index key, so a bucket is one prefix scan.
const (
	bucketSpan    = 100_000
	allBucketsKey = "~all" // chats never start with '~'
)

func bucketOf(ts int64) int64 {
	if ts < 0 {
		ts = 0
	}
	return ts / bucketSpan
}

func bucketPrefix(b int64) string { return fmt.Sprintf("%015d", b) }

// addBucket records bucket b as non-empty for key.
func addBucket(ctx context.Context, tx storage.Tx, key string, b int64) error {
	var list []int64
	raw, err := tx.Get(ctx, NSBuckets, key)
	switch {
	case err == nil:
		if json.Unmarshal(raw, &list) != nil {
			// Corrupt: leave it; List falls back to a full scan rather
			// than trust a list rebuilt without the older buckets.
			return nil
		}
	case !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("read buckets of %s: %w", key, err)
	}
	i := sort.Search(len(list), func(i int) bool { return list[i] >= b })
	if i < len(list) && list[i] == b {
		return nil
	}
	list = append(list, 0)
	copy(list[i+1:], list[i:])
	list[i] = b
	return putTx(tx, NSBuckets, key, list)
}

// scan is one prefix scan of List: a bucket, with the first timestamp it
// can hold.
type scan struct {
	prefix string
	start  int64
}

// scans returns the scans covering key's index, oldest first: one per
// non-empty bucket, or a single scan of everything when the bucket list is
// unreadable (a corrupt entry is a miss, as everywhere in the seam).
func (s *Store) scans(ctx context.Context, profile, key string) ([]scan, error) {
	raw, err := s.b.Get(ctx, profile, NSBuckets, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil // nothing stored for this chat
	} else if err != nil {
		return nil, err
	}
	var list []int64
	if json.Unmarshal(raw, &list) != nil || !sort.SliceIsSorted(list, func(i, j int) bool { return list[i] < list[j] }) {
		return []scan{{prefix: "", start: -1}}, nil
	}
	out := make([]scan, len(list))
	for i, b := range list {
		out[i] = scan{prefix: bucketPrefix(b), start: b * bucketSpan}
	}
	return out, nil
}

// parseCursor reads "<ts>.<seq>".
func parseCursor(c string) (int64, uint64, error) {
	tsStr, seqStr, ok := strings.Cut(c, ".")
	ts, err1 := strconv.ParseInt(tsStr, 10, 64)
	seq, err2 := strconv.ParseUint(seqStr, 10, 64)
	if !ok || err1 != nil || err2 != nil || ts < 0 {
		return 0, 0, fmt.Errorf("%w: cursor %q", ErrInvalid, c)
	}
	return ts, seq, nil
}

func pad(ts int64) string {
	if ts < 0 {
		ts = 0
	}
	return fmt.Sprintf("%020d", ts)
}

func indexSuffix(ts int64, seq uint64) string { return pad(ts) + "|" + fmt.Sprintf("%020d", seq) }

// nextSeq returns the profile's next index sequence number.
func nextSeq(ctx context.Context, tx storage.Tx) (uint64, error) {
	var seq uint64
	raw, err := tx.Get(ctx, NSMeta, "seq")
	switch {
	case err == nil:
		seq, _ = strconv.ParseUint(string(raw), 10, 64) // corrupt: restart at 0; ts still orders
	case !errors.Is(err, storage.ErrNotFound):
		return 0, fmt.Errorf("read sequence: %w", err)
	}
	seq++
	tx.Put(NSMeta, "seq", []byte(strconv.FormatUint(seq, 10)))
	return seq, nil
}

// Reservation is the state of an Idempotency-Key.
type Reservation struct {
	// ID is the message id chosen for the first attempt.
	ID string `json:"id"`
	// Done is set once the message was sent and stored.
	Done bool `json:"done"`
}

// Reserve records that key will send message id, unless key already has a
// reservation: then it returns the existing one and false. A caller that
// gets an existing reservation with Done returns the stored message; one
// that gets a not-Done reservation retries the send with the same id (the
// receivers deduplicate on id).
func (s *Store) Reserve(ctx context.Context, profile string, token storage.Token, key, id string) (Reservation, bool, error) {
	if key == "" || len(key) > storage.MaxKeyLen {
		return Reservation{}, false, fmt.Errorf("%w: idempotency key must be 1..%d bytes", ErrInvalid, storage.MaxKeyLen)
	}
	unlock := s.lock(profile)
	defer unlock()
	var out Reservation
	created := false
	_, err := s.b.Txn(ctx, profile, token, func(tx storage.Tx) error {
		raw, err := tx.Get(ctx, NSIdempotency, key)
		if err == nil && json.Unmarshal(raw, &out) == nil && out.ID != "" {
			return nil
		} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		out, created = Reservation{ID: id}, true
		return putTx(tx, NSIdempotency, key, out)
	})
	if err != nil {
		return Reservation{}, false, fmt.Errorf("msgstore: reserve %s: %w", profile, err)
	}
	return out, created, nil
}
