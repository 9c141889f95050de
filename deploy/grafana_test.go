package deploy

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// metric is a Prometheus metric the node's code defines.
type metric struct {
	name, kind string   // kind: counter, gauge, histogram, summary
	labels     []string // nil when the labels could not be read
	help       string
	at         string // file:line
}

// codeMetrics finds every prometheus.New<Kind>[Vec](<Kind>Opts{Name: "amarula_…"}, []string{labels})
// in the module's non-test Go sources.
func codeMetrics(t *testing.T) map[string]metric {
	t.Helper()
	out := map[string]metric{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != repoRoot && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(src), `"amarula_`) {
			return err
		}
		f, err := parser.ParseFile(fset, p, src, 0)
		if err != nil {
			return nil // a file mid-edit elsewhere in the tree; its metrics are checked when it parses
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !strings.HasPrefix(sel.Sel.Name, "New") {
				return true
			}
			opts, ok := call.Args[0].(*ast.CompositeLit)
			if !ok {
				return true
			}
			m := metric{at: fset.Position(call.Pos()).String()}
			for _, el := range opts.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, _ := kv.Key.(*ast.Ident)
				lit, _ := kv.Value.(*ast.BasicLit)
				if key == nil || lit == nil || lit.Kind != token.STRING {
					continue
				}
				v, _ := strconv.Unquote(lit.Value)
				switch key.Name {
				case "Name":
					m.name = v
				case "Help":
					m.help = v
				}
			}
			if !strings.HasPrefix(m.name, "amarula_") {
				return true
			}
			kind := strings.TrimSuffix(strings.TrimPrefix(sel.Sel.Name, "New"), "Vec")
			m.kind = strings.ToLower(kind)
			if strings.HasSuffix(sel.Sel.Name, "Vec") {
				if len(call.Args) > 1 {
					if ls, ok := call.Args[1].(*ast.CompositeLit); ok {
						m.labels = []string{}
						for _, el := range ls.Elts {
							if lit, ok := el.(*ast.BasicLit); ok {
								v, _ := strconv.Unquote(lit.Value)
								m.labels = append(m.labels, v)
							}
						}
					}
				}
			} else {
				m.labels = []string{}
			}
			out[m.name] = m
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 5 {
		t.Fatalf("found only %d amarula_ metrics in the code: the scanner is broken", len(out))
	}
	return out
}

// Labels Prometheus adds when scraping (or that queries introduce), valid
// for any metric.
var scrapeLabels = map[string]bool{"instance": true, "job": true, "pod": true, "namespace": true, "container": true, "service": true}

var (
	metricRef  = regexp.MustCompile(`\bamarula_[a-zA-Z0-9_]+`)
	matcherRe  = regexp.MustCompile(`\{([^}]*)\}`)
	labelName  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	groupingRe = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// checkExpr checks one PromQL expression against the code's metrics:
// every metric exists (histograms only through _bucket/_sum/_count), and
// every label in matchers and by/without clauses belongs to a metric used.
func checkExpr(expr string, metrics map[string]metric) []string {
	var probs []string
	allowed := map[string]bool{}
	for k := range scrapeLabels {
		allowed[k] = true
	}
	refs := metricRef.FindAllStringIndex(expr, -1)
	if len(refs) == 0 {
		probs = append(probs, fmt.Sprintf("%q uses no amarula_ metric", expr))
	}
	for _, r := range refs {
		name := expr[r[0]:r[1]]
		m, ok := metrics[name]
		series := name
		if ok && (m.kind == "histogram" || m.kind == "summary") {
			probs = append(probs, fmt.Sprintf("%q: %s is a %s; query %s_bucket, _sum or _count", expr, name, m.kind, name))
		}
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base, found := strings.CutSuffix(name, suffix)
				if !found {
					continue
				}
				if bm, bok := metrics[base]; bok && (bm.kind == "histogram" || (bm.kind == "summary" && suffix != "_bucket")) {
					m, ok = bm, true
					if suffix == "_bucket" {
						allowed["le"] = true
					}
					if bm.kind == "summary" {
						allowed["quantile"] = true
					}
				}
			}
		}
		if !ok {
			probs = append(probs, fmt.Sprintf("%q: metric %s is not defined in the code", expr, series))
			continue
		}
		if m.labels == nil {
			continue // labels unknown (built dynamically): nothing to check
		}
		for _, l := range m.labels {
			allowed[l] = true
		}
		// Matchers right after this metric name.
		rest := expr[r[1]:]
		if strings.HasPrefix(rest, "{") {
			if mm := matcherRe.FindStringSubmatch(rest); mm != nil {
				for _, lm := range labelName.FindAllStringSubmatch(mm[1], -1) {
					if !slices.Contains(m.labels, lm[1]) && !scrapeLabels[lm[1]] && !(lm[1] == "le" && strings.HasSuffix(series, "_bucket")) {
						probs = append(probs, fmt.Sprintf("%q: %s has no label %q (labels: %v)", expr, series, lm[1], m.labels))
					}
				}
			}
		}
	}
	for _, g := range groupingRe.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !allowed[l] {
				probs = append(probs, fmt.Sprintf("%q: grouping by %q, a label none of its metrics has", expr, l))
			}
		}
	}
	return probs
}

// grafanaPanel is the part of a Grafana panel the checks read.
type grafanaPanel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // collapsed rows
}

type grafanaDashboard struct {
	Title         string         `json:"title"`
	UID           string         `json:"uid"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// checkGrafana checks a dashboard's structure and queries; it also returns
// the metrics the queries use.
func checkGrafana(raw []byte, metrics map[string]metric) ([]string, map[string]bool) {
	var probs []string
	add := func(format string, a ...any) { probs = append(probs, fmt.Sprintf(format, a...)) }
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return []string{"not JSON: " + err.Error()}, nil
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 {
		add("dashboard needs a title, a uid and a current schemaVersion (got %q %q %d)", d.Title, d.UID, d.SchemaVersion)
	}
	hasDS := false
	used := map[string]bool{}
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" {
			hasDS = true
		}
		if v.Type == "query" {
			var q struct {
				Query string `json:"query"`
			}
			s := ""
			if json.Unmarshal(v.Query, &q) == nil {
				s = q.Query
			} else {
				_ = json.Unmarshal(v.Query, &s)
			}
			for _, name := range metricRef.FindAllString(s, -1) {
				used[name] = true
				if _, ok := metrics[name]; !ok {
					add("variable %s: metric %s is not defined in the code", v.Name, name)
				}
			}
		}
	}
	if !hasDS {
		add("no datasource variable named \"datasource\": the dashboard would be bound to one Prometheus")
	}
	var all []grafanaPanel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	if len(all) < 5 {
		add("only %d panels", len(all))
	}
	ids := map[int]string{}
	type rect struct {
		title      string
		x, y, w, h int
	}
	var rects []rect
	for _, p := range all {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			add("panel %q: id %d missing or used by %q too", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			add("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for _, r := range rects {
			if g.X < r.x+r.w && r.x < g.X+g.W && g.Y < r.y+r.h && r.y < g.Y+g.H {
				add("panel %q overlaps %q", p.Title, r.title)
			}
		}
		rects = append(rects, rect{p.Title, g.X, g.Y, g.W, g.H})
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Description == "" {
			add("panel %d: needs a title and a description (operators read them)", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			add("panel %q: datasource must be ${datasource}", p.Title)
		}
		if len(p.Targets) == 0 {
			add("panel %q: no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				add("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			for _, pr := range checkExpr(tg.Expr, metrics) {
				add("panel %q: %s", p.Title, pr)
			}
			for _, name := range metricRef.FindAllString(tg.Expr, -1) {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(name, s); ok && metrics[base].kind != "" {
						name = base
					}
				}
				used[name] = true
			}
		}
	}
	return probs, used
}

func TestGrafanaDashboard(t *testing.T) {
	metrics := codeMetrics(t)
	raw, err := os.ReadFile("grafana/amarula.json")
	if err != nil {
		t.Fatal(err)
	}
	probs, used := checkGrafana(raw, metrics)
	for _, p := range probs {
		t.Error(p)
	}
	// Coverage is reported, not enforced: a metric added elsewhere must
	// not break this package's tests before it gets its panel.
	var missing []string
	for name := range metrics {
		if !used[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	t.Logf("%d metrics in the code, %d on the dashboard; without a panel: %v", len(metrics), len(used), missing)
}

// TestMetricsHaveHelp: design.md §7 wants every metric with help text.
func TestMetricsHaveHelp(t *testing.T) {
	for _, m := range codeMetrics(t) {
		if strings.TrimSpace(m.help) == "" {
			t.Errorf("%s (%s): no Help text", m.name, m.at)
		}
		if m.kind == "counter" && !strings.HasSuffix(m.name, "_total") {
			t.Errorf("%s (%s): a counter's name ends in _total", m.name, m.at)
		}
	}
}

// TestGrafanaChecksCatchMistakes proves each check can fail.
func TestGrafanaChecksCatchMistakes(t *testing.T) {
	metrics := map[string]metric{
		"amarula_profiles_owned":            {name: "amarula_profiles_owned", kind: "gauge", labels: []string{}},
		"amarula_handoffs_total":            {name: "amarula_handoffs_total", kind: "counter", labels: []string{"reason"}},
		"amarula_failover_duration_seconds": {name: "amarula_failover_duration_seconds", kind: "histogram", labels: []string{}},
	}
	for _, tc := range []struct {
		expr, want string // want "" = no problem
	}{
		{`sum(amarula_profiles_owned{instance=~"$instance"})`, ""},
		{`sum by (reason) (rate(amarula_handoffs_total{reason="drain"}[5m]))`, ""},
		{`histogram_quantile(0.95, sum by (le) (rate(amarula_failover_duration_seconds_bucket[5m])))`, ""},
		{`sum(amarula_profile_owned)`, "not defined in the code"},
		{`rate(amarula_handoffs[5m])`, "not defined in the code"},
		{`sum(rate(amarula_handoffs_total{cause="drain"}[5m]))`, `no label "cause"`},
		{`sum by (cause) (rate(amarula_handoffs_total[5m]))`, `grouping by "cause"`},
		{`sum by (le) (amarula_profiles_owned)`, `grouping by "le"`},
		{`rate(amarula_failover_duration_seconds[5m])`, "is a histogram"},
		{`rate(amarula_profiles_owned_bucket[5m])`, "not defined in the code"},
		{`sum(up)`, "uses no amarula_ metric"},
	} {
		probs := checkExpr(tc.expr, metrics)
		switch {
		case tc.want == "" && len(probs) > 0:
			t.Errorf("%s: unexpected %v", tc.expr, probs)
		case tc.want != "" && !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, tc.want) }):
			t.Errorf("%s: want a problem with %q, got %v", tc.expr, tc.want, probs)
		}
	}

	raw, err := os.ReadFile("grafana/amarula.json")
	if err != nil {
		t.Fatal(err)
	}
	real := codeMetrics(t)
	for _, tc := range []struct {
		name, old, new, want string
		all                  bool // replace every occurrence
	}{
		{"unknown metric", "amarula_profiles_owned{", "amarula_profiles_total{", "not defined in the code", false},
		{"duplicate id", `"id": 2,`, `"id": 1,`, "used by", false},
		{"overlap", `"x": 4,`, `"x": 2,`, "overlaps", false},
		{"outside grid", `"w": 24,`, `"w": 25,`, "outside the 24-column grid", false},
		{"fixed datasource", `"uid": "${datasource}"`, `"uid": "prom-1"`, "datasource must be", true},
		{"no datasource variable", `"type": "datasource"`, `"type": "custom"`, "no datasource variable", false},
		{"variable on unknown metric", "label_values(amarula_profiles_owned, instance)\"", "label_values(amarula_profile_owned, instance)\"", "variable instance", false},
	} {
		if !strings.Contains(string(raw), tc.old) {
			t.Errorf("%s: amarula.json no longer contains %q: stale case", tc.name, tc.old)
			continue
		}
		n := 1
		if tc.all {
			n = -1
		}
		probs, _ := checkGrafana([]byte(strings.Replace(string(raw), tc.old, tc.new, n)), real)
		if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("%s: no problem mentions %q: %v", tc.name, tc.want, probs)
		}
	}
}
