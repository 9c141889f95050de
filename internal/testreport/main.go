// Command testreport reads `go test -json` output on stdin, echoes the
// human-readable test output, and closes with one summary line
// ("N passed, N failed, N skipped") plus the list of skipped and failed
// tests. It exits non-zero if any test or package failed, or if
// -max-skips is exceeded.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type summary struct {
	passed, failed, skipped int
	failedPkgs              []string
	failedTests             []string
	skips                   map[string]string // test -> reason line
	buildFailures           []string
}

func main() {
	maxSkips := flag.Int("max-skips", -1, "fail when more tests than this were skipped (-1: no limit)")
	quiet := flag.Bool("quiet", false, "print only failing tests' output and the summary")
	flag.Parse()
	s := run(os.Stdin, os.Stdout, *quiet)
	code := report(os.Stdout, s)
	if *maxSkips >= 0 && s.skipped > *maxSkips {
		fmt.Printf("testreport: %d tests skipped, more than the %d allowed\n", s.skipped, *maxSkips)
		code = 1
	}
	os.Exit(code)
}

func run(in io.Reader, out io.Writer, quiet bool) *summary {
	s := &summary{skips: map[string]string{}}
	outputs := map[string][]string{} // pkg/test -> buffered output (quiet mode)
	lastLine := map[string]string{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Build errors and other non-JSON lines go straight through.
			fmt.Fprintln(out, string(line))
			if strings.Contains(string(line), "[build failed]") || strings.HasPrefix(string(line), "#") {
				s.buildFailures = append(s.buildFailures, string(line))
			}
			continue
		}
		id := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			if quiet {
				outputs[id] = append(outputs[id], e.Output)
			} else {
				fmt.Fprint(out, e.Output)
			}
			if t := strings.TrimSpace(e.Output); t != "" && !strings.HasPrefix(t, "---") && !strings.HasPrefix(t, "===") {
				lastLine[id] = t
			}
		case "pass":
			if e.Test != "" {
				s.passed++
			}
			delete(outputs, id)
		case "skip":
			if e.Test != "" {
				s.skipped++
				s.skips[id] = lastLine[id]
			}
			delete(outputs, id)
		case "fail":
			if e.Test != "" {
				s.failed++
				s.failedTests = append(s.failedTests, id)
			} else {
				s.failedPkgs = append(s.failedPkgs, e.Package)
			}
			if quiet {
				for _, o := range outputs[id] {
					fmt.Fprint(out, o)
				}
			}
			delete(outputs, id)
		}
	}
	return s
}

func report(out io.Writer, s *summary) int {
	fmt.Fprintln(out)
	if len(s.skips) > 0 {
		fmt.Fprintf(out, "skipped tests (%d):\n", len(s.skips))
		keys := make([]string, 0, len(s.skips))
		for k := range s.skips {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(out, "  SKIP %s: %s\n", k, s.skips[k])
		}
	}
	for _, t := range s.failedTests {
		fmt.Fprintf(out, "  FAIL %s\n", t)
	}
	for _, p := range s.failedPkgs {
		fmt.Fprintf(out, "  FAIL package %s\n", p)
	}
	fmt.Fprintf(out, "%d passed, %d failed, %d skipped\n", s.passed, s.failed, s.skipped)
	if s.failed > 0 || len(s.failedPkgs) > 0 || len(s.buildFailures) > 0 {
		return 1
	}
	return 0
}
