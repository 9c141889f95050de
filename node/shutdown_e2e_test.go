package node

import "testing"

// TestE2ERepeatedShutdown starts and stops a node many times. It guards a
// data race that -race reported inside memberlist: Membership.Leave (from
// Reconciler.Drain) sets Draining, which wakes the metadata publisher, and
// then calls PublishMeta itself, so two memberlist.UpdateNode calls ran at
// once (memberlist reads the local node state after releasing its lock,
// memberlist.go:532-533, while the other call's aliveNode writes it,
// state.go:1134-1135). cluster.Membership.PublishMeta now serialises them;
// before that this test failed under -race every time.
func TestE2ERepeatedShutdown(t *testing.T) {
	for range 30 {
		_, stop := startMain(t, nil)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}
