package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/catalog"
)

// hangingProfiles is a catalogue whose reads hang until the caller gives up
// (etcd cut off).
type hangingProfiles struct{ api.Profiles }

func (hangingProfiles) Get(ctx context.Context, id string) (catalog.Profile, error) {
	<-ctx.Done()
	return catalog.Profile{}, ctx.Err()
}

// TestCatalogReadIsBounded: a profile route whose catalogue read hangs
// answers 503 by itself instead of holding the request forever.
func TestCatalogReadIsBounded(t *testing.T) {
	srv, err := api.New(api.Config{AdminKey: adminKey, Profiles: hangingProfiles{}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	req := httptest.NewRequest(http.MethodGet, "/v1/profiles/alice/messages", nil)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req) // the request's own context never ends
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"timeout"`) {
		t.Fatalf("hanging catalogue: %d %s", rec.Code, rec.Body.String())
	}
}
