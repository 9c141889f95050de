package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestSealRoundTripAndCorruption(t *testing.T) {
	for _, v := range [][]byte{nil, {}, []byte("x"), []byte(strings.Repeat("session", 1000)), {0, 0xff, 1}} {
		sealed := storage.Seal(v)
		if len(sealed) != len(v)+storage.EnvelopeOverhead {
			t.Fatalf("Seal(%d bytes) = %d bytes", len(v), len(sealed))
		}
		got, err := storage.Unseal(sealed)
		if err != nil || string(got) != string(v) {
			t.Fatalf("Unseal(Seal(%q)) = %q, %v", v, got, err)
		}
		// Every single-bit flip anywhere is detected.
		for i := range sealed {
			for bit := 0; bit < 8; bit++ {
				bad := append([]byte{}, sealed...)
				bad[i] ^= 1 << bit
				if _, err := storage.Unseal(bad); !errors.Is(err, storage.ErrCorrupt) {
					t.Fatalf("flip byte %d bit %d of %q: err = %v, want ErrCorrupt", i, bit, v, err)
				}
			}
			if len(sealed) > 64 && i > 8 {
				break // the long value: the header and first bytes are enough
			}
		}
	}
	for _, bad := range [][]byte{nil, {}, {1}, {1, 0, 0, 0}, {2, 0, 0, 0, 0}, []byte("plain value")} {
		if _, err := storage.Unseal(bad); !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("Unseal(%q) = %v, want ErrCorrupt", bad, err)
		}
	}
	// Truncation is detected.
	sealed := storage.Seal([]byte("hello world"))
	if _, err := storage.Unseal(sealed[:len(sealed)-1]); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("truncated envelope accepted: %v", err)
	}
}

func TestValidateProfile(t *testing.T) {
	cases := []struct {
		id string
		ok bool
	}{
		{"a", true}, {"0", true}, {"alice", true}, {"a-b_c", true}, {strings.Repeat("a", 63), true},
		{"", false}, {"A", false}, {"-a", false}, {"_a", false}, {"a.b", false}, {"a/b", false},
		{"a:b", false}, {"{a}", false}, {"a b", false}, {"a\n", false}, {strings.Repeat("a", 64), false}, {"é", false},
	}
	for _, tc := range cases {
		err := storage.ValidateProfile(tc.id)
		if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, storage.ErrInvalidProfile) {
			t.Errorf("ValidateProfile(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

func TestValidateArguments(t *testing.T) {
	cases := []struct {
		name string
		err  error
		ok   bool
	}{
		{"ns ok", storage.ValidateNamespace("app_state_sync_key"), true},
		{"ns dash", storage.ValidateNamespace("a-b"), false},
		{"ns empty", storage.ValidateNamespace(""), false},
		{"key ok", storage.ValidateKey("user@s.whatsapp.net:1"), true},
		{"key max", storage.ValidateKey(strings.Repeat("k", storage.MaxKeyLen)), true},
		{"key too long", storage.ValidateKey(strings.Repeat("k", storage.MaxKeyLen+1)), false},
		{"consumer ok", storage.ValidateConsumer("webhook:crm.1"), true},
		{"consumer space", storage.ValidateConsumer("a b"), false},
		{"type ok", storage.ValidateEventType("message.received"), true},
		{"type empty", storage.ValidateEventType(""), false},
		{"entries", storage.ValidateEntries([]storage.Entry{{NS: "session", Key: "k"}, {NS: "session"}}), false},
	}
	for _, tc := range cases {
		if tc.ok != (tc.err == nil) || !tc.ok && !errors.Is(tc.err, storage.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ok=%v", tc.name, tc.err, tc.ok)
		}
	}
}

func TestNormalizeLimitAndRetention(t *testing.T) {
	for in, want := range map[int]int{-1: storage.DefaultReadLimit, 0: storage.DefaultReadLimit, 1: 1, 500: 500, 1 << 30: storage.MaxReadLimit} {
		if got := storage.NormalizeLimit(in); got != want {
			t.Errorf("NormalizeLimit(%d) = %d, want %d", in, got, want)
		}
	}
	if r := (storage.Retention{}).WithDefaults(); r != storage.DefaultRetention() {
		t.Errorf("zero retention with defaults = %+v", r)
	}
	if r := (storage.Retention{MaxAge: -1, MaxEvents: 5}).WithDefaults(); r.MaxAge != -1 || r.MaxEvents != 5 {
		t.Errorf("explicit retention changed: %+v", r)
	}
	if d := storage.DefaultRetention(); d.MaxAge != 7*24*time.Hour || d.MaxEvents != 100_000 {
		t.Errorf("DefaultRetention = %+v, design says 7 days / 100k", d)
	}
}

func TestTxBuffer(t *testing.T) {
	ctx := context.Background()
	stored := map[string]string{"session/a": "stored-a", "session/b": "stored-b"}
	reads := 0
	read := func(_ context.Context, ns, key string) ([]byte, error) {
		reads++
		if v, ok := stored[ns+"/"+key]; ok {
			return []byte(v), nil
		}
		return nil, storage.ErrNotFound
	}
	b := storage.NewTxBuffer(read)
	val := []byte("v1")
	b.Put("session", "a", val)
	val[0] = 'X' // the buffer keeps its own copy
	b.Put("identity", "x", []byte("ix"))
	b.Delete("session", "b")
	b.Put("session", "a", []byte("v2")) // last write wins, first position kept
	b.Append("ev", []byte("1"))
	b.Append("ev2", nil)
	if v, err := b.Get(ctx, "session", "a"); err != nil || string(v) != "v2" {
		t.Fatalf("Get a = %q, %v", v, err)
	}
	if _, err := b.Get(ctx, "session", "b"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get of a buffered delete = %v", err)
	}
	if reads != 0 {
		t.Fatalf("buffered reads went to the store %d times", reads)
	}
	if v, err := b.Get(ctx, "session", "c"); !errors.Is(err, storage.ErrNotFound) || v != nil || reads != 1 {
		t.Fatalf("Get of an unbuffered key = %q, %v (reads %d)", v, err, reads)
	}
	var got []string
	for _, e := range b.Entries() {
		got = append(got, e.NS+"/"+e.Key+"="+string(e.Value)+map[bool]string{true: " (del)"}[e.Delete])
	}
	if want := "session/a=v2 identity/x=ix session/b= (del)"; strings.Join(got, " ") != want {
		t.Fatalf("Entries = %q, want %q", strings.Join(got, " "), want)
	}
	if evs := b.Events(); len(evs) != 2 || evs[0].Type != "ev" || evs[1].Type != "ev2" {
		t.Fatalf("Events = %+v", evs)
	}
	if b.Err() != nil {
		t.Fatalf("Err = %v", b.Err())
	}
	b.Put("BAD", "k", nil)
	b.Append("", nil)
	if !errors.Is(b.Err(), storage.ErrInvalidArgument) {
		t.Fatalf("Err after invalid writes = %v", b.Err())
	}
}

func TestRunTxn(t *testing.T) {
	ctx := context.Background()
	read := func(context.Context, string, string) ([]byte, error) { return nil, storage.ErrNotFound }
	committed := 0
	commit := func(entries []storage.Entry, events []storage.PendingEvent) ([]string, error) {
		committed++
		return []string{"c"}, nil
	}
	boom := errors.New("boom")
	if _, err := storage.RunTxn(ctx, read, func(tx storage.Tx) error { tx.Put("session", "k", nil); return boom }, commit); !errors.Is(err, boom) || committed != 0 {
		t.Fatalf("failing fn: %v, committed %d", err, committed)
	}
	if _, err := storage.RunTxn(ctx, read, func(tx storage.Tx) error { tx.Put("", "k", nil); return nil }, commit); !errors.Is(err, storage.ErrInvalidArgument) || committed != 0 {
		t.Fatalf("invalid write: %v, committed %d", err, committed)
	}
	if _, err := storage.RunTxn(ctx, read, nil, commit); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Fatalf("nil fn: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := storage.RunTxn(cctx, read, func(tx storage.Tx) error { tx.Put("session", "k", nil); return nil }, commit); !errors.Is(err, context.Canceled) || committed != 0 {
		t.Fatalf("cancelled ctx: %v, committed %d", err, committed)
	}
	cs, err := storage.RunTxn(ctx, read, func(tx storage.Tx) error { tx.Put("session", "k", nil); return nil }, commit)
	if err != nil || committed != 1 || len(cs) != 1 {
		t.Fatalf("good txn: %v, %v, committed %d", cs, err, committed)
	}
}

func TestParseCredsSummary(t *testing.T) {
	cases := []struct {
		in   string
		want storage.CredsSummary
	}{
		{`{"jid":"1@s.whatsapp.net","lid":"2@lid","push_name":"A","other":{"x":1}}`, storage.CredsSummary{JID: "1@s.whatsapp.net", LID: "2@lid", PushName: "A"}},
		{`{"jid":"1@s.whatsapp.net"}`, storage.CredsSummary{JID: "1@s.whatsapp.net"}},
		{`{}`, storage.CredsSummary{}},
		{`null`, storage.CredsSummary{}},
		{``, storage.CredsSummary{}},
		{`not json`, storage.CredsSummary{}},
		{`{"jid":42}`, storage.CredsSummary{}},
		{`[1,2]`, storage.CredsSummary{}},
		{`{"jid":"a"`, storage.CredsSummary{}},
	}
	for _, tc := range cases {
		if got := storage.ParseCredsSummary([]byte(tc.in)); got != tc.want {
			t.Errorf("ParseCredsSummary(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if got := storage.ProfileInfoFromCreds("p", nil); got != (storage.ProfileInfo{Profile: "p"}) {
		t.Errorf("ProfileInfoFromCreds(nil) = %+v", got)
	}
}

// FuzzUnseal: arbitrary stored bytes never panic the decoder, and whatever
// it accepts is exactly what Seal would have written for that value.
func FuzzUnseal(f *testing.F) {
	f.Add(storage.Seal([]byte("session record")))
	f.Add(storage.Seal(nil))
	f.Add([]byte{1, 0, 0, 0})
	f.Add([]byte("plain"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := storage.Unseal(b)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("Unseal error %v is not ErrCorrupt", err)
			}
			return
		}
		if string(storage.Seal(v)) != string(b) {
			t.Fatalf("Unseal accepted %x, which Seal would write as %x", b, storage.Seal(v))
		}
	})
}

// FuzzSealFlip: a value survives Seal/Unseal, and flipping any one bit of
// the envelope is always detected.
func FuzzSealFlip(f *testing.F) {
	f.Add([]byte("ratchet"), uint(3))
	f.Add([]byte{}, uint(0))
	f.Fuzz(func(t *testing.T, v []byte, pos uint) {
		sealed := storage.Seal(v)
		got, err := storage.Unseal(sealed)
		if err != nil || string(got) != string(v) {
			t.Fatalf("round trip of %x: %x, %v", v, got, err)
		}
		bit := pos % uint(len(sealed)*8)
		sealed[bit/8] ^= 1 << (bit % 8)
		if _, err := storage.Unseal(sealed); !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("flip of bit %d of %x not detected: %v", bit, v, err)
		}
	})
}

// FuzzParseCredsSummary: creds/self is read by ListProfilesWithMetadata from
// whatever is stored; it must never panic, and it only reports fields from
// a valid JSON object.
func FuzzParseCredsSummary(f *testing.F) {
	f.Add([]byte(`{"jid":"1@s.whatsapp.net","lid":"2@lid","push_name":"A"}`))
	f.Add([]byte(`{"jid":42}`))
	f.Add([]byte(`null`))
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := storage.ParseCredsSummary(b)
		if s != (storage.CredsSummary{}) && !json.Valid(b) {
			t.Fatalf("summary %+v from invalid JSON %q", s, b)
		}
	})
}
