package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRatiosAgainstBaseline(t *testing.T) {
	in := `goos: linux
pkg: github.com/amarula/amarula/signal
BenchmarkSessionPut/sqlstore-2         	    2000	     40000 ns/op	     512 B/op	       9 allocs/op
BenchmarkSessionPut/bolt-2             	    2000	     20000 ns/op
BenchmarkSessionPut/redis-2            	    2000	     80000 ns/op
BenchmarkOther-2                       	    100	     1000 ns/op	  5.00 MB/s
PASS`
	rs := parse(strings.NewReader(in))
	if len(rs) != 4 {
		t.Fatalf("parsed %d results", len(rs))
	}
	var out bytes.Buffer
	write(&out, rs, "sqlstore", "t")
	s := out.String()
	for _, want := range []string{"| BenchmarkSessionPut/bolt | 20000 | 50000 | 2.00x |", "| BenchmarkSessionPut/redis | 80000 | 12500 | 0.50x |",
		"| BenchmarkSessionPut/sqlstore | 40000 | 25000 | 1.00x | 512 B/op, 9 allocs/op |", "| BenchmarkOther | 1000 | 1000000 |  | 5.00 MB/s |"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
}

func TestNoBaselineNoRatioColumn(t *testing.T) {
	rs := parse(strings.NewReader("pkg: x\nBenchmarkA/bolt-2  10  500 ns/op  3.0 msgs/s\n"))
	var out bytes.Buffer
	write(&out, rs, "sqlstore", "")
	if s := out.String(); strings.Contains(s, "vs sqlstore") || !strings.Contains(s, "| BenchmarkA/bolt | 500 | 2000000 | 3.0 msgs/s |") {
		t.Fatalf("got\n%s", s)
	}
}
