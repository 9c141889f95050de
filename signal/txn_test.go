package signal

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/store"
)

var errBoom = errors.New("boom")

// TestDecryptionTxn: inside DoDecryptionTxn every store call reads its own
// writes (point reads, GetMany, prefix scans, cached stores), nothing is
// visible outside before commit, everything lands on success, and nothing
// at all — storage or caches — on error, also when the error comes from a
// nested call.
func TestDecryptionTxn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		st := openStore(t, be)
		c := newContainer(t, st, "alice")
		d := pairedDevice(t, c, "100")
		ctx := ctxT(t)
		hash := func(i int) [32]byte { return [32]byte{byte(i)} }

		// txWork performs a decryption's worth of writes for round i and
		// checks read-your-writes inside the transaction.
		txWork := func(ctx context.Context, i int) error {
			addr := fmt.Sprintf("%d:0", 200+i)
			steps := []struct {
				name string
				fn   func() error
			}{
				{"PutSession", func() error { return d.Sessions.PutSession(ctx, addr, []byte("ratchet")) }},
				{"GetSession sees it", func() error {
					v, err := d.Sessions.GetSession(ctx, addr)
					if err == nil && string(v) != "ratchet" {
						err = fmt.Errorf("got %q", v)
					}
					return err
				}},
				{"GetManySessions sees it", func() error {
					m, err := d.Sessions.GetManySessions(ctx, []string{addr, "1:0"})
					if err == nil && (string(m[addr]) != "ratchet" || m["1:0"] != nil) {
						err = fmt.Errorf("got %q", m)
					}
					return err
				}},
				{"DeleteAllSessions sees tx writes", func() error {
					other := fmt.Sprintf("%d:7", 300+i)
					if err := d.Sessions.PutSession(ctx, other, []byte("x")); err != nil {
						return err
					}
					if err := d.Sessions.DeleteAllSessions(ctx, strconv.Itoa(300+i)); err != nil {
						return err
					}
					if has, err := d.Sessions.HasSession(ctx, other); err != nil || has {
						return fmt.Errorf("still has %s: %v", other, err)
					}
					return nil
				}},
				{"PutIdentity", func() error { return d.Identities.PutIdentity(ctx, addr, [32]byte{9}) }},
				{"RemovePreKey", func() error { return d.PreKeys.RemovePreKey(ctx, 1) }},
				{"GetPreKey sees removal", func() error {
					if k, err := d.PreKeys.GetPreKey(ctx, 1); err != nil || k != nil {
						return fmt.Errorf("prekey 1 still there: %v", err)
					}
					return nil
				}},
				{"PutLIDMapping", func() error { return d.LIDs.PutLIDMapping(ctx, lidJID("9"+addr[:3], 0), pn(addr[:3], 0)) }},
				{"GetLIDForPN sees it", func() error {
					got, err := d.LIDs.GetLIDForPN(ctx, pn(addr[:3], 0))
					if err == nil && got.User != "9"+addr[:3] {
						err = fmt.Errorf("got %v", got)
					}
					return err
				}},
				{"PutPushName", func() error { _, _, err := d.Contacts.PutPushName(ctx, pn(addr[:3], 0), "Name"); return err }},
				{"GetContact sees it", func() error {
					info, err := d.Contacts.GetContact(ctx, pn(addr[:3], 0))
					if err == nil && info.PushName != "Name" {
						err = fmt.Errorf("got %+v", info)
					}
					return err
				}},
				{"PutBufferedEvent", func() error { return d.EventBuffer.PutBufferedEvent(ctx, hash(i), []byte("pt"), time.Now()) }},
				{"GetBufferedEvent sees it", func() error {
					ev, err := d.EventBuffer.GetBufferedEvent(ctx, hash(i))
					if err == nil && (ev == nil || string(ev.Plaintext) != "pt") {
						err = fmt.Errorf("got %+v", ev)
					}
					return err
				}},
				{"nothing visible outside yet", func() error {
					outside := context.Background()
					if has, err := d.Sessions.HasSession(outside, addr); err != nil || has {
						return fmt.Errorf("session visible outside the txn (%v)", err)
					}
					if ev, err := d.EventBuffer.GetBufferedEvent(outside, hash(i)); err != nil || ev != nil {
						return fmt.Errorf("buffered event visible outside the txn (%v)", err)
					}
					return nil
				}},
			}
			for _, s := range steps {
				if err := s.fn(); err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
			}
			return nil
		}

		// landed reports which effects of round i are visible, through d
		// (caches) and through a brand-new Container (storage only).
		landed := func(t *testing.T, i int, want bool) {
			t.Helper()
			addr := fmt.Sprintf("%d:0", 200+i)
			user := addr[:3]
			fresh, err := newContainer(t, st, "alice").GetDevice(ctx)
			must(t, err)
			for _, dev := range []*store.Device{d, fresh} {
				has, err := dev.Sessions.HasSession(ctx, addr)
				must(t, err)
				trusted, err := dev.Identities.IsTrustedIdentity(ctx, addr, [32]byte{1})
				must(t, err)
				ev, err := dev.EventBuffer.GetBufferedEvent(ctx, hash(i))
				must(t, err)
				lid, err := dev.LIDs.GetLIDForPN(ctx, pn(user, 0))
				must(t, err)
				info, err := dev.Contacts.GetContact(ctx, pn(user, 0))
				must(t, err)
				got := map[string]bool{
					"session":        has,
					"identity":       !trusted, // a stored {9} key makes {1} untrusted
					"buffered event": ev != nil,
					"lid mapping":    !lid.IsEmpty(),
					"contact":        info.Found,
				}
				for what, g := range got {
					if g != want {
						t.Errorf("round %d: %s landed = %v, want %v (container %p)", i, what, g, want, dev.Container)
					}
				}
			}
		}

		_, err := d.PreKeys.GetOrGenPreKeys(ctx, 1)
		must(t, err)
		prekeyPresent := func() bool {
			k, err := d.PreKeys.GetPreKey(ctx, 1)
			must(t, err)
			return k != nil
		}

		cases := []struct {
			name    string
			run     func(i int) error
			wantErr error
		}{
			{"error rolls back everything", func(i int) error {
				return d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
					if err := txWork(ctx, i); err != nil {
						return err
					}
					return errBoom
				})
			}, errBoom},
			{"nested error rolls back the outer", func(i int) error {
				return d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
					if err := d.Sessions.PutSession(ctx, fmt.Sprintf("%d:0", 200+i), []byte("outer")); err != nil {
						return err
					}
					return d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
						if err := txWork(ctx, i); err != nil {
							return err
						}
						return errBoom
					})
				})
			}, errBoom},
			{"outer error after nested success", func(i int) error {
				return d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
					if err := d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error { return txWork(ctx, i) }); err != nil {
						return err
					}
					return errBoom
				})
			}, errBoom},
			{"success commits everything", func(i int) error {
				return d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error { return txWork(ctx, i) })
			}, nil},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.run(i)
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
					t.Fatalf("DoDecryptionTxn = %v, want %v", err, tc.wantErr)
				}
				landed(t, i, tc.wantErr == nil)
				if got := prekeyPresent(); got != (tc.wantErr != nil) {
					t.Errorf("prekey 1 present = %v after %s", got, tc.name)
				}
			})
		}
	})
}

// TestMigrationInsideFailedTxn: a PN→LID migration inside a transaction that
// rolls back does not count as done, so it runs again afterwards.
func TestMigrationInsideFailedTxn(t *testing.T) {
	ctx := ctxT(t)
	st := boltStore(t)
	d := pairedDevice(t, newContainer(t, st, "alice"), "100")
	must(t, d.Sessions.PutSession(ctx, "111:0", []byte("s")))
	phone, lid := pn("111", 0), lidJID("999", 0)
	err := d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
		if err := d.Sessions.MigratePNToLID(ctx, phone, lid); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("DoDecryptionTxn = %v", err)
	}
	if has, _ := d.Sessions.HasSession(ctx, "111:0"); !has {
		t.Fatal("rolled-back migration moved the PN session")
	}
	must(t, d.Sessions.MigratePNToLID(ctx, phone, lid))
	if has, _ := d.Sessions.HasSession(ctx, "999_1:0"); !has {
		t.Fatal("migration after a rolled-back one did not run")
	}
}

// TestConcurrentDecryptionTxns: decryption transactions of one profile are
// serialised, so concurrent read-modify-write of the same ratchet loses no
// update (storage.Tx alone gives atomicity, not isolation).
func TestConcurrentDecryptionTxns(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, _, d := aliceOn(t, be)
		const workers, rounds = 4, 10
		var wg sync.WaitGroup
		errs := make(chan error, workers*rounds)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := 0; r < rounds; r++ {
					errs <- d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
						v, err := d.Sessions.GetSession(ctx, "ctr:0")
						if err != nil {
							return err
						}
						n, _ := strconv.Atoi(string(v))
						return d.Sessions.PutSession(ctx, "ctr:0", []byte(strconv.Itoa(n+1)))
					})
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			must(t, err)
		}
		v, err := d.Sessions.GetSession(ctx, "ctr:0")
		must(t, err)
		if string(v) != strconv.Itoa(workers*rounds) {
			t.Fatalf("counter = %s after %d serialised increments", v, workers*rounds)
		}
	})
}

// TestTxnIgnoresForeignContext: a ctx carrying another Container's
// transaction does not route this Container's writes into it.
func TestTxnIgnoresForeignContext(t *testing.T) {
	ctx := ctxT(t)
	st := boltStore(t)
	a := pairedDevice(t, newContainer(t, st, "alice"), "100")
	b := pairedDevice(t, newContainer(t, st, "bob"), "200")
	err := a.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
		if err := b.Sessions.PutSession(ctx, "1:0", []byte("bob's")); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatal(err)
	}
	if v, _ := b.Sessions.GetSession(ctx, "1:0"); string(v) != "bob's" {
		t.Fatalf("bob's write inside alice's failed txn = %q; want it written directly", v)
	}
	if v, _ := a.Sessions.GetSession(ctx, "1:0"); v != nil {
		t.Fatalf("bob's write landed in alice's profile: %q", v)
	}
}

// TestConcurrentStoreUse hammers one Container from several goroutines (run
// with -race): prekey ids stay unique, contact and LID caches stay
// consistent with storage.
func TestConcurrentStoreUse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx, _, d := aliceOn(t, be)
		const workers, rounds = 4, 5
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			ids = map[uint32]bool{}
		)
		errs := make(chan error, workers*rounds*3)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := 0; r < rounds; r++ {
					k, err := d.PreKeys.GenOnePreKey(ctx)
					if err == nil {
						mu.Lock()
						if ids[k.KeyID] {
							err = fmt.Errorf("prekey id %d handed out twice", k.KeyID)
						}
						ids[k.KeyID] = true
						mu.Unlock()
					}
					errs <- err
					user := strconv.Itoa(500 + r)
					_, _, err = d.Contacts.PutPushName(ctx, pn(user, 0), "name"+user)
					errs <- err
					errs <- d.LIDs.PutLIDMapping(ctx, lidJID("9"+user, 0), pn(user, 0))
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			must(t, err)
		}
		if len(ids) != workers*rounds {
			t.Fatalf("%d distinct prekey ids, want %d", len(ids), workers*rounds)
		}
		for id := uint32(1); id <= workers*rounds; id++ {
			if !ids[id] {
				t.Errorf("prekey id %d missing: ids are not dense", id)
			}
		}
		for r := 0; r < rounds; r++ {
			user := strconv.Itoa(500 + r)
			info, err := d.Contacts.GetContact(ctx, pn(user, 0))
			must(t, err)
			lid, err := d.LIDs.GetLIDForPN(ctx, pn(user, 0))
			must(t, err)
			if info.PushName != "name"+user || lid.User != "9"+user {
				t.Errorf("user %s: push name %q, lid %v", user, info.PushName, lid)
			}
		}
	})
}
