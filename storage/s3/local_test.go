package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestLocalConformance runs the shared suite against the directory store.
func TestLocalConformance(t *testing.T) {
	dir := t.TempDir()
	l, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	testObjects(t, harness{
		store: l,
		corrupt: func(t *testing.T, key string) {
			d, base := l.paths(key)
			var sc sidecar
			b, err := os.ReadFile(filepath.Join(d, base+metaSuffix))
			if err != nil || json.Unmarshal(b, &sc) != nil {
				t.Fatalf("sidecar: %v", err)
			}
			flipFirstByte(t, filepath.Join(d, sc.Blob))
		},
	})
	// Nothing the suite did may have escaped the directory or left
	// temporary files behind.
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
	if entries, _ := os.ReadDir(filepath.Dir(dir)); len(entries) != 1 {
		t.Errorf("files outside the store's directory: %v", entries)
	}
}

// TestLocalConcurrentOverwrite proves concurrent Puts of one key leave one
// consistent object (one of the inputs, verified) and exactly one blob.
func TestLocalConcurrentOverwrite(t *testing.T) {
	l, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	inputs := map[string][]byte{}
	var wg sync.WaitGroup
	for i := range 8 {
		data := randBytes(50_000+i, uint64(i))
		inputs[sha256Hex(data)] = data
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if _, err := l.Put(ctx, "race/key", bytes.NewReader(data), -1, "", ""); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got, info := getAll(t, l, "race/key", nil)
	if want, ok := inputs[info.SHA256]; !ok || !bytes.Equal(got, want) {
		t.Fatalf("final object is none of the inputs (sha %s)", info.SHA256)
	}
	d, base := l.paths("race/key")
	blobs, _ := filepath.Glob(filepath.Join(d, base+blobSep+"*"))
	if len(blobs) != 1 {
		t.Fatalf("%d blobs left for one key, want 1: %v", len(blobs), blobs)
	}
}

// TestLocalOrphanSwept proves a blob left by a crash before commit is
// removed by the next Put of that key and never served.
func TestLocalOrphanSwept(t *testing.T) {
	l, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, base := l.paths("media/p/m1")
	if err := os.MkdirAll(d, 0o750); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(d, base+blobSep+"deadbeef")
	if err := os.WriteFile(orphan, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Stat(ctx, "media/p/m1"); err == nil {
		t.Fatal("an orphan blob without sidecar is visible")
	}
	if _, err := l.Put(ctx, "media/p/m1", strings.NewReader("final"), 5, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatalf("orphan not swept: %v", err)
	}
	if got, _ := getAll(t, l, "media/p/m1", nil); string(got) != "final" {
		t.Fatalf("got %q", got)
	}
}

func TestOpenSelectsImplementation(t *testing.T) {
	o, err := Open(context.Background(), Config{LocalDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := o.(*Local); !ok {
		t.Fatalf("Open without bucket = %T, want *Local", o)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), Config{Endpoint: "http://x"}); err == nil {
		t.Fatal("endpoint without bucket accepted")
	}
	if _, err := Open(context.Background(), Config{}); err == nil {
		t.Fatal("no bucket and no local dir accepted")
	}
}

// TestLocalFileAndDirKeys proves "a" and "a/b" coexist as on AWS S3 (the
// layout's suffixes keep file and directory names apart).
func TestLocalFileAndDirKeys(t *testing.T) {
	l, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, k := range []string{"a", "a/b", "a.d", "a/b.meta"} {
		if _, err := l.Put(ctx, k, strings.NewReader("v:"+k), -1, "", ""); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	for _, k := range []string{"a", "a/b", "a.d", "a/b.meta"} {
		if got, _ := getAll(t, l, k, nil); string(got) != "v:"+k {
			t.Fatalf("%s = %q", k, got)
		}
	}
}

// FuzzValidateKey: whatever a key is made of (message ids come from the
// network), an accepted key maps to a path inside the store's directory and
// back to itself, and a rejected one is ErrInvalidKey.
func FuzzValidateKey(f *testing.F) {
	for _, k := range []string{"media/alice/3EB0C431C26A1916E07A", "../x", "a/./b", "a//b", "a.d/b.meta", "x~y", "h=ab/c"} {
		f.Add(k)
	}
	l := &Local{dir: "/srv/amarula/media"}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v", key, err)
			}
			return
		}
		dir, base := l.paths(key)
		meta := filepath.Join(dir, base+metaSuffix)
		if !strings.HasPrefix(meta, l.dir+string(filepath.Separator)) || filepath.Clean(meta) != meta {
			t.Fatalf("key %q maps outside the directory: %s", key, meta)
		}
		if back, ok := l.keyOf(meta); !ok || back != key {
			t.Fatalf("key %q maps back to %q (%v)", key, back, ok)
		}
	})
}
