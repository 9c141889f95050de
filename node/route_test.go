package node

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// blockingOwners never answers until the context ends (etcd unreachable).
type blockingOwners struct{}

func (blockingOwners) Owner(ctx context.Context, profile string) (string, uint64, error) {
	<-ctx.Done()
	return "", 0, ctx.Err()
}

// TestRouterOwnerLookupBounded: a node that cannot reach etcd answers a
// profile command with 503 within the lookup bound, instead of holding the
// request (found by chaos TestChaosPartition: calls to the node cut from
// etcd hung until the client's 20 s timeout).
func TestRouterOwnerLookupBounded(t *testing.T) {
	rt := &router{self: "n1", next: http.NotFoundHandler(), owners: blockingOwners{}}
	req := httptest.NewRequest(http.MethodPost, "/v1/profiles/alice/messages", nil)
	rec := httptest.NewRecorder()
	start := time.Now()
	rt.ServeHTTP(rec, req)
	took := time.Since(start)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", rec.Code, rec.Body)
	}
	if took < ownerLookupTimeout-100*time.Millisecond || took > ownerLookupTimeout+2*time.Second {
		t.Fatalf("answered after %s, want about %s", took, ownerLookupTimeout)
	}
}
