package signal

import (
	"bytes"
	"maps"
	"slices"
	"testing"

	"github.com/amarula/amarula/storage"
)

func TestSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := ctxT(t)
		st := openStore(t, be)
		c := newContainer(t, st, "alice")
		d := pairedDevice(t, c, "100")
		s := d.Sessions

		// Miss semantics first: nil, false, no error.
		if v, err := s.GetSession(ctx, "111:0"); v != nil || err != nil {
			t.Fatalf("GetSession(miss) = %q, %v", v, err)
		}
		if has, err := s.HasSession(ctx, "111:0"); has || err != nil {
			t.Fatalf("HasSession(miss) = %v, %v", has, err)
		}
		if m, err := s.GetManySessions(ctx, nil); m != nil || err != nil {
			t.Fatalf("GetManySessions(nil) = %v, %v", m, err)
		}

		must(t, s.PutSession(ctx, "111:0", []byte("a0")))
		must(t, s.PutSession(ctx, "111:0", []byte("a0'"))) // overwrite
		must(t, s.PutManySessions(ctx, map[string][]byte{
			"111:5":  []byte("a5"),
			"1112:0": []byte("other user"),
			"222:0":  []byte("b0"),
		}))

		got, err := s.GetManySessions(ctx, []string{"111:0", "111:5", "222:0", "999:0"})
		must(t, err)
		want := map[string][]byte{"111:0": []byte("a0'"), "111:5": []byte("a5"), "222:0": []byte("b0"), "999:0": nil}
		if !maps.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("GetManySessions = %q, want %q", got, want)
		}
		if _, ok := got["999:0"]; !ok {
			t.Fatal("GetManySessions must list missing addresses with a nil value (whatsmeow's WithCachedSessions iterates them)")
		}

		must(t, s.DeleteSession(ctx, "222:0"))
		must(t, s.DeleteSession(ctx, "222:0")) // missing is fine
		must(t, s.DeleteAllSessions(ctx, "111"))
		for addr, want := range map[string]bool{"111:0": false, "111:5": false, "222:0": false, "1112:0": true} {
			if has, err := s.HasSession(ctx, addr); err != nil || has != want {
				t.Errorf("HasSession(%s) = %v, %v; want %v", addr, has, err, want)
			}
		}
	})
}

func TestIdentities(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, _, d := aliceOn(t, be)
		ids := d.Identities
		k1, k2 := [32]byte{1}, [32]byte{2}

		steps := []struct {
			name string
			do   func() error
			addr string
			key  [32]byte
			want bool
		}{
			{"unknown is trusted", nil, "111:0", k1, true},
			{"stored key trusted", func() error { return ids.PutIdentity(ctx, "111:0", k1) }, "111:0", k1, true},
			{"other key untrusted", nil, "111:0", k2, false},
			{"second device", func() error { return ids.PutIdentity(ctx, "111:3", k1) }, "111:3", k2, false},
			{"neighbour user", func() error { return ids.PutIdentity(ctx, "1115:0", k1) }, "1115:0", k2, false},
			{"delete one", func() error { return ids.DeleteIdentity(ctx, "111:0") }, "111:0", k2, true},
			{"delete all of 111", func() error { return ids.DeleteAllIdentities(ctx, "111") }, "111:3", k2, true},
			{"neighbour kept", nil, "1115:0", k2, false},
		}
		for _, step := range steps {
			if step.do != nil {
				must(t, step.do())
			}
			got, err := ids.IsTrustedIdentity(ctx, step.addr, step.key)
			if err != nil || got != step.want {
				t.Errorf("%s: IsTrustedIdentity(%s) = %v, %v; want %v", step.name, step.addr, got, err, step.want)
			}
		}
	})
}

func TestSenderKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, _, d := aliceOn(t, be)
		if v, err := d.SenderKeys.GetSenderKey(ctx, "g1@g.us", "111:0"); v != nil || err != nil {
			t.Fatalf("GetSenderKey(miss) = %q, %v", v, err)
		}
		must(t, d.SenderKeys.PutSenderKey(ctx, "g1@g.us", "111:0", []byte("k1")))
		must(t, d.SenderKeys.PutSenderKey(ctx, "g2@g.us", "111:0", []byte("k2")))
		for _, tc := range []struct{ group, user, want string }{
			{"g1@g.us", "111:0", "k1"}, {"g2@g.us", "111:0", "k2"}, {"g1@g.us", "111:1", ""},
		} {
			v, err := d.SenderKeys.GetSenderKey(ctx, tc.group, tc.user)
			if err != nil || string(v) != tc.want {
				t.Errorf("GetSenderKey(%s, %s) = %q, %v; want %q", tc.group, tc.user, v, err, tc.want)
			}
		}
	})
}

// TestMigratePNToLID mirrors sqlstore: every session, identity key and
// sender key of any device of the PN user moves to the LID user (replacing
// what the LID had), the PN copies are deleted, other users are untouched,
// and a second call for the same PN on the same Container is a no-op.
func TestMigratePNToLID(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := ctxT(t)
		st := openStore(t, be)
		c := newContainer(t, st, "alice")
		d := pairedDevice(t, c, "100")
		phone, lid := pn("111", 0), lidJID("999", 0)
		lidUser := lid.SignalAddressUser() // "999_1"

		must(t, d.Sessions.PutManySessions(ctx, map[string][]byte{
			"111:0":        []byte("s0"),
			"111:4":        []byte("s4"),
			"1112:0":       []byte("neighbour"),
			lidUser + ":4": []byte("stale lid session"),
			lidUser + ":9": []byte("lid only"),
			"222:0":        []byte("other"),
		}))
		must(t, d.Identities.PutIdentity(ctx, "111:0", [32]byte{1}))
		must(t, d.Identities.PutIdentity(ctx, "1112:0", [32]byte{2}))
		must(t, d.SenderKeys.PutSenderKey(ctx, "g1@g.us", "111:0", []byte("sk1")))
		must(t, d.SenderKeys.PutSenderKey(ctx, "g2@g.us", "111:4", []byte("sk2")))

		must(t, d.Sessions.MigratePNToLID(ctx, phone, lid))

		// Expected keys per namespace; a value of "" means "don't compare".
		wantNS := map[string]map[string]string{
			storage.NSSession: {
				lidUser + ":0": "s0", lidUser + ":4": "s4", lidUser + ":9": "lid only",
				"1112:0": "neighbour", "222:0": "other",
			},
			storage.NSIdentity:  {lidUser + ":0": "", "1112:0": ""},
			storage.NSSenderKey: {lidUser + ":0|g1@g.us": "sk1", lidUser + ":4|g2@g.us": "sk2"},
		}
		for ns, want := range wantNS {
			kvs, err := st.Scan(ctx, "alice", ns, "")
			must(t, err)
			var keys []string
			for _, e := range kvs {
				keys = append(keys, e.Key)
				if w := want[e.Key]; w != "" && string(e.Value) != w {
					t.Errorf("%s/%s = %q, want %q", ns, e.Key, e.Value, w)
				}
			}
			wantKeys := slices.Sorted(maps.Keys(want))
			if !slices.Equal(keys, wantKeys) {
				t.Errorf("%s keys after migration = %v, want %v", ns, keys, wantKeys)
			}
		}
		if ok, _ := d.Identities.IsTrustedIdentity(ctx, lidUser+":0", [32]byte{1}); !ok {
			t.Error("migrated identity key not trusted under the LID address")
		}

		// Same Container: migration of this PN already happened, even if PN
		// sessions reappear (sqlstore's per-process cache).
		must(t, d.Sessions.PutSession(ctx, "111:0", []byte("new pn session")))
		must(t, d.Sessions.MigratePNToLID(ctx, phone, lid))
		if has, _ := d.Sessions.HasSession(ctx, "111:0"); !has {
			t.Error("second MigratePNToLID on the same Container ran again")
		}
		// A new Container (new process) migrates again.
		d2, err := newContainer(t, st, "alice").GetDevice(ctx)
		must(t, err)
		must(t, d2.Sessions.MigratePNToLID(ctx, phone, lid))
		if v, _ := d2.Sessions.GetSession(ctx, lidUser+":0"); string(v) != "new pn session" {
			t.Errorf("after second migration %s:0 = %q", lidUser, v)
		}
	})
}

// TestPreKeys mirrors sqlstore's prekey lifecycle, plus the persisted
// counter: ids are never reused and survive a restart.
func TestPreKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, st, d := aliceOn(t, be)
		pk := d.PreKeys

		ids := func(n uint32) []uint32 {
			t.Helper()
			ks, err := pk.GetOrGenPreKeys(ctx, n)
			must(t, err)
			out := make([]uint32, len(ks))
			for i, k := range ks {
				out[i] = k.KeyID
			}
			return out
		}
		count := func() int {
			t.Helper()
			n, err := pk.UploadedPreKeyCount(ctx)
			must(t, err)
			return n
		}

		first, err := pk.GetOrGenPreKeys(ctx, 5)
		must(t, err)
		if got := []uint32{first[0].KeyID, first[4].KeyID}; got[0] != 1 || got[1] != 5 {
			t.Fatalf("first prekeys = %v, want ids 1..5", got)
		}
		if got := ids(5); !slices.Equal(got, []uint32{1, 2, 3, 4, 5}) {
			t.Fatalf("unuploaded keys are not handed out again: %v", got)
		}
		if got := ids(3); !slices.Equal(got, []uint32{1, 2, 3}) {
			t.Fatalf("GetOrGenPreKeys(3) = %v", got)
		}
		if n := count(); n != 0 {
			t.Fatalf("uploaded count = %d, want 0", n)
		}
		must(t, pk.MarkPreKeysAsUploaded(ctx, 3))
		if n := count(); n != 3 {
			t.Fatalf("uploaded count after marking up to 3 = %d", n)
		}
		if got := ids(4); !slices.Equal(got, []uint32{4, 5, 6, 7}) {
			t.Fatalf("GetOrGenPreKeys(4) after marking = %v", got)
		}
		one, err := pk.GenOnePreKey(ctx)
		must(t, err)
		if one.KeyID != 8 || count() != 4 {
			t.Fatalf("GenOnePreKey = id %d, uploaded count %d; want 8 and 4 (generated as uploaded)", one.KeyID, count())
		}

		got, err := pk.GetPreKey(ctx, 2)
		must(t, err)
		if got == nil || *got.Priv != *first[1].Priv || *got.Pub != *first[1].Pub || got.KeyID != 2 {
			t.Fatalf("GetPreKey(2) = %+v, want the key generated first", got)
		}
		must(t, pk.RemovePreKey(ctx, 2))
		if got, err := pk.GetPreKey(ctx, 2); got != nil || err != nil {
			t.Fatalf("GetPreKey(removed) = %v, %v", got, err)
		}
		if n := count(); n != 3 {
			t.Fatalf("uploaded count after removing one = %d", n)
		}

		// Remove everything: the counter still moves forward.
		for id := uint32(1); id <= 8; id++ {
			must(t, pk.RemovePreKey(ctx, id))
		}
		// New process: counter persisted.
		d2, err := newContainer(t, st, "alice").GetDevice(ctx)
		must(t, err)
		ks, err := d2.PreKeys.GetOrGenPreKeys(ctx, 2)
		must(t, err)
		if ks[0].KeyID != 9 || ks[1].KeyID != 10 {
			t.Fatalf("after removing all and restarting, new ids = %d, %d; want 9, 10", ks[0].KeyID, ks[1].KeyID)
		}
		if n, _ := d2.PreKeys.UploadedPreKeyCount(ctx); n != 0 {
			t.Fatalf("uploaded count = %d", n)
		}
	})
}

// TestPreKeyCounterFallback: without a counter (lost or never written) the
// next id is MAX(id)+1, as in sqlstore.
func TestPreKeyCounterFallback(t *testing.T) {
	ctx := ctxT(t)
	st := boltStore(t)
	d := pairedDevice(t, newContainer(t, st, "alice"), "100")
	_, err := d.PreKeys.GetOrGenPreKeys(ctx, 3)
	must(t, err)
	for _, v := range [][]byte{nil, []byte("garbage")} {
		if v == nil {
			must(t, st.Delete(ctx, "alice", tok, storage.NSPrekey, preKeyCounterKey))
		} else {
			must(t, st.Put(ctx, "alice", tok, storage.NSPrekey, preKeyCounterKey, v))
		}
		k, err := d.PreKeys.GenOnePreKey(ctx)
		must(t, err)
		want := uint32(4)
		if v != nil {
			want = 5
		}
		if k.KeyID != want {
			t.Errorf("counter %q: GenOnePreKey id = %d, want %d", v, k.KeyID, want)
		}
	}
}
