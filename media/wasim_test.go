package media

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/wasim/mediastore"
)

// TestCDNAgainstWasim proves media.CDN speaks the download protocol of
// wasim's media store (URL shape, hash and mms-type parameters), maps its
// expiry to ErrExpired, and follows a re-upload's new direct path.
func TestCDNAgainstWasim(t *testing.T) {
	store := mediastore.New(mediastore.Config{})
	srv := httptest.NewServer(store.Handler())
	defer srv.Close()
	cdn := &CDN{Client: srv.Client(), Scheme: "http", Hosts: func(context.Context) ([]string, error) {
		return []string{strings.TrimPrefix(srv.URL, "http://")}, nil
	}}
	ctx := context.Background()
	for _, kind := range []string{"image", "video", "audio", "document"} {
		plain := randBytes(200_000+len(kind), uint64(len(kind)))
		key := mediaKey(uint64(len(kind)))
		var enc bytes.Buffer
		res, err := Encrypt(&enc, bytes.NewReader(plain), key, kind)
		if err != nil {
			t.Fatal(err)
		}
		_, mms, _ := kindInfo(kind)
		up, err := store.Put(mms, enc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		md := msgstore.Media{Kind: kind, DirectPath: up.DirectPath, MediaKey: key, FileEncSHA256: res.FileEncSHA256}
		if got := download(t, cdn, md); !bytes.Equal(got, plain) {
			t.Fatalf("%s: downloaded %d bytes differ from the %d uploaded", kind, len(got), len(plain))
		}
		if err := store.Expire(up.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := cdn.Download(ctx, md); !errors.Is(err, ErrExpired) {
			t.Fatalf("%s: download of an expired blob: %v, want ErrExpired", kind, err)
		}
		again, err := store.Reupload(up.ID)
		if err != nil {
			t.Fatal(err)
		}
		md.DirectPath = again.DirectPath
		if got := download(t, cdn, md); !bytes.Equal(got, plain) {
			t.Fatalf("%s: re-uploaded copy differs", kind)
		}
	}
}

func download(t *testing.T, cdn *CDN, md msgstore.Media) []byte {
	t.Helper()
	rc, err := cdn.Download(context.Background(), md)
	if err != nil {
		t.Fatalf("download %s: %v", md.DirectPath, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", md.DirectPath, err)
	}
	return b
}
