// Command benchreport turns `go test -bench` output (stdin) into a Markdown
// table. Sub-benchmarks of one benchmark are compared with the sub-benchmark
// named by -baseline (e.g. BenchmarkSessionPut/sqlstore): the table shows
// ns/op, ops/s and the speed ratio against that baseline, measured in the
// same run. Custom metrics reported with b.ReportMetric are kept.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

type result struct {
	pkg, name, group, variant string
	nsPerOp                   float64
	extra                     []string
}

var lineRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([\d.]+) ns/op(.*)$`)

func main() {
	baseline := flag.String("baseline", "sqlstore", "variant name that ratios are computed against")
	title := flag.String("title", "", "section title")
	flag.Parse()
	rs := parse(os.Stdin)
	write(os.Stdout, rs, *baseline, *title)
}

func parse(in io.Reader) []result {
	var rs []result
	pkg := ""
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "pkg: ") {
			pkg = strings.TrimPrefix(line, "pkg: ")
			continue
		}
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ns, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		r := result{pkg: pkg, name: m[1], nsPerOp: ns}
		if i := strings.Index(r.name, "/"); i >= 0 {
			r.group, r.variant = r.name[:i], r.name[i+1:]
		} else {
			r.group = r.name
		}
		for _, f := range splitMetrics(m[4]) {
			r.extra = append(r.extra, f)
		}
		rs = append(rs, r)
	}
	return rs
}

// splitMetrics turns "  123 B/op  4 allocs/op  5.0 MB/s" into
// ["123 B/op", "4 allocs/op", "5.0 MB/s"].
func splitMetrics(s string) []string {
	f := strings.Fields(s)
	var out []string
	for i := 0; i+1 < len(f); i += 2 {
		out = append(out, f[i]+" "+f[i+1])
	}
	return out
}

func write(w io.Writer, rs []result, baseline, title string) {
	if title != "" {
		fmt.Fprintf(w, "### %s\n\n", title)
	}
	if len(rs) == 0 {
		fmt.Fprintln(w, "_no benchmark results_")
		return
	}
	base := map[string]float64{}
	for _, r := range rs {
		if r.variant == baseline || strings.HasPrefix(r.variant, baseline+"/") {
			base[r.pkg+" "+r.group+strings.TrimPrefix(r.variant, baseline)] = r.nsPerOp
		}
	}
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].pkg+rs[i].name < rs[j].pkg+rs[j].name })
	if len(base) == 0 {
		// No baseline in this suite: no ratio column.
		fmt.Fprintf(w, "| benchmark | ns/op | ops/s | metrics |\n|---|---:|---:|---|\n")
		for _, r := range rs {
			fmt.Fprintf(w, "| %s | %.0f | %.0f | %s |\n", r.name, r.nsPerOp, 1e9/r.nsPerOp, strings.Join(r.extra, ", "))
		}
		fmt.Fprintln(w)
		return
	}
	fmt.Fprintf(w, "| benchmark | ns/op | ops/s | vs %s | other metrics |\n|---|---:|---:|---:|---|\n", baseline)
	for _, r := range rs {
		ratio := ""
		suffix := ""
		if i := strings.Index(r.variant, "/"); i >= 0 {
			suffix = r.variant[i:]
		}
		if b, ok := base[r.pkg+" "+r.group+suffix]; ok && r.nsPerOp > 0 {
			ratio = fmt.Sprintf("%.2fx", b/r.nsPerOp)
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %s | %s |\n", r.name, r.nsPerOp, 1e9/r.nsPerOp, ratio, strings.Join(r.extra, ", "))
	}
	fmt.Fprintf(w, "\nRatio = baseline ns/op ÷ this ns/op (higher is faster than %s).\n\n", baseline)
}
