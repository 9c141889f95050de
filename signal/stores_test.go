package signal

import (
	"bytes"
	"errors"
	"maps"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/storage"
)

// TestLIDMapping: both directions, device carried over, sqlstore's
// one-to-one invariant when a side is remapped, batches, invalid input, and
// the same answers from a new Container (no cache) reading storage.
func TestLIDMapping(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := ctxT(t)
		st := openStore(t, be)
		c := newContainer(t, st, "alice")
		d := pairedDevice(t, c, "100")
		m := d.LIDs

		if got, err := m.GetLIDForPN(ctx, pn("111", 0)); err != nil || !got.IsEmpty() {
			t.Fatalf("GetLIDForPN(unknown) = %v, %v", got, err)
		}
		if _, err := m.GetLIDForPN(ctx, lidJID("9", 0)); err == nil {
			t.Error("GetLIDForPN accepted a LID")
		}
		if _, err := m.GetPNForLID(ctx, pn("9", 0)); err == nil {
			t.Error("GetPNForLID accepted a PN")
		}
		if err := m.PutLIDMapping(ctx, pn("9", 0), pn("111", 0)); err == nil {
			t.Error("PutLIDMapping accepted a PN as LID")
		}

		// The negative answer above was cached; a put must replace it.
		must(t, m.PutLIDMapping(ctx, lidJID("901", 0), pn("111", 0)))
		must(t, m.PutManyLIDMappings(ctx, []store.LIDMapping{
			{LID: lidJID("902", 0), PN: pn("222", 0)},
			{LID: pn("bad", 0), PN: pn("333", 0)}, // ignored
			{LID: lidJID("903", 0), PN: pn("333", 0)},
			{LID: lidJID("904", 0), PN: pn("333", 0)}, // later wins: 903 loses its PN
		}))
		// Remap 111 to a new LID: 901 no longer maps anywhere.
		must(t, m.PutLIDMapping(ctx, lidJID("905", 0), pn("111", 0)))

		type want struct {
			pnUser, lidUser string // "" = no mapping
		}
		checkAll := func(t *testing.T, m store.LIDStore, label string) {
			t.Helper()
			forward := map[string]string{"111": "905", "222": "902", "333": "904", "444": ""}
			for p, l := range forward {
				got, err := m.GetLIDForPN(ctx, pn(p, 3))
				must(t, err)
				if l == "" && !got.IsEmpty() || l != "" && got != lidJID(l, 3) {
					t.Errorf("%s: GetLIDForPN(%s:3) = %v, want LID %q device 3", label, p, got, l)
				}
			}
			backward := map[string]string{"905": "111", "902": "222", "904": "333", "901": "", "903": ""}
			for l, p := range backward {
				got, err := m.GetPNForLID(ctx, lidJID(l, 2))
				must(t, err)
				if p == "" && !got.IsEmpty() || p != "" && got != pn(p, 2) {
					t.Errorf("%s: GetPNForLID(%s:2) = %v, want PN %q device 2", label, l, got, p)
				}
			}
			many, err := m.GetManyLIDsForPNs(ctx, []types.JID{pn("111", 0), pn("222", 5), pn("444", 0), lidJID("905", 0)})
			must(t, err)
			wantMany := map[types.JID]types.JID{pn("111", 0): lidJID("905", 0), pn("222", 5): lidJID("902", 5)}
			if !maps.Equal(many, wantMany) {
				t.Errorf("%s: GetManyLIDsForPNs = %v, want %v", label, many, wantMany)
			}
		}
		checkAll(t, m, "cached")
		fresh, err := newContainer(t, st, "alice").GetDevice(ctx)
		must(t, err)
		checkAll(t, fresh.LIDs, "fresh container")

		// Storage holds exactly both directions of the live mappings.
		kvs, err := st.Scan(ctx, "alice", storage.NSLIDMapping, "")
		must(t, err)
		got := map[string]string{}
		for _, e := range kvs {
			got[e.Key] = string(e.Value)
		}
		wantKV := map[string]string{
			"pn:111": "905", "lid:905": "111",
			"pn:222": "902", "lid:902": "222",
			"pn:333": "904", "lid:904": "333",
		}
		if !maps.Equal(got, wantKV) {
			t.Errorf("lid_mapping namespace = %v, want %v", got, wantKV)
		}
		// Scoped per profile.
		other, err := newContainer(t, st, "bob").GetDevice(ctx)
		must(t, err)
		if got, _ := other.LIDs.GetLIDForPN(ctx, pn("111", 0)); !got.IsEmpty() {
			t.Errorf("bob sees alice's mapping: %v", got)
		}
	})
}

func TestAppState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, _, d := aliceOn(t, be)
		as, keys := d.AppState, d.AppStateKeys

		// Versions.
		v, h, err := as.GetAppStateVersion(ctx, "regular")
		if err != nil || v != 0 || h != [128]byte{} {
			t.Fatalf("GetAppStateVersion(unknown) = %d, %x…, %v", v, h[:4], err)
		}
		hash := [128]byte{1, 2, 3, 127: 9}
		must(t, as.PutAppStateVersion(ctx, "regular", 42, hash))
		must(t, as.PutAppStateVersion(ctx, "critical_block", 7, [128]byte{5}))
		if v, h, err = as.GetAppStateVersion(ctx, "regular"); err != nil || v != 42 || h != hash {
			t.Fatalf("GetAppStateVersion = %d, %v", v, err)
		}
		must(t, as.DeleteAppStateVersion(ctx, "regular"))
		if v, _, _ = as.GetAppStateVersion(ctx, "regular"); v != 0 {
			t.Fatalf("version after delete = %d", v)
		}
		if v, _, _ = as.GetAppStateVersion(ctx, "critical_block"); v != 7 {
			t.Fatalf("other version after delete = %d", v)
		}

		// Mutation MACs: highest version wins, delete removes all versions.
		idx1, idx2 := []byte{0xa1}, []byte{0xa2}
		must(t, as.PutAppStateMutationMACs(ctx, "regular", 5, []store.AppStateMutationMAC{
			{IndexMAC: idx1, ValueMAC: []byte("v1@5")}, {IndexMAC: idx2, ValueMAC: []byte("v2@5")},
		}))
		must(t, as.PutAppStateMutationMACs(ctx, "regular", 6, []store.AppStateMutationMAC{{IndexMAC: idx1, ValueMAC: []byte("v1@6")}}))
		must(t, as.PutAppStateMutationMACs(ctx, "regular", 4, []store.AppStateMutationMAC{{IndexMAC: idx2, ValueMAC: []byte("v2@4")}}))
		must(t, as.PutAppStateMutationMACs(ctx, "regular", 9, nil))
		for _, tc := range []struct {
			name  string
			index []byte
			want  string
		}{
			{"regular", idx1, "v1@6"}, {"regular", idx2, "v2@5"}, {"regular", []byte{0xff}, ""}, {"other", idx1, ""},
		} {
			got, err := as.GetAppStateMutationMAC(ctx, tc.name, tc.index)
			if err != nil || string(got) != tc.want {
				t.Errorf("GetAppStateMutationMAC(%s, %x) = %q, %v; want %q", tc.name, tc.index, got, err, tc.want)
			}
		}
		must(t, as.DeleteAppStateMutationMACs(ctx, "regular", [][]byte{idx1}))
		if got, _ := as.GetAppStateMutationMAC(ctx, "regular", idx1); got != nil {
			t.Errorf("MAC after delete = %q", got)
		}
		if got, _ := as.GetAppStateMutationMAC(ctx, "regular", idx2); string(got) != "v2@5" {
			t.Errorf("untouched MAC after delete = %q", got)
		}

		// Sync keys: newer timestamp replaces, older does not; latest id.
		if id, err := keys.GetLatestAppStateSyncKeyID(ctx); id != nil || err != nil {
			t.Fatalf("GetLatestAppStateSyncKeyID(empty) = %x, %v", id, err)
		}
		k1 := store.AppStateSyncKey{Data: []byte("d1"), Fingerprint: []byte("f1"), Timestamp: 100}
		must(t, keys.PutAppStateSyncKey(ctx, []byte{1}, k1))
		must(t, keys.PutAppStateSyncKey(ctx, []byte{1}, store.AppStateSyncKey{Data: []byte("old"), Timestamp: 50}))
		must(t, keys.PutAppStateSyncKey(ctx, []byte{2}, store.AppStateSyncKey{Data: []byte("d2"), Timestamp: 300}))
		must(t, keys.PutAppStateSyncKey(ctx, []byte{3}, store.AppStateSyncKey{Data: []byte("d3"), Timestamp: 200}))
		got, err := keys.GetAppStateSyncKey(ctx, []byte{1})
		if err != nil || got == nil || !bytes.Equal(got.Data, k1.Data) || !bytes.Equal(got.Fingerprint, k1.Fingerprint) || got.Timestamp != 100 {
			t.Errorf("GetAppStateSyncKey(1) = %+v, %v; older put must not replace", got, err)
		}
		must(t, keys.PutAppStateSyncKey(ctx, []byte{1}, store.AppStateSyncKey{Data: []byte("new"), Timestamp: 150}))
		if got, _ = keys.GetAppStateSyncKey(ctx, []byte{1}); string(got.Data) != "new" {
			t.Errorf("newer put did not replace: %+v", got)
		}
		if got, err = keys.GetAppStateSyncKey(ctx, []byte{9}); got != nil || err != nil {
			t.Errorf("GetAppStateSyncKey(unknown) = %+v, %v", got, err)
		}
		if id, err := keys.GetLatestAppStateSyncKeyID(ctx); err != nil || !bytes.Equal(id, []byte{2}) {
			t.Errorf("GetLatestAppStateSyncKeyID = %x, %v; want 02", id, err)
		}
	})
}

func TestContacts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := ctxT(t)
		st := openStore(t, be)
		c := newContainer(t, st, "alice")
		d := pairedDevice(t, c, "100")
		cs := d.Contacts
		u1, u2, u3 := pn("111", 0), pn("222", 0), lidJID("333", 0)

		for _, step := range []struct {
			name    string
			do      func() (bool, string, error)
			changed bool
			prev    string
		}{
			{"first push name", func() (bool, string, error) { return cs.PutPushName(ctx, u1, "Bob") }, true, ""},
			{"same push name", func() (bool, string, error) { return cs.PutPushName(ctx, u1, "Bob") }, false, ""},
			{"new push name", func() (bool, string, error) { return cs.PutPushName(ctx, u1, "Bobby") }, true, "Bob"},
			{"first business name", func() (bool, string, error) { return cs.PutBusinessName(ctx, u1, "Bob Inc") }, true, ""},
			{"same business name", func() (bool, string, error) { return cs.PutBusinessName(ctx, u1, "Bob Inc") }, false, ""},
			{"LID contact", func() (bool, string, error) { return cs.PutPushName(ctx, u3, "Lid") }, true, ""},
		} {
			changed, prev, err := step.do()
			if err != nil || changed != step.changed || prev != step.prev {
				t.Errorf("%s = %v, %q, %v; want %v, %q", step.name, changed, prev, err, step.changed, step.prev)
			}
		}
		must(t, cs.PutContactName(ctx, u1, "Robert", "Robert Smith"))
		must(t, cs.PutAllContactNames(ctx, []store.ContactEntry{
			{JID: u2, FirstName: "Carl", FullName: "Carl X"},
			{JID: u1, FirstName: "Rob", FullName: "Rob Smith"},
			{JID: u2, FirstName: "Carla", FullName: "Carla X"}, // duplicate: last wins
		}))
		must(t, cs.PutManyRedactedPhones(ctx, []store.RedactedPhoneEntry{{JID: u3, RedactedPhone: "+39 ••• 12"}}))

		want := map[types.JID]types.ContactInfo{
			u1: {Found: true, FirstName: "Rob", FullName: "Rob Smith", PushName: "Bobby", BusinessName: "Bob Inc"},
			u2: {Found: true, FirstName: "Carla", FullName: "Carla X"},
			u3: {Found: true, PushName: "Lid", RedactedPhone: "+39 ••• 12"},
		}
		check := func(label string, cs store.ContactStore) {
			for j, w := range want {
				got, err := cs.GetContact(ctx, j)
				if err != nil || got != w {
					t.Errorf("%s: GetContact(%s) = %+v, %v; want %+v", label, j, got, err, w)
				}
			}
			if got, err := cs.GetContact(ctx, pn("999", 0)); err != nil || got.Found {
				t.Errorf("%s: GetContact(unknown) = %+v, %v", label, got, err)
			}
			all, err := cs.GetAllContacts(ctx)
			if err != nil || !maps.Equal(all, want) {
				t.Errorf("%s: GetAllContacts = %+v, %v; want %+v", label, all, err, want)
			}
		}
		check("cached", cs)
		fresh, err := newContainer(t, st, "alice").GetDevice(ctx)
		must(t, err)
		check("fresh container", fresh.Contacts)
		// The changed flag is computed against storage, not a process cache.
		if changed, prev, err := fresh.Contacts.PutPushName(ctx, u1, "Bobby"); changed || prev != "" || err != nil {
			t.Errorf("fresh PutPushName(same) = %v, %q, %v", changed, prev, err)
		}
	})
}

func TestChatSettings(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, _, d := aliceOn(t, be)
		cs := d.ChatSettings
		chat, group := pn("111", 0), types.JID{User: "123-456", Server: types.GroupServer}

		if got, err := cs.GetChatSettings(ctx, chat); err != nil || got.Found {
			t.Fatalf("GetChatSettings(unknown) = %+v, %v", got, err)
		}
		until := time.Unix(1900000000, 0)
		must(t, cs.PutMutedUntil(ctx, chat, until))
		must(t, cs.PutPinned(ctx, chat, true))
		must(t, cs.PutArchived(ctx, group, true))
		must(t, cs.PutMutedUntil(ctx, group, store.MutedForever))
		for _, tc := range []struct {
			chat types.JID
			want types.LocalChatSettings
		}{
			{chat, types.LocalChatSettings{Found: true, MutedUntil: until, Pinned: true}},
			{group, types.LocalChatSettings{Found: true, MutedUntil: store.MutedForever, Archived: true}},
		} {
			got, err := cs.GetChatSettings(ctx, tc.chat)
			if err != nil || got.Found != tc.want.Found || !got.MutedUntil.Equal(tc.want.MutedUntil) || got.Pinned != tc.want.Pinned || got.Archived != tc.want.Archived {
				t.Errorf("GetChatSettings(%s) = %+v, %v; want %+v", tc.chat, got, err, tc.want)
			}
		}
		must(t, cs.PutMutedUntil(ctx, chat, time.Time{}))
		if got, _ := cs.GetChatSettings(ctx, chat); !got.MutedUntil.IsZero() || !got.Pinned {
			t.Errorf("after unmute = %+v", got)
		}
	})
}

// TestMessageSecrets: first write wins (ON CONFLICT DO NOTHING), AD parts
// are dropped, and lookups match chat and sender in their PN or LID form
// through the LID map, returning the sender the secret was stored under.
func TestMessageSecrets(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, _, d := aliceOn(t, be)
		ms := d.MsgSecrets
		must(t, d.LIDs.PutLIDMapping(ctx, lidJID("901", 0), pn("111", 0)))
		must(t, d.LIDs.PutLIDMapping(ctx, lidJID("902", 0), pn("222", 0)))

		must(t, ms.PutMessageSecret(ctx, pn("111", 0), pn("222", 4), "M1", []byte("s1")))
		must(t, ms.PutMessageSecret(ctx, pn("111", 0), pn("222", 0), "M1", []byte("overwrite?")))
		must(t, ms.PutMessageSecrets(ctx, []store.MessageSecretInsert{
			{Chat: lidJID("901", 0), Sender: lidJID("901", 0), ID: "M2", Secret: []byte("s2")},
			{Chat: lidJID("901", 0), Sender: lidJID("901", 0), ID: "M2", Secret: []byte("dup")},
		}))
		for _, tc := range []struct {
			name         string
			chat, sender types.JID
			id           string
			want         string
			wantSender   types.JID
		}{
			{"exact", pn("111", 0), pn("222", 9), "M1", "s1", pn("222", 0)},
			{"LID sender", pn("111", 0), lidJID("902", 0), "M1", "s1", pn("222", 0)},
			{"LID chat and sender", lidJID("901", 0), lidJID("902", 0), "M1", "s1", pn("222", 0)},
			{"PN for stored LID", pn("111", 0), pn("111", 0), "M2", "s2", lidJID("901", 0)},
			{"unknown id", pn("111", 0), pn("222", 0), "M3", "", types.JID{}},
			{"unmapped sender", pn("111", 0), pn("333", 0), "M1", "", types.JID{}},
		} {
			got, sender, err := ms.GetMessageSecret(ctx, tc.chat, tc.sender, tc.id)
			if err != nil || string(got) != tc.want || sender != tc.wantSender {
				t.Errorf("%s: GetMessageSecret = %q, %v, %v; want %q, %v", tc.name, got, sender, err, tc.want, tc.wantSender)
			}
		}
	})
}

func TestPrivacyTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, _, d := aliceOn(t, be)
		pt := d.PrivacyTokens
		must(t, d.LIDs.PutLIDMapping(ctx, lidJID("901", 0), pn("111", 0)))

		if got, err := pt.GetPrivacyToken(ctx, pn("111", 0)); got != nil || err != nil {
			t.Fatalf("GetPrivacyToken(unknown) = %+v, %v", got, err)
		}
		must(t, pt.PutPrivacyTokens(ctx,
			store.PrivacyToken{User: pn("111", 3), Token: []byte("old"), Timestamp: time.Unix(1000, 0)},
			store.PrivacyToken{User: pn("222", 0), Token: []byte("t2"), Timestamp: time.Unix(1500, 0)},
		))
		must(t, pt.PutPrivacyTokens(ctx, store.PrivacyToken{User: lidJID("901", 0), Token: []byte("new"), Timestamp: time.Unix(2000, 0)}))
		must(t, pt.PutPrivacyTokens(ctx))

		for _, tc := range []struct {
			user types.JID
			want string
			ts   int64
		}{
			{pn("111", 0), "new", 2000},     // newest of PN and LID rows
			{lidJID("901", 5), "new", 2000}, // AD part dropped
			{pn("222", 0), "t2", 1500},
		} {
			got, err := pt.GetPrivacyToken(ctx, tc.user)
			if err != nil || got == nil || string(got.Token) != tc.want || got.Timestamp.Unix() != tc.ts || got.User != tc.user.ToNonAD() {
				t.Errorf("GetPrivacyToken(%s) = %+v, %v; want %q at %d", tc.user, got, err, tc.want, tc.ts)
			}
		}
	})
}

func TestEventBuffer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, st, d := aliceOn(t, be)
		eb := d.EventBuffer
		h1, h2 := [32]byte{1}, [32]byte{2}
		serverTS := time.Unix(1700000000, 0)

		if ev, err := eb.GetBufferedEvent(ctx, h1); ev != nil || err != nil {
			t.Fatalf("GetBufferedEvent(unknown) = %+v, %v", ev, err)
		}
		before := time.Now().Add(-time.Second)
		must(t, eb.PutBufferedEvent(ctx, h1, []byte("plain"), serverTS))
		ev, err := eb.GetBufferedEvent(ctx, h1)
		must(t, err)
		if string(ev.Plaintext) != "plain" || !ev.ServerTime.Equal(serverTS) || ev.InsertTime.Before(before) {
			t.Fatalf("GetBufferedEvent = %+v", ev)
		}
		if err := eb.PutBufferedEvent(ctx, h1, []byte("again"), serverTS); !errors.Is(err, ErrBufferedEventExists) {
			t.Fatalf("duplicate PutBufferedEvent = %v, want ErrBufferedEventExists", err)
		}
		must(t, eb.PutBufferedEvent(ctx, h2, []byte{}, serverTS))
		if ev, _ := eb.GetBufferedEvent(ctx, h2); ev == nil || ev.Plaintext == nil || len(ev.Plaintext) != 0 {
			t.Fatalf("empty plaintext must stay non-nil (nil means processed): %+v", ev)
		}

		must(t, eb.ClearBufferedEventPlaintext(ctx, h1))
		must(t, eb.ClearBufferedEventPlaintext(ctx, [32]byte{9})) // unknown: no-op
		ev, err = eb.GetBufferedEvent(ctx, h1)
		must(t, err)
		if ev == nil || ev.Plaintext != nil || !ev.ServerTime.Equal(serverTS) {
			t.Fatalf("after clear = %+v; want hash kept, plaintext nil", ev)
		}

		// An entry inserted 15 days ago goes, recent ones stay.
		old := [32]byte{3}
		must(t, st.Put(ctx, "alice", tok, storage.NSEventBuffer, hexKey(old),
			encodeBufferedEvent(nil, false, 1, time.Now().Add(-15*24*time.Hour).UnixMilli())))
		must(t, eb.DeleteOldBufferedHashes(ctx))
		for h, want := range map[[32]byte]bool{h1: true, h2: true, old: false} {
			if ev, _ := eb.GetBufferedEvent(ctx, h); (ev != nil) != want {
				t.Errorf("after DeleteOldBufferedHashes %x present = %v, want %v", h[:1], ev != nil, want)
			}
		}
	})
}
