package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/cluster"
	"github.com/amarula/amarula/storage"
)

// Headers of the one-hop forwarding between nodes.
const (
	// HeaderNode names the node that served the request (the owner for
	// forwarded commands).
	HeaderNode = "X-Amarula-Node"
	// headerForwarded marks a request forwarded by a peer: it is never
	// forwarded again (one hop), whatever the receiver believes.
	headerForwarded = "X-Amarula-Forwarded-By"
)

// ownerLookupTimeout bounds the etcd read that routes a profile command.
const ownerLookupTimeout = 3 * time.Second

// ownerLookup answers who owns a profile cluster-wide.
type ownerLookup interface {
	Owner(ctx context.Context, profile string) (node string, token uint64, err error)
}

// localSessions tells whether a profile's session runs in this process.
type localSessions interface {
	Whereis(ctx context.Context, profile string) (string, error)
}

// router sends every profile command to the node that owns the profile
// (one hop, transparently) and serves everything else locally: reads of
// messages and events come from shared storage, so any node answers them.
type router struct {
	self    string
	next    http.Handler
	owners  ownerLookup
	members func() []cluster.Member
	single  bool // single-node mode: never forward

	mu      sync.Mutex
	proxies map[string]*httputil.ReverseProxy // by peer API base URL
	client  http.RoundTripper
}

// ownerRoutes are the profile endpoints that need the live session, so
// they run on the owner. Everything else under /v1/profiles/{id}/ reads
// shared storage.
func needsOwner(method, rest string) bool {
	switch {
	case rest == "" && (method == http.MethodGet || method == http.MethodDelete):
		return true // live state; delete logs out on WhatsApp
	case rest == "qr" && method == http.MethodGet:
		return true
	case rest == "messages" && method == http.MethodPost:
		return true
	case method == http.MethodPost && (rest == "pair-phone" || rest == "connect" || rest == "stop"):
		return true
	case method == http.MethodGet && (rest == "groups" || strings.HasPrefix(rest, "groups/")):
		return true // live group metadata from the session
	}
	return false
}

// profileTarget splits "/v1/profiles/{id}/rest" into id and rest.
func profileTarget(path string) (id, rest string, ok bool) {
	const prefix = "/v1/profiles/"
	if !strings.HasPrefix(path, prefix) {
		return "", "", false
	}
	tail := path[len(prefix):]
	id, rest, _ = strings.Cut(tail, "/")
	return id, rest, id != ""
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, rest, ok := profileTarget(r.URL.Path)
	if !ok || rt.single || !needsOwner(r.Method, rest) || r.Header.Get(headerForwarded) != "" ||
		storage.ValidateProfile(id) != nil {
		// Invalid ids are answered (400) by the API itself.
		w.Header().Set(HeaderNode, rt.self)
		rt.next.ServeHTTP(w, r)
		return
	}
	// Bounded: a node cut off from etcd answers 503 at once instead of
	// holding the request until the client gives up.
	lctx, cancel := context.WithTimeout(r.Context(), ownerLookupTimeout)
	owner, _, err := rt.owners.Owner(lctx, id)
	cancel()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("cannot look up the owner of %s: %v", id, err))
		return
	}
	if owner == "" || owner == rt.self {
		// Unowned: the API answers 404 for unknown profiles, and for known
		// ones the session layer's "no session" (503); owned here: local.
		w.Header().Set(HeaderNode, rt.self)
		rt.next.ServeHTTP(w, r)
		return
	}
	base := rt.peerURL(owner)
	if base == "" {
		api.WriteError(w, http.StatusServiceUnavailable, "owner_unreachable",
			fmt.Sprintf("profile %s is owned by node %s, which this node cannot reach", id, owner))
		return
	}
	rt.proxy(base, owner).ServeHTTP(w, r)
}

// peerURL is the API base URL a live member advertises.
func (rt *router) peerURL(node string) string {
	for _, m := range rt.members() {
		if m.Name == node && (m.State == cluster.StateAlive || m.State == cluster.StateSuspect || m.State == cluster.StateDraining) {
			return m.Meta.API
		}
	}
	return ""
}

func (rt *router) proxy(base, owner string) http.Handler {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if p, ok := rt.proxies[base]; ok {
		return p
	}
	target, err := url.Parse(base)
	if err != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			api.WriteError(w, http.StatusServiceUnavailable, "owner_unreachable", fmt.Sprintf("node %s advertises a bad API address", owner))
		})
	}
	if rt.proxies == nil {
		rt.proxies = map[string]*httputil.ReverseProxy{}
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set(headerForwarded, rt.self)
		},
		Transport: rt.client,
		ModifyResponse: func(resp *http.Response) error {
			if resp.Header.Get(HeaderNode) == "" {
				resp.Header.Set(HeaderNode, owner)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			api.WriteError(w, http.StatusServiceUnavailable, "owner_unreachable",
				fmt.Sprintf("forwarding to owner %s failed: %v", owner, err))
		},
	}
	rt.proxies[base] = p
	return p
}

// clusterView serves GET /v1/cluster.
type clusterView struct {
	members  func() []cluster.Member
	catalog  catalog.Catalog
	owners   func(ctx context.Context) (map[string]string, error) // nil: single node
	self     string
	selfLoad func() int
}

type nodeView struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	State    string `json:"state"`
	Profiles int    `json:"profiles"`
	Version  string `json:"version"`
}

func (cv *clusterView) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	ps, err := cv.catalog.List(ctx)
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, "unavailable", "catalog: "+err.Error())
		return
	}
	owners := map[string]string{}
	if cv.owners != nil {
		if owners, err = cv.owners(ctx); err != nil {
			api.WriteError(w, http.StatusServiceUnavailable, "unavailable", "owners: "+err.Error())
			return
		}
	}
	load := map[string]int{}
	for _, p := range ps {
		if o := owners[p.ID]; o != "" {
			load[o]++
		}
	}
	var nodes []nodeView
	for _, m := range cv.members() {
		state := string(m.State)
		if m.Meta.Draining && (m.State == cluster.StateAlive || m.State == cluster.StateSuspect) {
			state = string(cluster.StateDraining)
		}
		n := nodeView{Name: m.Name, Address: m.Meta.API, State: state, Profiles: load[m.Name], Version: m.Meta.Version}
		if cv.owners == nil && m.Name == cv.self {
			n.Profiles = cv.selfLoad()
		}
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	unassigned := 0
	if cv.owners != nil {
		for _, p := range ps {
			if owners[p.ID] == "" && !p.Stopped {
				unassigned++
			}
		}
	} else {
		unassigned = max(0, len(ps)-cv.selfLoad())
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"nodes": nodes, "profiles_total": len(ps), "unassigned": unassigned})
}

// moveHandler serves POST /v1/profiles/{id}/move {"node":"n2"}.
type moveHandler struct {
	move func(ctx context.Context, profile, to string) (string, error)
}

func (h *moveHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req struct {
		Node string `json:"node"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, "invalid_body", "cannot read body")
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			api.WriteError(w, http.StatusBadRequest, "invalid_json", "body must be {\"node\":\"<name>\"} (or empty for the best other node): "+err.Error())
			return
		}
	}
	to, err := h.move(r.Context(), id, req.Node)
	switch {
	case errors.Is(err, cluster.ErrNoTarget):
		api.WriteError(w, http.StatusConflict, "no_target", err.Error())
		return
	case errors.Is(err, catalog.ErrNotFound):
		api.WriteError(w, http.StatusNotFound, "profile_not_found", err.Error())
		return
	case err != nil:
		api.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]string{"profile": id, "node": to, "status": "moving"})
}
