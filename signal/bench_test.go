package signal

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // sqlstore baseline
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
)

// The benchmarks compare this package on each real adapter with whatsmeow's
// own sqlstore on SQLite (WAL, one file in a temp dir), in the same run.
// Sub-benchmarks are named <op>/<variant> with variant sqlstore (the
// baseline of internal/benchreport), sqlstore_fsync, bolt or redis.
//
//	go test -run '^$' -bench . -benchtime 2000x ./signal/

// sessionSize approximates a serialized whatsmeow session record (current
// state plus a few archived ones).
const sessionSize = 2048

type benchVariant struct {
	name   string
	device func(b *testing.B) *store.Device
}

func benchVariants() []benchVariant {
	vs := []benchVariant{
		{name: "sqlstore", device: func(b *testing.B) *store.Device { return sqlstoreDevice(b, "") }},
		// The same with an fsync per commit, the durability bolt gives.
		{name: "sqlstore_fsync", device: func(b *testing.B) *store.Device { return sqlstoreDevice(b, "&_synchronous=FULL") }},
	}
	for _, mk := range backendMakers {
		vs = append(vs, benchVariant{name: mk.name, device: func(b *testing.B) *store.Device {
			be := mk.make(b)
			return pairedDevice(b, newContainer(b, openStore(b, be), "bench"), "100")
		}})
	}
	return vs
}

// sqlstoreDevice returns a paired device of whatsmeow's sqlstore on a fresh
// SQLite file in WAL mode. go-sqlite3's default synchronous=NORMAL does not
// fsync on commit in WAL mode; extraDSN may change that.
func sqlstoreDevice(b *testing.B, extraDSN string) *store.Device {
	b.Helper()
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "whatsmeow.db")
	c, err := sqlstore.New(ctx, "sqlite3", "file:"+path+"?_foreign_keys=on&_journal_mode=WAL"+extraDSN, nil)
	if err != nil {
		b.Fatalf("sqlstore.New: %v", err)
	}
	b.Cleanup(func() { _ = c.Close() })
	d := c.NewDevice()
	jid := types.JID{User: "100", Device: 1, Server: types.DefaultUserServer}
	d.ID = &jid
	// sqlstore requires the account columns (NOT NULL).
	d.Account = &waAdv.ADVSignedDeviceIdentity{
		Details:             []byte("details"),
		AccountSignatureKey: make([]byte, 32),
		AccountSignature:    make([]byte, 64),
		DeviceSignature:     make([]byte, 64),
	}
	if err := d.Save(ctx); err != nil {
		b.Fatalf("sqlstore Save: %v", err)
	}
	return d
}

func randomBytes(n int) []byte {
	v := make([]byte, n)
	_, _ = rand.Read(v)
	return v
}

func runVariants(b *testing.B, fn func(b *testing.B, d *store.Device)) {
	for _, v := range benchVariants() {
		b.Run(v.name, func(b *testing.B) {
			d := v.device(b)
			b.ReportAllocs()
			b.ResetTimer()
			fn(b, d)
		})
	}
}

// BenchmarkSessionPut stores one session record per op (the ratchet advance
// of an outgoing message).
func BenchmarkSessionPut(b *testing.B) {
	sess := randomBytes(sessionSize)
	runVariants(b, func(b *testing.B, d *store.Device) {
		ctx := context.Background()
		for i := 0; i < b.N; i++ {
			if err := d.Sessions.PutSession(ctx, fmt.Sprintf("%d:0", i%50), sess); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSessionGet loads one session record per op.
func BenchmarkSessionGet(b *testing.B) {
	sess := randomBytes(sessionSize)
	runVariants(b, func(b *testing.B, d *store.Device) {
		ctx := context.Background()
		b.StopTimer()
		for i := 0; i < 50; i++ {
			must(b, d.Sessions.PutSession(ctx, fmt.Sprintf("%d:0", i), sess))
		}
		b.StartTimer()
		for i := 0; i < b.N; i++ {
			v, err := d.Sessions.GetSession(ctx, fmt.Sprintf("%d:0", i%50))
			if err != nil || len(v) != sessionSize {
				b.Fatalf("GetSession = %d bytes, %v", len(v), err)
			}
		}
	})
}

// BenchmarkGetManySessions100 prefetches 100 sessions per op, as whatsmeow
// does before encrypting a message to a group of 100 devices.
func BenchmarkGetManySessions100(b *testing.B) {
	sess := randomBytes(sessionSize)
	addrs := make([]string, 100)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("%d:%d", 1000+i/4, i%4)
	}
	runVariants(b, func(b *testing.B, d *store.Device) {
		ctx := context.Background()
		b.StopTimer()
		all := make(map[string][]byte, len(addrs))
		for _, a := range addrs {
			all[a] = sess
		}
		must(b, d.Sessions.PutManySessions(ctx, all))
		b.StartTimer()
		for i := 0; i < b.N; i++ {
			m, err := d.Sessions.GetManySessions(ctx, addrs)
			if err != nil || len(m) != len(addrs) || len(m[addrs[99]]) != sessionSize {
				b.Fatalf("GetManySessions = %d entries, %v", len(m), err)
			}
		}
	})
}

// BenchmarkDecryptTxn is one incoming message's store work: a decryption
// transaction that buffers the plaintext and stores the advanced ratchet,
// committed atomically.
func BenchmarkDecryptTxn(b *testing.B) {
	sess := randomBytes(sessionSize)
	plaintext := randomBytes(256)
	runVariants(b, func(b *testing.B, d *store.Device) {
		ctx := context.Background()
		now := time.Now()
		for i := 0; i < b.N; i++ {
			var hash [32]byte
			copy(hash[:], fmt.Sprintf("bench-%d-%d", b.N, i))
			err := d.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
				if err := d.EventBuffer.PutBufferedEvent(ctx, hash, plaintext, now); err != nil {
					return err
				}
				return d.Sessions.PutSession(ctx, fmt.Sprintf("%d:0", i%50), sess)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
