package dashboard

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testenv"
)

const testKey = "test-admin-key-0123456789abcdef"

// fakeAPI is a small in-memory stand-in for the node's HTTP API with the
// JSON shapes of docs/api.md: enough to drive the dashboard.
type fakeAPI struct {
	mu         sync.Mutex
	profiles   map[string]map[string]any
	created    []map[string]any // bodies of POST /v1/profiles
	qrPNGs     int              // PNG QR codes served
	noCluster  bool             // answer /v1/cluster with 501, like a node without the cluster view
	badAuth    int              // requests with a wrong or missing key
	unexpected []string         // requests outside the routes below
}

func newFakeAPI() *fakeAPI {
	since := time.Now().Add(-90 * time.Minute).Unix()
	return &fakeAPI{profiles: map[string]map[string]any{
		"alice": {"id": "alice", "state": "connected", "owner": "amarula-0", "jid": "4915112345678:3@s.whatsapp.net", "lid": "12345:3@lid", "push_name": "Alice", "connected_since": since, "created_at": since},
		"bob":   {"id": "bob", "state": "conflict", "owner": "amarula-1", "jid": "4915198765432:7@s.whatsapp.net", "lid": "", "push_name": "Bob's <b>shop</b>", "connected_since": nil, "created_at": since},
		"dave":  {"id": "dave", "state": "unpaired", "owner": "amarula-2", "jid": "", "lid": "", "push_name": "", "connected_since": nil, "created_at": since},
	}}
}

func (f *fakeAPI) setState(id, state, pushName, jid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.profiles[id]
	p["state"], p["push_name"], p["jid"] = state, pushName, jid
	p["connected_since"] = time.Now().Unix()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

var profileID = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// handler mounts the dashboard exactly as the API does (the single route
// "GET /{$}") next to the fake /v1 endpoints.
func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", Handler())
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+testKey {
				f.mu.Lock()
				f.badAuth++
				f.mu.Unlock()
				apiError(w, 401, "unauthorized", "missing or wrong bearer token")
				return
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			h(w, r)
		}
	}
	mux.HandleFunc("GET /v1/cluster", auth(func(w http.ResponseWriter, r *http.Request) {
		if f.noCluster {
			apiError(w, 501, "not_implemented", "the cluster view is not implemented by this node")
			return
		}
		count := map[string]int{}
		for _, p := range f.profiles {
			count[p["owner"].(string)]++
		}
		node := func(name, state string) map[string]any {
			return map[string]any{"name": name, "address": "http://10.1.0." + name[len(name)-1:] + ":8080", "state": state, "profiles": count[name], "version": "v0.9.0-test"}
		}
		writeJSON(w, 200, map[string]any{
			"nodes":          []any{node("amarula-0", "alive"), node("amarula-1", "alive"), node("amarula-2", "draining")},
			"profiles_total": len(f.profiles),
			"unassigned":     0,
		})
	}))
	mux.HandleFunc("GET /v1/profiles", auth(func(w http.ResponseWriter, r *http.Request) {
		list := []any{}
		for _, id := range sortedIDs(f.profiles) {
			list = append(list, f.profiles[id])
		}
		writeJSON(w, 200, map[string]any{"profiles": list})
	}))
	mux.HandleFunc("POST /v1/profiles", auth(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			apiError(w, 400, "invalid_json", err.Error())
			return
		}
		f.created = append(f.created, body)
		id, _ := body["id"].(string)
		if !profileID.MatchString(id) {
			apiError(w, 400, "invalid_profile_id", "bad id")
			return
		}
		if f.profiles[id] != nil {
			apiError(w, 409, "profile_exists", "profile "+id+" exists")
			return
		}
		p := map[string]any{"id": id, "state": "pairing", "owner": "amarula-1", "jid": "", "lid": "", "push_name": "", "connected_since": nil, "created_at": time.Now().Unix()}
		f.profiles[id] = p
		writeJSON(w, 201, p)
	}))
	mux.HandleFunc("GET /v1/profiles/{id}", auth(func(w http.ResponseWriter, r *http.Request) {
		p := f.profiles[r.PathValue("id")]
		if p == nil {
			apiError(w, 404, "profile_not_found", "no such profile")
			return
		}
		writeJSON(w, 200, p)
	}))
	mux.HandleFunc("GET /v1/profiles/{id}/qr", auth(func(w http.ResponseWriter, r *http.Request) {
		p := f.profiles[r.PathValue("id")]
		switch {
		case p == nil:
			apiError(w, 404, "profile_not_found", "no such profile")
		case p["state"] == "connected":
			apiError(w, 409, "already_paired", "profile is paired")
		case strings.Contains(r.Header.Get("Accept"), "image/png"):
			f.qrPNGs++
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(fakeQR(f.qrPNGs))
		default:
			writeJSON(w, 200, map[string]any{"code": "2@fake,qr,code", "expires_at": time.Now().Add(20 * time.Second).Unix()})
		}
	}))
	mux.HandleFunc("GET /v1/profiles/{id}/events", auth(func(w http.ResponseWriter, r *http.Request) {
		if f.profiles[r.PathValue("id")] == nil {
			apiError(w, 404, "profile_not_found", "no such profile")
			return
		}
		all := []map[string]any{
			{"type": "session.connected", "data": map[string]any{}},
			{"type": "message.received", "data": map[string]any{"id": "3EB0A1", "from": "4915198765432@s.whatsapp.net", "text": "hello from bob"}},
			{"type": "message.sent", "data": map[string]any{"id": "3EB0A2", "to": "4915198765432@s.whatsapp.net", "text": "hi bob"}},
			{"type": "message.ack", "data": map[string]any{"id": "3EB0A2", "status": "read"}},
		}
		after, _ := strconv.Atoi(r.URL.Query().Get("after"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		if limit <= 0 || limit > 2 {
			limit = 2 // small pages, so the dashboard must follow "next"
		}
		base := time.Date(2026, 11, 23, 17, 0, 0, 0, time.UTC)
		out := []any{}
		next := ""
		i := after
		for ; i < len(all) && len(out) < limit; i++ {
			e := all[i]
			out = append(out, map[string]any{"id": strconv.Itoa(i + 1), "profile": r.PathValue("id"), "type": e["type"], "time": base.Add(time.Duration(i) * time.Minute).Format(time.RFC3339), "data": e["data"]})
		}
		if i < len(all) {
			next = strconv.Itoa(i) // the id of the last event returned
		}
		writeJSON(w, 200, map[string]any{"events": out, "next": next})
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.unexpected = append(f.unexpected, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		http.NotFound(w, r)
	})
	return mux
}

func sortedIDs(m map[string]map[string]any) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// fakeQR draws a QR-looking 29×29 module pattern (finder squares plus
// pseudo-random modules that change with n), 8 px per module with a quiet
// zone.
func fakeQR(n int) []byte {
	const modules, scale, quiet = 29, 8, 4
	size := (modules + 2*quiet) * scale
	img := image.NewGray(image.Rect(0, 0, size, size))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	dark := func(x, y int) bool {
		for _, c := range [][2]int{{0, 0}, {modules - 7, 0}, {0, modules - 7}} {
			dx, dy := x-c[0], y-c[1]
			if dx >= 0 && dx < 7 && dy >= 0 && dy < 7 {
				return dx == 0 || dx == 6 || dy == 0 || dy == 6 || (dx >= 2 && dx <= 4 && dy >= 2 && dy <= 4)
			}
		}
		return (x*31+y*17+n*7+x*y)%5 < 2
	}
	for y := 0; y < modules; y++ {
		for x := 0; x < modules; x++ {
			if !dark(x, y) {
				continue
			}
			for py := 0; py < scale; py++ {
				for px := 0; px < scale; px++ {
					img.SetGray((x+quiet)*scale+px, (y+quiet)*scale+py, color.Gray{})
				}
			}
		}
	}
	var buf bytes.Buffer
	_ = png.Encode(&buf, img)
	return buf.Bytes()
}

// artifactsDir is where screenshots and DOM dumps go: $AMARULA_ARTIFACTS_DIR
// /dashboard, else a fixed directory under the system temp dir (kept after
// the test, overwritten by the next run).
func artifactsDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("AMARULA_ARTIFACTS_DIR")
	if base == "" {
		base = filepath.Join(os.TempDir(), "amarula-artifacts")
	}
	dir := filepath.Join(base, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pngStats decodes a screenshot and counts its pixels close to each of the
// given colours, and its distinct colours.
func pngStats(t *testing.T, b []byte, want map[string]color.RGBA) (image.Rectangle, map[string]int, int) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	counts := map[string]int{}
	distinct := map[uint32]bool{}
	near := func(a, b uint8) bool { return a-b < 12 || b-a < 12 }
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			c := color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), 0xff}
			if len(distinct) < 4096 {
				distinct[uint32(c.R)<<16|uint32(c.G)<<8|uint32(c.B)] = true
			}
			for name, w := range want {
				if near(c.R, w.R) && near(c.G, w.G) && near(c.B, w.B) {
					counts[name]++
				}
			}
		}
	}
	return bounds, counts, len(distinct)
}

// TestDashboardInChromium drives the dashboard in headless Chromium against
// a fake of the API: enter the admin key, see nodes and profiles, create a
// profile, pair it with the live QR until the view turns green, read events,
// and keep or forget the key. Screenshots and DOM dumps are saved as
// artifacts.
func TestDashboardInChromium(t *testing.T) {
	bin := os.Getenv("AMARULA_CHROMIUM")
	if bin == "" {
		bin = testenv.FindBinary("chromium")
	}
	if bin == "" {
		msg := "chromium not installed: run scripts/install-browser.sh (Debian's chromium)"
		if testenv.Required() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	fake := newFakeAPI()
	srv := httptest.NewServer(fake.handler())
	t.Cleanup(srv.Close)
	art := artifactsDir(t)
	t.Logf("artifacts (screenshots, DOM dumps): %s", art)

	const width, height = 1280, 900
	b := startBrowser(t, bin, width, height)
	save := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(art, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shot := func(name string) []byte {
		t.Helper()
		png := b.screenshot()
		save(name+".png", png)
		save(name+".html", []byte(b.evalString("document.documentElement.outerHTML")))
		return png
	}
	colors := map[string]color.RGBA{
		"header":   {0x12, 0x34, 0x3b, 0xff},
		"green":    {0x1e, 0x8e, 0x3e, 0xff},
		"green-bg": {0xe6, 0xf4, 0xea, 0xff},
		"black":    {0, 0, 0, 0xff},
	}

	// 1. No key yet: the key form, and no API call made.
	b.navigate(srv.URL + "/")
	b.waitFor("the key form", "!document.getElementById('login').hidden")
	shot("01-login")

	// 2. A wrong key is refused and asked for again.
	b.typeInto("#key-input", "wrong-key-that-is-long-enough")
	b.click("#login-form button")
	b.waitFor("the refusal", "!document.getElementById('login').hidden && document.getElementById('login-error').textContent.includes('not accepted')")

	// 3. The right key: nodes with their load, profiles with state and owner.
	b.typeInto("#key-input", testKey)
	b.click("#login-form button")
	b.waitFor("nodes and profiles", "document.querySelectorAll('#nodes tr[data-node]').length === 3 && document.querySelectorAll('#profiles tr[data-profile]').length === 3")
	overview := shot("02-overview")
	dom := b.evalString("document.body.innerText")
	for _, want := range []string{"amarula-0", "amarula-1", "amarula-2", "draining", "alice", "bob", "dave", "connected", "conflict", "unpaired", "Alice", "Bob's <b>shop</b>", "4915112345678:3@s.whatsapp.net", "v0.9.0-test"} {
		if !strings.Contains(dom, want) {
			t.Errorf("overview does not show %q:\n%s", want, dom)
		}
	}
	for row, want := range map[string]string{"alice": "amarula-0", "bob": "amarula-1", "dave": "amarula-2"} {
		if got := b.evalString("document.querySelector('#profiles tr[data-profile=\"" + row + "\"] td.owner').textContent"); got != want {
			t.Errorf("owner of %s: %q, want %q", row, got, want)
		}
	}
	if got := b.evalString("document.querySelector('#nodes tr[data-node=\"amarula-0\"] meter').getAttribute('value') + '/' + document.querySelector('#nodes tr[data-node=\"amarula-0\"] meter').getAttribute('max')"); got != "1/3" {
		t.Errorf("load meter of amarula-0: %s, want 1/3", got)
	}
	if got := b.evalString("localStorage.getItem('amarula.adminKey')"); got != testKey {
		t.Errorf("key kept in localStorage: %q", got)
	}
	bounds, counts, distinct := pngStats(t, overview, colors)
	if bounds.Dx() != width || bounds.Dy() != height || distinct < 20 || counts["header"] < width*20 {
		t.Errorf("overview screenshot looks empty: %v, %d colours, header pixels %d", bounds, distinct, counts["header"])
	}

	// 4. Create a profile; an invalid id is refused in the page.
	b.typeInto("#create-id", "Not Valid")
	b.click("#create-form button")
	b.waitFor("the invalid id message", "!document.getElementById('create-error').hidden")
	b.typeInto("#create-id", "alice")
	b.click("#create-form button")
	b.waitFor("the conflict message", "document.getElementById('create-error').textContent.includes('already exists')")
	b.typeInto("#create-id", "carol")
	b.typeInto("#create-webhook", "http://127.0.0.1:9/hook")
	b.typeInto("#create-secret", "s3cret")
	b.typeInto("#create-events", "message.*, session.connected")
	b.click("#create-form button")

	// 5. The pairing view shows the live QR as a PNG.
	b.waitFor("the QR code", "location.hash === '#/pair/carol' && !!document.querySelector('#qr') && document.querySelector('#qr').complete && document.querySelector('#qr').naturalWidth > 0")
	fake.mu.Lock()
	created := fake.created
	fake.mu.Unlock()
	last, _ := json.Marshal(created[len(created)-1])
	if want := `{"id":"carol","webhook":{"events":["message.*","session.connected"],"secret":"s3cret","url":"http://127.0.0.1:9/hook"}}`; string(last) != want {
		t.Errorf("POST /v1/profiles body %s, want %s", last, want)
	}
	b.waitFor("a refreshed QR code", "(() => { window.__qrSeen = window.__qrSeen || new Set(); window.__qrSeen.add(document.querySelector('#qr') && document.querySelector('#qr').src); return window.__qrSeen.size >= 2 })()")
	pairing := shot("03-pairing")
	_, counts, _ = pngStats(t, pairing, colors)
	if counts["black"] < 20000 || counts["green-bg"] > 1000 {
		t.Errorf("pairing screenshot: %d black pixels (QR), %d green background pixels", counts["black"], counts["green-bg"])
	}
	if b.evalString("String(document.getElementById('pair-card').classList.contains('linked'))") != "false" {
		t.Error("the pairing view is green before the phone linked")
	}

	// 6. The phone links: the view turns green and stops asking for QRs.
	fake.setState("carol", "connected", "Carol", "4915100000003:1@s.whatsapp.net")
	b.waitFor("the linked view", "document.getElementById('pair-card').classList.contains('linked') && !document.querySelector('#qr')")
	linked := shot("04-linked")
	if bg := b.evalString("getComputedStyle(document.getElementById('pair-card')).backgroundColor"); bg != "rgb(230, 244, 234)" {
		t.Errorf("linked card background %s, want the green rgb(230, 244, 234)", bg)
	}
	if msg := b.evalString("document.getElementById('pair-message').textContent"); !strings.Contains(msg, "Carol") || !strings.Contains(msg, "4915100000003:1@s.whatsapp.net") {
		t.Errorf("linked message %q", msg)
	}
	_, counts, _ = pngStats(t, linked, colors)
	if counts["green-bg"] < 50000 || counts["green"] < 20000 {
		t.Errorf("linked screenshot is not green: %d light-green, %d green pixels", counts["green-bg"], counts["green"])
	}

	// 7. Recent events, newest first, across pages of the log.
	b.eval("(() => { location.hash = '#/events/alice'; return true })()", nil)
	b.waitFor("the events", "document.querySelectorAll('#events tr[data-event]').length === 4")
	shot("05-events")
	if got := b.evalString("Array.from(document.querySelectorAll('#events tr[data-event]')).map(r => r.dataset.event).join(',')"); got != "4,3,2,1" {
		t.Errorf("event order %s, want newest first 4,3,2,1", got)
	}
	if text := b.evalString("document.getElementById('events').innerText"); !strings.Contains(text, "hello from bob") || !strings.Contains(text, "message.received") {
		t.Errorf("events view:\n%s", text)
	}

	// 8. The key survives a reload. Without the cluster view the profiles
	// still show, and the nodes come back when it answers again.
	fake.mu.Lock()
	fake.noCluster = true
	fake.mu.Unlock()
	b.navigate(srv.URL + "/")
	b.waitFor("the profiles without the cluster view", "document.getElementById('login').hidden && document.querySelectorAll('#profiles tr[data-profile]').length === 4 && document.querySelector('#nodes .card-error') !== null")
	if text := b.evalString("document.querySelector('#nodes .card-error').textContent"); !strings.Contains(text, "not implemented") {
		t.Errorf("nodes card without the cluster view says %q", text)
	}
	fake.mu.Lock()
	fake.noCluster = false
	fake.mu.Unlock()
	b.waitFor("the nodes again", "document.querySelectorAll('#nodes tr[data-node]').length === 3")

	// "Forget key" asks for the key again.
	b.click("#forget")
	b.waitFor("the key form after forgetting", "!document.getElementById('login').hidden && localStorage.getItem('amarula.adminKey') === null")

	// 9. A #key= link stores the key and removes it from the address bar.
	b.navigate(srv.URL + "/#key=" + testKey)
	b.waitFor("the overview from a key link", "document.querySelectorAll('#nodes tr[data-node]').length === 3")
	if href := b.evalString("location.href"); strings.Contains(href, testKey) {
		t.Errorf("the key stayed in the address bar: %s", href)
	}

	if p := b.pageProblems(); len(p) > 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(p, "\n"))
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.unexpected) > 0 {
		t.Errorf("requests outside the API and /: %v", fake.unexpected)
	}
	if fake.badAuth < 1 || fake.badAuth > 2 {
		t.Errorf("%d requests with a wrong key, want the wrong key's first one or two calls only", fake.badAuth)
	}
	t.Logf("%d QR PNGs served; screenshots: %s", fake.qrPNGs, strings.Join(listPNG(art), ", "))
}

func listPNG(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}
