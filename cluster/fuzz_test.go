package cluster

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// FuzzNodeMeta: a peer's gossiped metadata is untrusted input. Recording
// a node with any metadata never panics, and an unparseable one makes the
// member ineligible (LeaseOK false) instead of eligible by accident.
func FuzzNodeMeta(f *testing.F) {
	good, _ := json.Marshal(Meta{API: "http://n1:8080", LeaseID: 7, LeaseOK: true, Load: 3, Version: "v1"})
	f.Add(good)
	f.Add([]byte(`{"ok":true,"drain":true}`))
	f.Add([]byte(`{"ok":"yes"}`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, meta []byte) {
		m := &Membership{cfg: DefaultConfig("self").withDefaults(), changes: make(chan struct{}, 1),
			nodes: map[string]Member{}, leaving: map[string]time.Time{}}
		(*events)(m).NotifyJoin(&memberlist.Node{Name: "peer", Meta: meta})
		var parsed Meta
		if json.Unmarshal(meta, &parsed) != nil {
			for _, mem := range m.Members() {
				if mem.Eligible() {
					t.Fatalf("unparseable meta %q made %s eligible", meta, mem.Name)
				}
			}
		}
		(*events)(m).NotifyLeave(&memberlist.Node{Name: "peer", Meta: meta})
		if ms := m.Members(); len(ms) == 1 && ms[0].Eligible() {
			t.Fatalf("a departed member is eligible: %+v", ms[0])
		}
	})
}
