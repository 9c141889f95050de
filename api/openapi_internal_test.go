package api

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes proves openapi.json documents exactly the routes
// the server registers, with the right security (public routes have none).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	s := &Server{}
	var missing []string
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method != "parameters" {
				documented[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	for _, rt := range s.routeTable() {
		key := strings.Replace(rt.pattern, "{$}", "", 1)
		if key == "GET /" || key == "GET /ui/" {
			continue // the dashboard is HTML, not part of the API
		}
		if !documented[key] {
			missing = append(missing, key)
		}
		delete(documented, key)
		var op struct {
			Security *[]any `json:"security"`
		}
		method, path, _ := strings.Cut(key, " ")
		_ = json.Unmarshal(doc.Paths[path][strings.ToLower(method)], &op)
		if public := op.Security != nil && len(*op.Security) == 0; public != (rt.sc == scopePublic) {
			t.Errorf("%s: documented public=%v, served with scope %d", key, public, rt.sc)
		}
	}
	var extra []string
	for k := range documented {
		extra = append(extra, k)
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("openapi.json lacks %v and documents unknown %v", missing, extra)
	}
}
