// Package dashboard is the web dashboard every node serves at "/": cluster
// nodes and their load, profiles with state and owner, a pairing view with
// the live QR code that turns green once the phone has linked, a form to
// create profiles, and each profile's recent events.
//
// It is static HTML, CSS and JavaScript embedded in the binary (no build
// step, nothing loaded from elsewhere). The page talks to the documented
// HTTP API (docs/api.md) from the browser with the admin key the user
// enters once; the key stays in the browser's localStorage and is sent as a
// bearer token. The package holds no state and calls nothing of ours: it
// must never reach past the public API.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Assets are the dashboard's files (index.html, style.css, app.js), as
// served under /ui/.
func Assets() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}

// The tags of index.html that Handler replaces by the files' content.
const (
	styleTag  = `<link rel="stylesheet" href="ui/style.css">`
	scriptTag = `<script src="ui/app.js"></script>`
)

// page is index.html with style.css and app.js inlined, and the
// Content-Security-Policy that allows exactly those two inline blocks.
type page struct {
	html []byte
	csp  string
}

func buildPage(assets fs.FS) (page, error) {
	read := func(name string) (string, error) {
		b, err := fs.ReadFile(assets, name)
		return string(b), err
	}
	index, err := read("index.html")
	if err != nil {
		return page{}, err
	}
	css, err := read("style.css")
	if err != nil {
		return page{}, err
	}
	js, err := read("app.js")
	if err != nil {
		return page{}, err
	}
	if strings.Count(index, styleTag) != 1 || strings.Count(index, scriptTag) != 1 {
		return page{}, fmt.Errorf("dashboard: index.html must contain %s and %s once each", styleTag, scriptTag)
	}
	if strings.Contains(strings.ToLower(js), "</script") || strings.Contains(strings.ToLower(css), "</style") {
		return page{}, fmt.Errorf("dashboard: app.js or style.css would close its inline element")
	}
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	html := strings.Replace(index, styleTag, "<style>"+css+"</style>", 1)
	html = strings.Replace(html, scriptTag, "<script>"+js+"</script>", 1)
	csp := strings.Join([]string{
		"default-src 'none'",
		"script-src " + hash(js),
		"style-src " + hash(css),
		// QR codes arrive as PNG blobs fetched with the key.
		"img-src 'self' blob: data:",
		"connect-src 'self'",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
	return page{html: []byte(html), csp: csp}, nil
}

// Handler serves the dashboard: "/" (and "/index.html") is one
// self-contained page with its stylesheet and script inlined, so mounting
// Handler on the exact path "/" is enough; "/ui/<file>" serves the same
// files separately (for debugging and for a prefix mount). Every other path
// is a 404.
func Handler() http.Handler {
	assets := Assets()
	p, err := buildPage(assets)
	if err != nil {
		panic(err) // the embedded files are fixed at build time; tests cover them
	}
	servePage := func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", p.csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(p.html))
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(assets))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", servePage)
	mux.HandleFunc("GET /index.html", servePage)
	mux.Handle("GET /ui/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ui/" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
	return mux
}
