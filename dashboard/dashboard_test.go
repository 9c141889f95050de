package dashboard

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandlerServesSelfContainedPage(t *testing.T) {
	h := Handler()
	for _, path := range []string{"/", "/index.html"} {
		res := get(t, h, "GET", path)
		page := body(t, res)
		if res.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
		if !strings.Contains(page, "<title>Amarula</title>") || !strings.Contains(page, `id="key-input"`) {
			t.Errorf("GET %s: not the dashboard page", path)
		}
		// Inlined: the page needs no second request, so mounting the
		// handler on the API's exact "/" route is enough.
		if strings.Contains(page, `src="ui/`) || strings.Contains(page, `href="ui/`) {
			t.Errorf("GET %s: still refers to ui/ assets", path)
		}
		js, css := between(page, "<script>", "</script>"), between(page, "<style>", "</style>")
		if !strings.Contains(js, "function api(") || !strings.Contains(css, ".pair.linked") {
			t.Fatalf("GET %s: app.js or style.css not inlined", path)
		}
		// The CSP allows exactly the inlined blocks and nothing from
		// elsewhere.
		csp := res.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src " + sriHash(js), "style-src " + sriHash(css), "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", path, csp, want)
			}
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
	}
}

func between(s, start, end string) string {
	_, after, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	in, _, _ := strings.Cut(after, end)
	return in
}

func sriHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

func TestHandlerAssetsAndErrors(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string
	}{
		{"GET", "/ui/app.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/ui/style.css", 200, "text/css; charset=utf-8"},
		{"HEAD", "/", 200, "text/html; charset=utf-8"},
		{"GET", "/ui/", 404, ""},
		{"GET", "/ui/missing.js", 404, ""},
		{"GET", "/ui/../dashboard.go", 307, ""}, // ServeMux cleans the path: a redirect, never a file outside static/
		{"GET", "/v1/profiles", 404, ""},
		{"GET", "/favicon.ico", 404, ""},
		{"POST", "/", 405, ""},
	} {
		res := get(t, h, tc.method, tc.path)
		if res.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
		}
		if tc.contentType != "" && res.Header.Get("Content-Type") != tc.contentType {
			t.Errorf("%s %s: Content-Type %q, want %q", tc.method, tc.path, res.Header.Get("Content-Type"), tc.contentType)
		}
	}
	js := body(t, get(t, h, "GET", "/ui/app.js"))
	want, _ := fs.ReadFile(Assets(), "app.js")
	if js != string(want) {
		t.Error("/ui/app.js differs from the embedded file")
	}
}

// externalRef matches anything that could make the browser load from
// another host: absolute or protocol-relative URLs, CSS imports.
var externalRef = regexp.MustCompile(`(?i)(\b[a-z][a-z0-9+.-]*:)?//[a-z0-9-]+(\.[a-z0-9-]+)+|@import|\burl\(\s*['"]?(https?:|//)`)

func TestAssetsLoadNothingFromElsewhere(t *testing.T) {
	assets := Assets()
	names := []string{}
	err := fs.WalkDir(assets, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		names = append(names, p)
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := externalRef.FindString(line); m != "" {
				t.Errorf("%s:%d: external reference %q", p, i+1, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "app.js,index.html,style.css" {
		t.Errorf("assets %v: update this test and the page when adding one", names)
	}
	js, _ := fs.ReadFile(assets, "app.js")
	// One fetch call, in api(), with a relative path: every request goes to
	// the node that served the page, with the key.
	if n := strings.Count(string(js), "fetch("); n != 1 {
		t.Errorf("app.js calls fetch %d times; want only api() to", n)
	}
	if strings.Contains(string(js), "innerHTML") || strings.Contains(string(js), "insertAdjacentHTML") || strings.Contains(string(js), "document.write") {
		t.Error("app.js builds HTML from strings; API data (push names, events) must go in as text")
	}
	// The detector itself must catch what it is for.
	for _, bad := range []string{`<script src="https://cdn.example.com/x.js">`, `<link href="//fonts.example.org/css">`, `@import "x.css";`, `background: url(https://x.io/a.png)`} {
		if !externalRef.MatchString(bad) {
			t.Errorf("externalRef misses %q", bad)
		}
	}
}

func TestBuildPageRejectsBrokenAssets(t *testing.T) {
	good := func() fstest.MapFS {
		return fstest.MapFS{
			"index.html": {Data: []byte(`<html><head>` + styleTag + `</head><body>` + scriptTag + `</body></html>`)},
			"style.css":  {Data: []byte(`body{}`)},
			"app.js":     {Data: []byte(`let a = 1;`)},
		}
	}
	if _, err := buildPage(good()); err != nil {
		t.Fatalf("good assets: %v", err)
	}
	for name, mutate := range map[string]func(fstest.MapFS){
		"no script tag":   func(m fstest.MapFS) { m["index.html"].Data = []byte(`<html>` + styleTag + `</html>`) },
		"script closes":   func(m fstest.MapFS) { m["app.js"].Data = []byte(`let s = "</SCRIPT>";`) },
		"style closes":    func(m fstest.MapFS) { m["style.css"].Data = []byte(`/* </style> */`) },
		"missing app.js":  func(m fstest.MapFS) { delete(m, "app.js") },
		"two style links": func(m fstest.MapFS) { m["index.html"].Data = []byte(styleTag + styleTag + scriptTag) },
	} {
		m := good()
		mutate(m)
		if _, err := buildPage(m); err == nil {
			t.Errorf("%s: buildPage accepted it", name)
		}
	}
}
