//go:build e2e_pending

package node

// Pending: fails under the race detector today. Run with
// go test -race -tags e2e_pending -run TestE2ERepeatedShutdown ./node/

import "testing"

// TestE2ERepeatedShutdown starts and stops a node many times. Under -race
// it reports a data race inside memberlist: Membership.Leave (from
// Reconciler.Drain) calls SetMeta(Draining), which wakes the metadata
// publisher goroutine, and then calls PublishMeta itself, so two
// memberlist.UpdateNode calls run at once. UpdateNode reads the local node
// state after releasing nodeLock (memberlist.go:532-533) while the other
// call's aliveNode writes it (state.go:1134-1135). memberlist does not allow
// concurrent UpdateNode calls, so cluster.Membership.PublishMeta must
// serialise them (a mutex around m.ml.UpdateNode). The same race fails
// `go test -race ./node/` now and then (seen in TestHealthReadyMetrics and
// TestGeneratedAdminKeyKeptAcrossRestarts, about 1 run in 8).
func TestE2ERepeatedShutdown(t *testing.T) {
	for range 60 {
		_, stop := startMain(t, nil)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}
