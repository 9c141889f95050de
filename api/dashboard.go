package api

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed ui
var uiFiles embed.FS

// dashboardCSP allows only the dashboard's own files, its API calls and
// the QR image it builds from a blob.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// dashboard serves the built-in web dashboard at / (unless
// Config.Dashboard replaces it). The page needs no auth; it asks for the
// admin key and calls the API with it.
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Dashboard != nil {
		s.cfg.Dashboard.ServeHTTP(w, r)
		return nil
	}
	b, err := uiFiles.ReadFile("ui/index.html")
	if err != nil {
		return err
	}
	setDashboardHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(b)
	return nil
}

// dashboardAssets serves /ui/*.
func (s *Server) dashboardAssets() handlerFunc {
	sub, _ := fs.Sub(uiFiles, "ui")
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Path == "/ui/" || r.URL.Path == "/ui/index.html" {
			return newError(http.StatusNotFound, "not_found", "no route for %s %s", r.Method, r.URL.Path)
		}
		setDashboardHeaders(w)
		files.ServeHTTP(w, r)
		return nil
	}
}

func setDashboardHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", dashboardCSP)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
}
