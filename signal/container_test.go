package signal

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/amarula/amarula/storage"
)

func TestNewValidatesProfile(t *testing.T) {
	st := boltStore(t)
	for _, tc := range []struct {
		profile string
		ok      bool
	}{
		{"alice", true},
		{"a-b_c9", true},
		{"", false},
		{"Alice", false},
		{"../etc", false},
		{"a b", false},
	} {
		_, err := New(st, tc.profile, tok, nil)
		if tc.ok && err != nil {
			t.Errorf("New(%q) = %v, want ok", tc.profile, err)
		}
		if !tc.ok && !errors.Is(err, storage.ErrInvalidProfile) {
			t.Errorf("New(%q) = %v, want ErrInvalidProfile", tc.profile, err)
		}
	}
	if _, err := New(nil, "alice", tok, nil); err == nil {
		t.Error("New(nil store) succeeded")
	}
}

// TestDevicePersistence saves a fully populated device, reopens the data
// with a new store object and a new Container (what a new owner process
// does) and expects every persistent field back, plus the creds summary the
// seam reads.
func TestDevicePersistence(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := ctxT(t)
		st := openStore(t, be)
		c := newContainer(t, st, "alice")

		fresh, err := c.GetDevice(ctx)
		must(t, err)
		if fresh.ID != nil {
			t.Fatalf("fresh device has ID %s", fresh.ID)
		}
		if fresh.NoiseKey == nil || fresh.IdentityKey == nil || fresh.SignedPreKey == nil || fresh.SignedPreKey.Signature == nil || len(fresh.AdvSecretKey) != 32 {
			t.Fatalf("fresh device lacks keys: %+v", fresh)
		}
		if fresh.Sessions == nil || fresh.EventBuffer == nil || fresh.LIDs == nil || fresh.Container != c {
			t.Fatal("fresh device stores are not wired")
		}
		if err := fresh.Save(ctx); !errors.Is(err, ErrDeviceIDMustBeSet) {
			t.Fatalf("Save before pairing = %v, want ErrDeviceIDMustBeSet", err)
		}
		if again, _ := c.GetDevice(ctx); bytes.Equal(again.NoiseKey.Priv[:], fresh.NoiseKey.Priv[:]) {
			t.Fatal("two unsaved fresh devices share a noise key")
		}

		jid := types.JID{User: "15551234567", Device: 7, Server: types.DefaultUserServer}
		fresh.ID = &jid
		fresh.LID = types.JID{User: "987654321", Device: 7, Server: types.HiddenUserServer}
		fresh.PushName = "Alice A."
		fresh.BusinessName = "Alice Ltd"
		fresh.Platform = "android"
		fresh.LIDMigrationTimestamp = 1700000000
		fresh.FacebookUUID = uuid.New()
		fresh.Account = &waAdv.ADVSignedDeviceIdentity{
			Details:             []byte("details"),
			AccountSignatureKey: bytes.Repeat([]byte{1}, 32),
			AccountSignature:    bytes.Repeat([]byte{2}, 64),
			DeviceSignature:     bytes.Repeat([]byte{3}, 64),
		}
		must(t, fresh.Save(ctx))

		raw, err := st.Get(ctx, "alice", storage.NSCreds, storage.CredsKey)
		must(t, err)
		sum := storage.ParseCredsSummary(raw)
		if sum.JID != jid.String() || sum.LID != fresh.LID.String() || sum.PushName != "Alice A." {
			t.Fatalf("creds summary = %+v", sum)
		}

		infos, err := st.ListProfilesWithMetadata(ctx)
		must(t, err)
		want := storage.ProfileInfo{Profile: "alice", JID: jid.String(), LID: fresh.LID.String(), PushName: "Alice A."}
		if !slices.Contains(infos, want) {
			t.Errorf("ListProfilesWithMetadata = %+v, want it to contain %+v", infos, want)
		}

		// Process-equivalent restart: new store object, new Container.
		must(t, st.Close())
		st2 := openStore(t, be)
		c2 := newContainer(t, st2, "alice")
		got, err := c2.GetDevice(ctx)
		must(t, err)
		checks := []struct {
			name string
			ok   bool
		}{
			{"ID", got.ID != nil && *got.ID == jid},
			{"LID", got.LID == fresh.LID},
			{"noise key", *got.NoiseKey.Priv == *fresh.NoiseKey.Priv && *got.NoiseKey.Pub == *fresh.NoiseKey.Pub},
			{"identity key", *got.IdentityKey.Priv == *fresh.IdentityKey.Priv && *got.IdentityKey.Pub == *fresh.IdentityKey.Pub},
			{"signed prekey", *got.SignedPreKey.Priv == *fresh.SignedPreKey.Priv && got.SignedPreKey.KeyID == fresh.SignedPreKey.KeyID},
			{"signed prekey signature", *got.SignedPreKey.Signature == *fresh.SignedPreKey.Signature},
			{"registration id", got.RegistrationID == fresh.RegistrationID},
			{"adv secret", bytes.Equal(got.AdvSecretKey, fresh.AdvSecretKey)},
			{"account", proto.Equal(got.Account, fresh.Account)},
			{"platform", got.Platform == "android"},
			{"business name", got.BusinessName == "Alice Ltd"},
			{"push name", got.PushName == "Alice A."},
			{"lid migration ts", got.LIDMigrationTimestamp == 1700000000},
			{"facebook uuid", got.FacebookUUID == fresh.FacebookUUID},
			{"initialized", got.Initialized && got.Container == c2 && got.Sessions != nil && got.PreKeys != nil && got.LIDs != nil},
		}
		for _, ck := range checks {
			if !ck.ok {
				t.Errorf("reloaded device: %s differs", ck.name)
			}
		}
	})
}

// TestWipe clears creds and every Signal namespace but not other data of
// the profile (messages) nor other profiles.
func TestWipe(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := ctxT(t)
		st := openStore(t, be)
		c := newContainer(t, st, "alice")
		other := newContainer(t, st, "bob")
		d := pairedDevice(t, c, "111")
		od := pairedDevice(t, other, "222")
		must(t, d.Sessions.PutSession(ctx, "333:0", []byte("s")))
		must(t, od.Sessions.PutSession(ctx, "333:0", []byte("bob's")))
		_, err := d.PreKeys.GetOrGenPreKeys(ctx, 3)
		must(t, err)
		must(t, d.LIDs.PutLIDMapping(ctx, lidJID("9", 0), pn("333", 0)))
		_, _, err = d.Contacts.PutPushName(ctx, pn("333", 0), "Carol")
		must(t, err)
		must(t, st.Put(ctx, "alice", tok, "messages", "m1", []byte("hello")))

		must(t, c.Wipe(ctx))

		for _, ns := range credentialNamespaces {
			kvs, err := st.Scan(ctx, "alice", ns, "")
			must(t, err)
			if len(kvs) != 0 {
				t.Errorf("after Wipe %s has %d keys", ns, len(kvs))
			}
		}
		if v, err := st.Get(ctx, "alice", "messages", "m1"); err != nil || string(v) != "hello" {
			t.Errorf("messages/m1 after Wipe = %q, %v; want kept", v, err)
		}
		if v, _ := od.Sessions.GetSession(ctx, "333:0"); string(v) != "bob's" {
			t.Errorf("other profile's session after Wipe = %q", v)
		}
		nd, err := c.GetDevice(ctx)
		must(t, err)
		if nd.ID != nil {
			t.Errorf("device after Wipe still paired as %s", nd.ID)
		}
		// Caches were dropped with the data.
		if got, _ := nd.LIDs.GetLIDForPN(ctx, pn("333", 0)); !got.IsEmpty() {
			t.Errorf("LID mapping survived Wipe: %s", got)
		}
		if info, _ := nd.Contacts.GetContact(ctx, pn("333", 0)); info.Found {
			t.Errorf("contact survived Wipe: %+v", info)
		}
		// DeleteDevice (whatsmeow's logout path) is the same wipe.
		d2 := pairedDevice(t, c, "111")
		must(t, d2.Sessions.PutSession(ctx, "444:0", []byte("s")))
		must(t, d2.Delete(ctx))
		if has, _ := d2.Sessions.HasSession(ctx, "444:0"); has {
			t.Error("session survived DeleteDevice")
		}
		if _, err := st.Get(ctx, "alice", storage.NSCreds, storage.CredsKey); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("creds after DeleteDevice: %v", err)
		}
		if err := c.DeleteDevice(ctx, &store.Device{}); !errors.Is(err, ErrDeviceIDMustBeSet) {
			t.Errorf("DeleteDevice(unpaired) = %v", err)
		}
	})
}

// TestFencedWrites: once a newer owner raised the fence, every write path of
// the old Container fails with ErrFenced and lands nothing; reads still
// work, and the new owner writes fine.
func TestFencedWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := ctxT(t)
		st := openStore(t, be)
		old := newContainer(t, st, "alice")
		d := pairedDevice(t, old, "111")
		must(t, d.Sessions.PutSession(ctx, "222:0", []byte("v1")))

		select {
		case <-old.Fenced():
			t.Fatal("Fenced() closed before any fenced write")
		default:
		}
		must(t, st.RaiseFence(ctx, "alice", tok+1))

		writes := []struct {
			name string
			fn   func() error
		}{
			{"PutSession", func() error { return d.Sessions.PutSession(ctx, "222:0", []byte("v2")) }},
			{"PutManySessions", func() error {
				return d.Sessions.PutManySessions(ctx, map[string][]byte{"222:0": []byte("v2"), "223:0": []byte("x")})
			}},
			{"PutIdentity", func() error { return d.Identities.PutIdentity(ctx, "222:0", [32]byte{1}) }},
			{"GetOrGenPreKeys", func() error { _, err := d.PreKeys.GetOrGenPreKeys(ctx, 2); return err }},
			{"PutDevice", func() error { return d.Save(ctx) }},
			{"PutLIDMapping", func() error { return d.LIDs.PutLIDMapping(ctx, lidJID("9", 0), pn("222", 0)) }},
			{"PutPushName", func() error { _, _, err := d.Contacts.PutPushName(ctx, pn("222", 0), "x"); return err }},
			{"DoDecryptionTxn", func() error {
				return d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
					if err := d.Sessions.PutSession(ctx, "222:0", []byte("v2")); err != nil {
						return err
					}
					return d.EventBuffer.PutBufferedEvent(ctx, [32]byte{7}, []byte("pt"), time.Now())
				})
			}},
			{"Wipe", func() error { return old.Wipe(ctx) }},
		}
		for _, w := range writes {
			if err := w.fn(); !errors.Is(err, storage.ErrFenced) {
				t.Errorf("%s with stale token = %v, want ErrFenced", w.name, err)
			}
		}
		select {
		case <-old.Fenced():
		default:
			t.Error("Fenced() not closed after fenced writes")
		}
		if v, err := d.Sessions.GetSession(ctx, "222:0"); err != nil || string(v) != "v1" {
			t.Errorf("session after fenced writes = %q, %v; want v1", v, err)
		}
		if ev, _ := d.EventBuffer.GetBufferedEvent(ctx, [32]byte{7}); ev != nil {
			t.Error("buffered event of a fenced txn landed")
		}
		if _, err := st.Get(ctx, "alice", storage.NSCreds, storage.CredsKey); err != nil {
			t.Errorf("creds after fenced Wipe: %v", err)
		}
		if info, _ := d.Contacts.GetContact(ctx, pn("222", 0)); info.Found {
			t.Error("fenced PutPushName reached the contact cache")
		}

		nc, err := New(st, "alice", tok+1, nil)
		must(t, err)
		if nc.Token() != tok+1 {
			t.Fatalf("Token() = %d", nc.Token())
		}
		nd, err := nc.GetDevice(ctx)
		must(t, err)
		must(t, nd.Sessions.PutSession(ctx, "222:0", []byte("v3")))
		if v, _ := d.Sessions.GetSession(ctx, "222:0"); string(v) != "v3" {
			t.Errorf("new owner's write not visible: %q", v)
		}
	})
}
