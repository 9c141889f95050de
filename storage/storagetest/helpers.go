package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/amarula/amarula/storage"
)

// tok is the token the suite writes with unless a test is about fencing.
const tok storage.Token = 1

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, s storage.Store, profile, ns, key, value string) {
	t.Helper()
	if err := s.Put(ctxT(t), profile, tok, ns, key, []byte(value)); err != nil {
		t.Fatalf("Put(%s, %s, %s): %v", profile, ns, key, err)
	}
}

func mustAppend(t *testing.T, s storage.Store, profile, typ, data string) string {
	t.Helper()
	c, err := s.Append(ctxT(t), profile, tok, typ, []byte(data))
	if err != nil {
		t.Fatalf("Append(%s, %s): %v", profile, typ, err)
	}
	if c == "" || c == "0" {
		t.Fatalf("Append(%s, %s) returned cursor %q", profile, typ, c)
	}
	return c
}

// wantValue asserts that profile/ns/key holds value.
func wantValue(t *testing.T, s storage.Store, profile, ns, key, value string) {
	t.Helper()
	got, err := s.Get(ctxT(t), profile, ns, key)
	if err != nil {
		t.Fatalf("Get(%s, %s, %s): %v, want %q", profile, ns, key, err, value)
	}
	if string(got) != value {
		t.Fatalf("Get(%s, %s, %s) = %q, want %q", profile, ns, key, got, value)
	}
}

// wantMiss asserts that profile/ns/key is absent.
func wantMiss(t *testing.T, s storage.Store, profile, ns, key string) {
	t.Helper()
	got, err := s.Get(ctxT(t), profile, ns, key)
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get(%s, %s, %s) = %q, %v; want ErrNotFound", profile, ns, key, got, err)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

// readAll reads the whole retained log of profile with small pages so that
// paging is exercised too.
func readAll(t *testing.T, s storage.Store, profile string) []storage.Event {
	t.Helper()
	var all []storage.Event
	after := ""
	for i := 0; i < 100_000; i++ {
		page, err := s.Read(ctxT(t), profile, after, 7)
		if err != nil {
			t.Fatalf("Read(%s, %q): %v", profile, after, err)
		}
		if len(page) > 7 {
			t.Fatalf("Read(%s, %q, 7) returned %d events", profile, after, len(page))
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Cursor
	}
	t.Fatalf("Read(%s) never reached the end of the log", profile)
	return nil
}

func eventDatas(evs []storage.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Data)
	}
	return out
}

func cursors(evs []storage.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Cursor
	}
	return out
}

func sortedProfiles(t *testing.T, s storage.Store) []string {
	t.Helper()
	ps, err := s.ListProfiles(ctxT(t))
	if err != nil {
		t.Fatalf("ListProfiles: %v", err)
	}
	ps = append([]string{}, ps...)
	sort.Strings(ps)
	return ps
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// snapshot captures everything a profile holds in the namespaces given, its
// event log and the cursors of the consumers given, so that a test can
// prove nothing changed.
type snapshot struct {
	kv      map[string]string
	events  []string
	cursors map[string]string
	fence   storage.Token
}

func takeSnapshot(t *testing.T, s storage.Store, profile string, nss, consumers []string) snapshot {
	t.Helper()
	snap := snapshot{kv: map[string]string{}, cursors: map[string]string{}}
	for _, ns := range nss {
		kvs, err := s.Scan(ctxT(t), profile, ns, "")
		if err != nil {
			t.Fatalf("Scan(%s, %s): %v", profile, ns, err)
		}
		for _, kv := range kvs {
			snap.kv[ns+"/"+kv.Key] = string(kv.Value)
		}
	}
	for _, e := range readAll(t, s, profile) {
		snap.events = append(snap.events, e.Cursor+"="+e.Type+":"+string(e.Data))
	}
	for _, c := range consumers {
		cur, err := s.Cursor(ctxT(t), profile, c)
		if err != nil {
			t.Fatalf("Cursor(%s, %s): %v", profile, c, err)
		}
		snap.cursors[c] = cur
	}
	f, err := s.Fence(ctxT(t), profile)
	if err != nil {
		t.Fatalf("Fence(%s): %v", profile, err)
	}
	snap.fence = f
	return snap
}

func (a snapshot) diff(b snapshot) string {
	var d []string
	for k, v := range a.kv {
		if w, ok := b.kv[k]; !ok || w != v {
			d = append(d, fmt.Sprintf("kv %s: %q -> %q (present %v)", k, v, w, ok))
		}
	}
	for k, v := range b.kv {
		if _, ok := a.kv[k]; !ok {
			d = append(d, fmt.Sprintf("kv %s: appeared as %q", k, v))
		}
	}
	if !equalStrings(a.events, b.events) {
		d = append(d, fmt.Sprintf("events %v -> %v", a.events, b.events))
	}
	for k, v := range a.cursors {
		if b.cursors[k] != v {
			d = append(d, fmt.Sprintf("cursor %s: %q -> %q", k, v, b.cursors[k]))
		}
	}
	if a.fence != b.fence {
		d = append(d, fmt.Sprintf("fence %d -> %d", a.fence, b.fence))
	}
	sort.Strings(d)
	return strings.Join(d, "; ")
}

func bytesEqual(a []byte, b string) bool { return bytes.Equal(a, []byte(b)) }

// waitResult waits for a result from ch or fails after d.
func waitResult[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: no result after %s", what, d)
		var zero T
		return zero
	}
}
