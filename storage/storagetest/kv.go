package storagetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/amarula/amarula/storage"
)

var invalidProfiles = []string{
	"",
	"Alice",                 // upper case
	"-alice",                // must start with [a-z0-9]
	"_alice",                // same
	"al ice",                // space
	"../etc",                // path traversal
	"a/b",                   // separator
	"a:b",                   // redis key separator
	"{p:alice}",             // hash tag injection
	"alice*",                // glob
	"alicé",                 // non-ASCII
	"alice\n",               // trailing newline must not pass a $ anchor
	strings.Repeat("a", 64), // too long (max 63)
}

// testInvalidProfile calls every method with invalid profile ids and a
// cancelled context: the only acceptable answer is ErrInvalidProfile, which
// proves validation happens before any I/O (an adapter that reached its
// backend first would report the cancelled context instead).
func (s suite) testInvalidProfile(t *testing.T) {
	st := s.newStore(t)
	mustPut(t, st, "witness", storage.NSSession, "k", "v")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, p := range invalidProfiles {
		calls := map[string]func() error{
			"Get": func() error { _, err := st.Get(ctx, p, storage.NSSession, "k"); return err },
			"GetMany": func() error {
				_, err := st.GetMany(ctx, p, storage.NSSession, []string{"k"})
				return err
			},
			"Put": func() error { return st.Put(ctx, p, tok, storage.NSSession, "k", []byte("v")) },
			"PutMany": func() error {
				return st.PutMany(ctx, p, tok, []storage.Entry{{NS: storage.NSSession, Key: "k", Value: []byte("v")}})
			},
			"Delete":         func() error { return st.Delete(ctx, p, tok, storage.NSSession, "k") },
			"Scan":           func() error { _, err := st.Scan(ctx, p, storage.NSSession, ""); return err },
			"ClearNamespace": func() error { return st.ClearNamespace(ctx, p, tok, storage.NSSession) },
			"Clear":          func() error { return st.Clear(ctx, p, tok) },
			"RaiseFence":     func() error { return st.RaiseFence(ctx, p, 5) },
			"Fence":          func() error { _, err := st.Fence(ctx, p); return err },
			"Txn": func() error {
				_, err := st.Txn(ctx, p, tok, func(tx storage.Tx) error {
					return errors.New("txn callback must not run for an invalid profile")
				})
				return err
			},
			"Append":     func() error { _, err := st.Append(ctx, p, tok, "t", []byte("d")); return err },
			"Read":       func() error { _, err := st.Read(ctx, p, "", 10); return err },
			"Tail":       func() error { _, err := st.Tail(ctx, p, "", 10); return err },
			"LastCursor": func() error { _, err := st.LastCursor(ctx, p); return err },
			"Ack":        func() error { return st.Ack(ctx, p, tok, "c", "0") },
			"Cursor":     func() error { _, err := st.Cursor(ctx, p, "c"); return err },
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, storage.ErrInvalidProfile) {
				t.Errorf("%s(%q): err = %v, want ErrInvalidProfile", name, p, err)
			}
		}
	}
	if got := sortedProfiles(t, st); !equalStrings(got, []string{"witness"}) {
		t.Fatalf("after invalid calls ListProfiles = %v, want [witness]", got)
	}
	// The longest valid id and the edge characters are accepted.
	for _, p := range []string{"a", "0", strings.Repeat("z", 63), "a-b_c-9"} {
		mustPut(t, st, p, storage.NSSession, "k", "v-"+p)
		wantValue(t, st, p, storage.NSSession, "k", "v-"+p)
	}
}

// testInvalidArguments checks that malformed namespaces, keys, consumers,
// cursors and event types are refused with ErrInvalidArgument.
func (s suite) testInvalidArguments(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	long := strings.Repeat("k", storage.MaxKeyLen+1)
	cases := []struct {
		name string
		call func() error
	}{
		{"Put empty ns", func() error { return st.Put(ctx, "alice", tok, "", "k", nil) }},
		{"Put upper ns", func() error { return st.Put(ctx, "alice", tok, "Session", "k", nil) }},
		{"Put ns with colon", func() error { return st.Put(ctx, "alice", tok, "kv:x", "k", nil) }},
		{"Put empty key", func() error { return st.Put(ctx, "alice", tok, storage.NSSession, "", nil) }},
		{"Put long key", func() error { return st.Put(ctx, "alice", tok, storage.NSSession, long, nil) }},
		{"Get empty key", func() error { _, err := st.Get(ctx, "alice", storage.NSSession, ""); return err }},
		{"GetMany empty key", func() error {
			_, err := st.GetMany(ctx, "alice", storage.NSSession, []string{"a", ""})
			return err
		}},
		{"Scan bad ns", func() error { _, err := st.Scan(ctx, "alice", "bad ns", ""); return err }},
		{"PutMany one bad entry", func() error {
			return st.PutMany(ctx, "alice", tok, []storage.Entry{
				{NS: storage.NSSession, Key: "good", Value: []byte("v")},
				{NS: storage.NSSession, Key: "", Value: []byte("v")},
			})
		}},
		{"ClearNamespace bad ns", func() error { return st.ClearNamespace(ctx, "alice", tok, "") }},
		{"Append empty type", func() error { _, err := st.Append(ctx, "alice", tok, "", nil); return err }},
		{"Read garbage cursor", func() error { _, err := st.Read(ctx, "alice", "not-a-cursor", 1); return err }},
		{"Ack empty consumer", func() error { return st.Ack(ctx, "alice", tok, "", "0") }},
		{"Ack garbage cursor", func() error { return st.Ack(ctx, "alice", tok, "c", "x y") }},
		{"Cursor bad consumer", func() error { _, err := st.Cursor(ctx, "alice", "has space"); return err }},
	}
	for _, tc := range cases {
		wantErr(t, tc.name, tc.call(), storage.ErrInvalidArgument)
	}
	// Nothing of the refused batch landed.
	wantMiss(t, st, "alice", storage.NSSession, "good")
	if evs := readAll(t, st, "alice"); len(evs) != 0 {
		t.Fatalf("refused Append left events: %v", eventDatas(evs))
	}
}

func (s suite) testPutGetOverwrite(t *testing.T) {
	st := s.newStore(t)
	binary := string([]byte{0, 1, 2, 0xff, 0xfe, '\n', 0})
	cases := []struct{ key, first, second string }{
		{"plain", "v1", "v2"},
		{"user@s.whatsapp.net:3", "session-a", "session-b"},
		{"binary", binary, binary + binary},
		{"to-empty", "something", ""},
		{"from-empty", "", "something"},
		{strings.Repeat("x", storage.MaxKeyLen), "long key", "long key 2"},
	}
	for _, tc := range cases {
		mustPut(t, st, "alice", storage.NSSession, tc.key, tc.first)
		wantValue(t, st, "alice", storage.NSSession, tc.key, tc.first)
		mustPut(t, st, "alice", storage.NSSession, tc.key, tc.second)
		wantValue(t, st, "alice", storage.NSSession, tc.key, tc.second)
	}
	// A large value survives intact.
	big := strings.Repeat("0123456789abcdef", 64*1024)
	mustPut(t, st, "alice", storage.NSPrekey, "big", big)
	wantValue(t, st, "alice", storage.NSPrekey, "big", big)
	// The caller may reuse its buffer after Put and after Get.
	buf := []byte("original")
	if err := st.Put(ctxT(t), "alice", tok, storage.NSIdentity, "buf", buf); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXXXXX")
	got, err := st.Get(ctxT(t), "alice", storage.NSIdentity, "buf")
	if err != nil || string(got) != "original" {
		t.Fatalf("Get after caller reused its buffer = %q, %v; want original", got, err)
	}
	copy(got, "YYYYYYYY")
	wantValue(t, st, "alice", storage.NSIdentity, "buf", "original")
}

func (s suite) testGetMiss(t *testing.T) {
	st := s.newStore(t)
	wantMiss(t, st, "alice", storage.NSSession, "nope") // empty store
	mustPut(t, st, "alice", storage.NSSession, "k", "v")
	wantMiss(t, st, "alice", storage.NSSession, "k2") // other key
	wantMiss(t, st, "alice", storage.NSIdentity, "k") // other namespace
	wantMiss(t, st, "bob", storage.NSSession, "k")    // other profile
	wantMiss(t, st, "alice", "never_written_ns", "k") // namespace never used
	kvs, err := st.Scan(ctxT(t), "alice", "never_written_ns", "")
	if err != nil || len(kvs) != 0 {
		t.Fatalf("Scan of an unused namespace = %v, %v; want empty, nil", kvs, err)
	}
}

func (s suite) testDelete(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	if err := st.Delete(ctx, "alice", tok, storage.NSSession, "missing"); err != nil {
		t.Fatalf("Delete of a missing key: %v, want nil", err)
	}
	if err := st.Delete(ctx, "alice", tok, "unused_ns", "missing"); err != nil {
		t.Fatalf("Delete in an unused namespace: %v, want nil", err)
	}
	mustPut(t, st, "alice", storage.NSSession, "a", "1")
	mustPut(t, st, "alice", storage.NSSession, "b", "2")
	if err := st.Delete(ctx, "alice", tok, storage.NSSession, "a"); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, st, "alice", storage.NSSession, "a")
	wantValue(t, st, "alice", storage.NSSession, "b", "2")
	if err := st.Delete(ctx, "alice", tok, storage.NSSession, "a"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	// A deleted key can be written again.
	mustPut(t, st, "alice", storage.NSSession, "a", "3")
	wantValue(t, st, "alice", storage.NSSession, "a", "3")
}

func (s suite) testIsolation(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	// Same key in every (profile, namespace) pair, each with its own value.
	profiles := []string{"alice", "bob", "alice2"}
	nss := []string{storage.NSSession, storage.NSIdentity, storage.NSSenderKey, storage.NSCreds}
	for _, p := range profiles {
		for _, ns := range nss {
			mustPut(t, st, p, ns, "shared", p+"/"+ns)
		}
	}
	for _, p := range profiles {
		for _, ns := range nss {
			wantValue(t, st, p, ns, "shared", p+"/"+ns)
		}
	}
	// Deleting in one pair touches no other.
	if err := st.Delete(ctx, "alice", tok, storage.NSSession, "shared"); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, st, "alice", storage.NSSession, "shared")
	wantValue(t, st, "alice", storage.NSIdentity, "shared", "alice/"+storage.NSIdentity)
	wantValue(t, st, "bob", storage.NSSession, "shared", "bob/"+storage.NSSession)
	wantValue(t, st, "alice2", storage.NSSession, "shared", "alice2/"+storage.NSSession)
	// Scan sees only its own profile and namespace.
	mustPut(t, st, "bob", storage.NSIdentity, "only-bob", "x")
	kvs, err := st.Scan(ctx, "alice", storage.NSIdentity, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 1 || kvs[0].Key != "shared" || string(kvs[0].Value) != "alice/"+storage.NSIdentity {
		t.Fatalf("Scan(alice, identity) = %v, want only alice's entry", kvs)
	}
}

func (s suite) testGetMany(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	for _, k := range []string{"a", "b", "c"} {
		mustPut(t, st, "alice", storage.NSDeviceList, k, "v-"+k)
	}
	mustPut(t, st, "bob", storage.NSDeviceList, "d", "bob-d")
	mustPut(t, st, "alice", storage.NSSession, "e", "wrong-ns")
	got, err := st.GetMany(ctx, "alice", storage.NSDeviceList, []string{"a", "x", "c", "d", "e", "b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "v-a", "b": "v-b", "c": "v-c"}
	if len(got) != len(want) {
		t.Fatalf("GetMany = %d entries %v, want %v", len(got), got, want)
	}
	for k, v := range want {
		if string(got[k]) != v {
			t.Fatalf("GetMany[%s] = %q, want %q", k, got[k], v)
		}
	}
	got, err = st.GetMany(ctx, "alice", storage.NSDeviceList, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("GetMany(no keys) = %v, %v; want empty", got, err)
	}
	got, err = st.GetMany(ctx, "alice", "unused_ns", []string{"a"})
	if err != nil || len(got) != 0 {
		t.Fatalf("GetMany(unused ns) = %v, %v; want empty", got, err)
	}
}

func (s suite) testPutMany(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	mustPut(t, st, "alice", storage.NSSession, "gone", "x")
	err := st.PutMany(ctx, "alice", tok, []storage.Entry{
		{NS: storage.NSSession, Key: "a", Value: []byte("1")},
		{NS: storage.NSIdentity, Key: "b", Value: []byte("2")},
		{NS: storage.NSSession, Key: "gone", Delete: true},
		{NS: storage.NSSession, Key: "a", Value: []byte("1bis")}, // later entry wins
		{NS: storage.NSPrekey, Key: "never", Delete: true},       // delete of a missing key
	})
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, st, "alice", storage.NSSession, "a", "1bis")
	wantValue(t, st, "alice", storage.NSIdentity, "b", "2")
	wantMiss(t, st, "alice", storage.NSSession, "gone")
	if err := st.PutMany(ctx, "alice", tok, nil); err != nil {
		t.Fatalf("empty PutMany: %v", err)
	}
}

func (s suite) testScan(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	keys := []string{"b:2", "a:10", "a:2", "ab", "a:1", "b", "a", "x*1", "x*2", "xa", "x[1]", "x?", "zz"}
	for _, k := range keys {
		mustPut(t, st, "alice", storage.NSAppStateSyncKey, k, "v="+k)
	}
	mustPut(t, st, "alice", storage.NSContacts, "a:other-ns", "no")
	mustPut(t, st, "bob", storage.NSAppStateSyncKey, "a:bob", "no")
	cases := []struct {
		prefix string
		want   []string
	}{
		{"a:", []string{"a:1", "a:10", "a:2"}},
		{"a", []string{"a", "a:1", "a:10", "a:2", "ab"}},
		{"", []string{"a", "a:1", "a:10", "a:2", "ab", "b", "b:2", "x*1", "x*2", "x?", "x[1]", "xa", "zz"}},
		{"x*", []string{"x*1", "x*2"}}, // glob characters are literal
		{"x[", []string{"x[1]"}},
		{"x?", []string{"x?"}},
		{"nothing", nil},
		{"zz", []string{"zz"}},
	}
	for _, tc := range cases {
		kvs, err := st.Scan(ctx, "alice", storage.NSAppStateSyncKey, tc.prefix)
		if err != nil {
			t.Fatalf("Scan(%q): %v", tc.prefix, err)
		}
		var got []string
		for _, kv := range kvs {
			got = append(got, kv.Key)
			if string(kv.Value) != "v="+kv.Key {
				t.Fatalf("Scan(%q): value of %s = %q", tc.prefix, kv.Key, kv.Value)
			}
		}
		if !equalStrings(got, tc.want) {
			t.Fatalf("Scan(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
}

func (s suite) testCorrupt(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	corrupter, ok := st.(Corrupter)
	if !ok {
		t.Fatalf("%T does not implement storagetest.Corrupter (add CorruptForTest in a _test.go file)", st)
	}
	counter, ok := st.(CorruptCounter)
	if !ok {
		t.Fatalf("%T does not implement storagetest.CorruptCounter", st)
	}
	mustPut(t, st, "alice", storage.NSSession, "bad", "will be damaged")
	mustPut(t, st, "alice", storage.NSSession, "good", "fine")
	mustPut(t, st, "alice", storage.NSCreds, storage.CredsKey, `{"jid":"1@s.whatsapp.net","push_name":"A"}`)
	before := counter.CorruptReads()
	if err := corrupter.CorruptForTest("alice", storage.NSSession, "bad"); err != nil {
		t.Fatal(err)
	}
	if err := corrupter.CorruptForTest("alice", storage.NSCreds, storage.CredsKey); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, st, "alice", storage.NSSession, "bad")
	if counter.CorruptReads() <= before {
		t.Fatalf("CorruptReads did not grow after reading a corrupt entry (%d)", before)
	}
	wantValue(t, st, "alice", storage.NSSession, "good", "fine")
	many, err := st.GetMany(ctx, "alice", storage.NSSession, []string{"bad", "good"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := many["bad"]; ok || string(many["good"]) != "fine" || len(many) != 1 {
		t.Fatalf("GetMany with a corrupt entry = %v, want only good", many)
	}
	kvs, err := st.Scan(ctx, "alice", storage.NSSession, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 1 || kvs[0].Key != "good" {
		t.Fatalf("Scan with a corrupt entry = %v, want only good", kvs)
	}
	infos, err := st.ListProfilesWithMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0] != (storage.ProfileInfo{Profile: "alice"}) {
		t.Fatalf("ListProfilesWithMetadata with corrupt creds = %+v, want alice with empty fields", infos)
	}
	// Overwriting a corrupt entry heals it.
	mustPut(t, st, "alice", storage.NSSession, "bad", "healed")
	wantValue(t, st, "alice", storage.NSSession, "bad", "healed")
}

func (s suite) testClear(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	const fence storage.Token = 5
	for _, p := range []string{"alice", "bob"} {
		if err := st.RaiseFence(ctx, p, fence); err != nil {
			t.Fatal(err)
		}
		for _, ns := range []string{storage.NSCreds, storage.NSSession, storage.NSPrekey, "custom_ns"} {
			if err := st.Put(ctx, p, fence, ns, "k", []byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 3; i++ {
			if _, err := st.Append(ctx, p, fence, "ev", []byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		last, _ := st.LastCursor(ctx, p)
		if err := st.Ack(ctx, p, fence, "webhook", last); err != nil {
			t.Fatal(err)
		}
	}
	bobBefore := takeSnapshot(t, st, "bob", []string{storage.NSCreds, storage.NSSession, storage.NSPrekey, "custom_ns"}, []string{"webhook"})
	if err := st.Clear(ctx, "alice", fence); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{storage.NSCreds, storage.NSSession, storage.NSPrekey, "custom_ns"} {
		wantMiss(t, st, "alice", ns, "k")
	}
	if evs := readAll(t, st, "alice"); len(evs) != 0 {
		t.Fatalf("events survived Clear: %v", eventDatas(evs))
	}
	if c, _ := st.Cursor(ctx, "alice", "webhook"); c != "0" {
		t.Fatalf("consumer cursor survived Clear: %q", c)
	}
	if c, _ := st.LastCursor(ctx, "alice"); c != "0" {
		t.Fatalf("LastCursor after Clear = %q, want 0", c)
	}
	if f, err := st.Fence(ctx, "alice"); err != nil || f != fence {
		t.Fatalf("fence after Clear = %d, %v; want %d (the fence must survive)", f, err, fence)
	}
	wantErr(t, "Put with a stale token after Clear", st.Put(ctx, "alice", fence-1, storage.NSCreds, "k", []byte("zombie")), storage.ErrFenced)
	wantMiss(t, st, "alice", storage.NSCreds, "k")
	if got := sortedProfiles(t, st); !equalStrings(got, []string{"bob"}) {
		t.Fatalf("ListProfiles after Clear(alice) = %v, want [bob]", got)
	}
	if d := bobBefore.diff(takeSnapshot(t, st, "bob", []string{storage.NSCreds, storage.NSSession, storage.NSPrekey, "custom_ns"}, []string{"webhook"})); d != "" {
		t.Fatalf("Clear(alice) changed bob: %s", d)
	}
	// The profile is usable again, and its new events come after the old ones.
	c, err := st.Append(ctx, "alice", fence, "after", []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	evs := readAll(t, st, "alice")
	if len(evs) != 1 || evs[0].Cursor != c || string(evs[0].Data) != "new" {
		t.Fatalf("log after Clear + Append = %v", evs)
	}
	if err := st.Clear(ctx, "nobody", tok); err != nil {
		t.Fatalf("Clear of an empty profile: %v", err)
	}
}

func (s suite) testClearNamespace(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	for _, k := range []string{"1", "2", "3"} {
		mustPut(t, st, "alice", storage.NSPrekey, k, k)
		mustPut(t, st, "alice", storage.NSSession, k, k)
		mustPut(t, st, "bob", storage.NSPrekey, k, k)
	}
	mustAppend(t, st, "alice", "ev", "kept")
	if err := st.ClearNamespace(ctx, "alice", tok, storage.NSPrekey); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"1", "2", "3"} {
		wantMiss(t, st, "alice", storage.NSPrekey, k)
		wantValue(t, st, "alice", storage.NSSession, k, k)
		wantValue(t, st, "bob", storage.NSPrekey, k, k)
	}
	if evs := readAll(t, st, "alice"); len(evs) != 1 {
		t.Fatalf("ClearNamespace touched the event log: %v", eventDatas(evs))
	}
	if err := st.ClearNamespace(ctx, "alice", tok, "unused_ns"); err != nil {
		t.Fatalf("ClearNamespace of an unused namespace: %v", err)
	}
	mustPut(t, st, "alice", storage.NSPrekey, "4", "4")
	wantValue(t, st, "alice", storage.NSPrekey, "4", "4")
}

func (s suite) testListProfiles(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	if got := sortedProfiles(t, st); len(got) != 0 {
		t.Fatalf("ListProfiles of an empty store = %v", got)
	}
	mustPut(t, st, "carol", storage.NSSession, "k", "v")
	mustPut(t, st, "alice", storage.NSCreds, storage.CredsKey, "{}")
	mustPut(t, st, "alice", storage.NSSession, "k", "v")
	mustAppend(t, st, "dave", "ev", "events only")
	if err := st.RaiseFence(ctx, "fenceonly", 3); err != nil {
		t.Fatal(err)
	}
	if got, want := sortedProfiles(t, st), []string{"alice", "carol", "dave"}; !equalStrings(got, want) {
		t.Fatalf("ListProfiles = %v, want %v (a fence alone is not data)", got, want)
	}
	// Deleting the last key of a profile removes it from the list.
	if err := st.Delete(ctx, "carol", tok, storage.NSSession, "k"); err != nil {
		t.Fatal(err)
	}
	if got, want := sortedProfiles(t, st), []string{"alice", "dave"}; !equalStrings(got, want) {
		t.Fatalf("ListProfiles after deleting carol's last key = %v, want %v", got, want)
	}
	mustPut(t, st, "carol", storage.NSSession, "k", "back")
	if got, want := sortedProfiles(t, st), []string{"alice", "carol", "dave"}; !equalStrings(got, want) {
		t.Fatalf("ListProfiles after rewriting carol = %v, want %v", got, want)
	}
}

func (s suite) testListProfilesWithMetadata(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	creds := map[string]string{
		"paired":  `{"jid":"4915112345678:3@s.whatsapp.net","lid":"12345:3@lid","push_name":"Alice","noise_key":"xyz","extra":{"a":[1,2]}}`,
		"partial": `{"jid":"4915100000000@s.whatsapp.net"}`,
		"garbage": "\x00\x01not json at all",
		"badtype": `{"jid":42,"push_name":"x"}`,
		"array":   `["jid"]`,
	}
	for p, c := range creds {
		mustPut(t, st, p, storage.NSCreds, storage.CredsKey, c)
	}
	mustPut(t, st, "pairing", storage.NSSession, "k", "mid-pairing, no creds yet")
	infos, err := st.ListProfilesWithMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]storage.ProfileInfo{
		"paired":  {Profile: "paired", JID: "4915112345678:3@s.whatsapp.net", LID: "12345:3@lid", PushName: "Alice"},
		"partial": {Profile: "partial", JID: "4915100000000@s.whatsapp.net"},
		"garbage": {Profile: "garbage"},
		"badtype": {Profile: "badtype"},
		"array":   {Profile: "array"},
		"pairing": {Profile: "pairing"},
	}
	if len(infos) != len(want) {
		t.Fatalf("ListProfilesWithMetadata = %+v, want %d profiles", infos, len(want))
	}
	for _, info := range infos {
		if w, ok := want[info.Profile]; !ok || w != info {
			t.Fatalf("ListProfilesWithMetadata entry %+v, want %+v", info, w)
		}
	}
}

// testConcurrentWriters hammers one store from many goroutines: distinct
// keys must all land, concurrent atomic batches over the same keys must
// never interleave, and concurrent appends must all be kept exactly once.
func (s suite) testConcurrentWriters(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	const writers, perWriter, sharedKeys = 32, 15, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers*3)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				key := fmt.Sprintf("w%02d-%02d", w, i)
				if err := st.Put(ctx, "alice", tok, storage.NSSession, key, []byte(key)); err != nil {
					errs <- err
					return
				}
				if _, err := st.Append(ctx, "alice", tok, "ev", []byte(key)); err != nil {
					errs <- err
					return
				}
			}
			batch := make([]storage.Entry, sharedKeys)
			for k := range batch {
				batch[k] = storage.Entry{NS: storage.NSSenderKey, Key: fmt.Sprintf("shared-%d", k), Value: []byte(fmt.Sprintf("writer-%02d", w))}
			}
			if err := st.PutMany(ctx, "alice", tok, batch); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent write: %v", err)
	}
	kvs, err := st.Scan(ctx, "alice", storage.NSSession, "w")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != writers*perWriter {
		t.Fatalf("distinct keys: %d landed, want %d", len(kvs), writers*perWriter)
	}
	for _, kv := range kvs {
		if string(kv.Value) != kv.Key {
			t.Fatalf("key %s holds %q", kv.Key, kv.Value)
		}
	}
	shared, err := st.Scan(ctx, "alice", storage.NSSenderKey, "shared-")
	if err != nil {
		t.Fatal(err)
	}
	if len(shared) != sharedKeys {
		t.Fatalf("shared keys: %d, want %d", len(shared), sharedKeys)
	}
	for _, kv := range shared {
		if string(kv.Value) != string(shared[0].Value) {
			t.Fatalf("atomic batches interleaved: %s=%q but %s=%q", shared[0].Key, shared[0].Value, kv.Key, kv.Value)
		}
	}
	evs := readAll(t, st, "alice")
	if len(evs) != writers*perWriter {
		t.Fatalf("events: %d kept, want %d", len(evs), writers*perWriter)
	}
	seen := map[string]bool{}
	seenCursor := map[string]bool{}
	lastOfWriter := map[string]string{}
	for _, e := range evs {
		d := string(e.Data)
		if seen[d] || seenCursor[e.Cursor] {
			t.Fatalf("event %s (cursor %s) kept twice", d, e.Cursor)
		}
		seen[d], seenCursor[e.Cursor] = true, true
		w := d[:3]
		if prev := lastOfWriter[w]; prev != "" && prev > d {
			t.Fatalf("events of %s out of order: %s after %s", w, d, prev)
		}
		lastOfWriter[w] = d
	}
}
