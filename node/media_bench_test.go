package node

import (
	"fmt"
	"testing"
	"time"
)

// mediaBatch files of mediaFileSize bytes are one op of BenchmarkGatewayMedia.
const (
	mediaBatch    = 8
	mediaFileSize = 4 << 20
)

// BenchmarkGatewayMedia measures media MB/s through one node end to end: a
// wasim phone sends documents to the linked profile; the node stores each
// message, its media worker downloads the file from wasim's CDN, decrypts
// it while streaming, verifies it and uploads it to S3 (versitygw), and
// commits media.stored. The clock runs from the first send to the last
// media.stored. wasim, its phone's encryption and the CDN run in the same
// process (and versitygw on the same machine), so the figure is a lower
// bound for the node. Memory per in-flight job is measured by the media
// package's own benchmark (docs/benchmarks-media.md).
func BenchmarkGatewayMedia(b *testing.B) {
	for _, k := range storeKinds {
		var env *mediaBenchEnv
		b.Run(k.name, func(sb *testing.B) {
			if env == nil {
				env = newMediaBenchEnv(parentTB{TB: sb, parent: b}, k)
			}
			env.run(sb)
		})
	}
}

type mediaBenchEnv struct {
	sim  *sim
	node *testNode
	data []byte
}

const mediaBenchProfile = "mediabench"

func newMediaBenchEnv(t testing.TB, k storeKind) *mediaBenchEnv {
	s, me := startSim(t), startMediaS3(t)
	n := startMediaNode(t, s, me, newBackend(t, k), mediaBenchProfile, nil)
	return &mediaBenchEnv{sim: s, node: n, data: randomFile("PK\x03\x04", mediaFileSize)}
}

// run sends b.N batches and waits until every file is stored.
func (e *mediaBenchEnv) run(b *testing.B) {
	c := e.node.api
	cursor := c.lastCursor(mediaBenchProfile)
	total := b.N * mediaBatch
	to := e.sim.own.JID()
	b.ResetTimer()
	start := time.Now()
	for i := range total {
		if _, err := e.sim.peer.SendMedia(to, "document", "application/zip", e.data, "", fmt.Sprintf("f%d.zip", i)); err != nil {
			b.Fatal(err)
		}
	}
	stored := 0
	deadline := time.Now().Add(5 * time.Minute)
	for stored < total {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d files stored within 5 min", stored, total)
		}
		for _, ev := range c.events(mediaBenchProfile, cursor) {
			cursor = ev.ID
			switch ev.Type {
			case "media.stored":
				stored++
			case "media.failed":
				b.Fatalf("media.failed: %s", ev.Data)
			}
		}
		if stored < total {
			time.Sleep(20 * time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(total*mediaFileSize)/1e6/elapsed.Seconds(), "MB/s")
	b.ReportMetric(float64(total)/elapsed.Seconds(), "files/s")
}
