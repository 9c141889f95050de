package s3

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amarula/amarula/internal/testenv"
)

func newTestS3(t *testing.T, env *testenv.S3, bucket string, create bool) (*S3, error) {
	t.Helper()
	s, err := New(context.Background(), Config{
		Endpoint: env.Endpoint, Bucket: bucket, AccessKey: env.AccessKey, SecretKey: env.SecretKey,
		PathStyle: true, CreateBucket: create, PartSize: MinPartSize,
	})
	if err == nil {
		t.Cleanup(func() { _ = s.Close() })
	}
	return s, err
}

// TestS3Conformance runs the shared suite against a real versitygw.
func TestS3Conformance(t *testing.T) {
	env := testenv.StartS3(t, "media")
	s, err := newTestS3(t, env, "media", false)
	if err != nil {
		t.Fatal(err)
	}
	testObjects(t, harness{
		store:   s,
		presign: true,
		corrupt: func(t *testing.T, key string) {
			// versitygw's posix backend keeps an object's bytes in a file
			// at <root>/<bucket>/<key>.
			flipFirstByte(t, filepath.Join(env.Root, "media", filepath.FromSlash(key)))
		},
	})
}

// TestS3Bucket proves New creates a missing bucket only when allowed, and
// refuses a part size S3 would reject.
func TestS3Bucket(t *testing.T) {
	env := testenv.StartS3(t)
	if _, err := newTestS3(t, env, "absent", false); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing bucket without CreateBucket: %v", err)
	}
	s, err := newTestS3(t, env, "created", true)
	if err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	if _, err := s.Put(context.Background(), "k", strings.NewReader("v"), 1, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(env.Root, "created", "k")); err != nil {
		t.Fatalf("object not in the created bucket: %v", err)
	}
	// Second start on an existing bucket with CreateBucket set is fine.
	if _, err := newTestS3(t, env, "created", true); err != nil {
		t.Fatal(err)
	}
	if _, err := New(context.Background(), Config{Endpoint: env.Endpoint, Bucket: "x", PartSize: 1 << 20}); err == nil {
		t.Fatal("part size below 5 MiB accepted")
	}
}

func flipFirstByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("corrupt: %v", err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
}

// TestS3DeletePrefixPages proves DeletePrefix follows list pagination
// (pages of 7 here instead of S3's 1000).
func TestS3DeletePrefixPages(t *testing.T) {
	env := testenv.StartS3(t, "media")
	s, err := newTestS3(t, env, "media", false)
	if err != nil {
		t.Fatal(err)
	}
	s.listPage = 7
	ctx := context.Background()
	for i := range 30 {
		if _, err := s.Put(ctx, fmt.Sprintf("media/alice/%02d", i), strings.NewReader("x"), 1, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, "media/bob/1", strings.NewReader("y"), 1, "", ""); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeletePrefix(ctx, "media/alice/")
	if err != nil || n != 30 {
		t.Fatalf("DeletePrefix = %d, %v; want 30", n, err)
	}
	if _, err := s.Stat(ctx, "media/alice/29"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("last page survived: %v", err)
	}
	if _, err := s.Stat(ctx, "media/bob/1"); err != nil {
		t.Fatalf("neighbour deleted: %v", err)
	}
}
