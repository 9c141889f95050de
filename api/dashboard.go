package api

import (
	"net/http"
)

// dashboard serves the web dashboard (Config.Dashboard, package dashboard)
// at / and its files under /ui/. The page needs no auth; it asks for the
// admin key and calls the API with it. Without a dashboard these paths
// answer 404.
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Dashboard == nil {
		return newError(http.StatusNotFound, "not_found", "no dashboard is configured on this node")
	}
	s.cfg.Dashboard.ServeHTTP(w, r)
	return nil
}
