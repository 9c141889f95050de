package testcluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// transport is shared by every harness client. Keep-alives are off so no
// idle connection (and its goroutines) outlives a test (goleak).
var transport = &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: 20 * time.Second}

func newHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Transport: transport, Timeout: timeout}
}

// StatusError is a non-expected HTTP answer.
type StatusError struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.Method, e.URL, e.Status, strings.TrimSpace(e.Body))
}

// doJSON does one request (JSON body when body != nil, bearer key when
// set), and decodes a 2xx answer into out. Other statuses are a
// *StatusError.
func doJSON(hc *http.Client, method, u, key string, hdr map[string]string, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.Header, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.Header, &StatusError{Method: method, URL: u, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.Header, fmt.Errorf("%s %s: decode: %w: %.200s", method, u, err, raw)
		}
	}
	return resp.Header, nil
}

// StatusOf returns the HTTP status of a *StatusError (0 otherwise).
func StatusOf(err error) int {
	if se, ok := err.(*StatusError); ok {
		return se.Status
	}
	return 0
}

// Client talks to one node's HTTP API (docs/api.md) with the admin key.
type Client struct {
	Base string // http://host:port
	Key  string
	HTTP *http.Client
}

// NewClient returns a client of the node API at base.
func NewClient(base, key string) *Client {
	return &Client{Base: base, Key: key, HTTP: newHTTPClient(20 * time.Second)}
}

// Do sends one request; a non-2xx answer is a *StatusError.
func (c *Client) Do(method, path string, body, out any) (http.Header, error) {
	return doJSON(c.HTTP, method, c.Base+path, c.Key, nil, body, out)
}

// Profile is an entry of GET /v1/profiles (and GET /v1/profiles/{id}).
type Profile struct {
	ID             string `json:"id"`
	State          string `json:"state"`
	Owner          string `json:"owner"`
	JID            string `json:"jid"`
	LID            string `json:"lid"`
	ConnectedSince *int64 `json:"connected_since"`
}

// CreateProfile is POST /v1/profiles.
func (c *Client) CreateProfile(id string) error {
	_, err := c.Do(http.MethodPost, "/v1/profiles", map[string]any{"id": id}, nil)
	return err
}

// Profile is GET /v1/profiles/{id} (forwarded to the owner).
func (c *Client) Profile(id string) (Profile, error) {
	var p Profile
	_, err := c.Do(http.MethodGet, "/v1/profiles/"+id, nil, &p)
	return p, err
}

// Profiles is GET /v1/profiles.
func (c *Client) Profiles() ([]Profile, error) {
	var out struct {
		Profiles []Profile `json:"profiles"`
	}
	_, err := c.Do(http.MethodGet, "/v1/profiles", nil, &out)
	return out.Profiles, err
}

// QR is GET /v1/profiles/{id}/qr; node is the X-Amarula-Node that served it.
func (c *Client) QR(id string) (code, node string, err error) {
	var q struct {
		Code string `json:"code"`
	}
	h, err := c.Do(http.MethodGet, "/v1/profiles/"+id+"/qr", nil, &q)
	if h != nil {
		node = h.Get("X-Amarula-Node")
	}
	if err == nil && q.Code == "" {
		err = fmt.Errorf("empty QR code")
	}
	return q.Code, node, err
}

// Move is POST /v1/profiles/{id}/move.
func (c *Client) Move(id, node string) error {
	_, err := c.Do(http.MethodPost, "/v1/profiles/"+id+"/move", map[string]string{"node": node}, nil)
	return err
}

// SendText is POST /v1/profiles/{id}/messages with an Idempotency-Key; it
// returns the message id.
func (c *Client) SendText(id, to, text, idemKey string) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	hdr := map[string]string{}
	if idemKey != "" {
		hdr["Idempotency-Key"] = idemKey
	}
	_, err := doJSON(c.HTTP, http.MethodPost, c.Base+"/v1/profiles/"+id+"/messages", c.Key, hdr,
		map[string]string{"to": to, "text": text}, &out)
	if err == nil && out.ID == "" {
		err = fmt.Errorf("send: no message id")
	}
	return out.ID, err
}

// Message is the subset of a stored message the harness checks.
type Message struct {
	ID     string `json:"id"`
	Chat   string `json:"chat"`
	From   string `json:"from"`
	FromMe bool   `json:"from_me"`
	Type   string `json:"type"`
	Text   string `json:"text"`
}

// Messages pages through every stored message of the profile.
func (c *Client) Messages(id string) ([]Message, error) {
	var all []Message
	before := ""
	for page := 0; page < 1000; page++ {
		q := url.Values{"limit": {"500"}}
		if before != "" {
			q.Set("before", before)
		}
		var out struct {
			Messages []Message `json:"messages"`
			Next     string    `json:"next"`
		}
		if _, err := c.Do(http.MethodGet, "/v1/profiles/"+id+"/messages?"+q.Encode(), nil, &out); err != nil {
			return all, err
		}
		all = append(all, out.Messages...)
		if out.Next == "" || len(out.Messages) == 0 {
			return all, nil
		}
		before = out.Next
	}
	return all, fmt.Errorf("messages of %s: more than 1000 pages", id)
}

// Event is one entry of a profile's event log.
type Event struct {
	ID   string          `json:"id"`
	Type string          `json:"type"`
	Time string          `json:"time"`
	Data json.RawMessage `json:"data"`
}

// MessageID is the "id" in a message.* event's data.
func (e Event) MessageID() string {
	var d struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(e.Data, &d)
	return d.ID
}

// Events pages through the profile's whole event log.
func (c *Client) Events(id string) ([]Event, error) {
	var all []Event
	after := "0"
	for page := 0; page < 10000; page++ {
		var out struct {
			Events []Event `json:"events"`
			Next   string  `json:"next"`
		}
		if _, err := c.Do(http.MethodGet, "/v1/profiles/"+id+"/events?limit=1000&after="+url.QueryEscape(after), nil, &out); err != nil {
			return all, err
		}
		all = append(all, out.Events...)
		if len(out.Events) == 0 || out.Next == "" {
			return all, nil
		}
		after = out.Next
	}
	return all, fmt.Errorf("events of %s: more than 10000 pages", id)
}

// ClusterView is GET /v1/cluster.
type ClusterView struct {
	Nodes []struct {
		Name     string `json:"name"`
		Address  string `json:"address"`
		State    string `json:"state"`
		Profiles int    `json:"profiles"`
	} `json:"nodes"`
	ProfilesTotal int `json:"profiles_total"`
	Unassigned    int `json:"unassigned"`
}

// Cluster is GET /v1/cluster.
func (c *Client) Cluster() (ClusterView, error) {
	var v ClusterView
	_, err := c.Do(http.MethodGet, "/v1/cluster", nil, &v)
	return v, err
}

// Ready is GET /readyz: nil when 200, else the error (with the body).
func (c *Client) Ready() error {
	_, err := c.Do(http.MethodGet, "/readyz", nil, nil)
	return err
}

// Metrics reads /metrics and sums every sample by metric name (labels
// dropped): enough for counters and gauges the harness compares.
func (c *Client) Metrics() (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/metrics", nil)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: status %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = line[:i]
			j := strings.LastIndexByte(line, '}')
			if j < 0 {
				continue
			}
			rest, ok = strings.TrimSpace(line[j+1:]), true
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

// WasimClient drives wasim's admin API (docs/wasim.md).
type WasimClient struct {
	Base string // http://host:port
	HTTP *http.Client
}

func (w *WasimClient) do(method, path string, body, out any) error {
	_, err := doJSON(w.HTTP, method, w.Base+path, "", nil, body, out)
	return err
}

// CreatePhone creates a simulated phone; it returns its user JID.
func (w *WasimClient) CreatePhone(number, name string) (string, error) {
	var out struct {
		JID string `json:"jid"`
	}
	err := w.do(http.MethodPost, "/admin/phones", map[string]string{"phone": number, "name": name}, &out)
	return out.JID, err
}

// Link makes the phone scan a QR code; it returns the linked device JID.
func (w *WasimClient) Link(number, qr string) (string, error) {
	var out struct {
		DeviceJID string `json:"device_jid"`
	}
	err := w.do(http.MethodPost, "/admin/phones/"+number+"/link", map[string]string{"qr": qr}, &out)
	return out.DeviceJID, err
}

// SendText makes a phone send a text; it returns the message id.
func (w *WasimClient) SendText(from, toJID, text string) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	err := w.do(http.MethodPost, "/admin/phones/"+from+"/messages", map[string]string{"to": toJID, "text": text}, &out)
	if err == nil && out.ID == "" {
		err = fmt.Errorf("wasim send: no id")
	}
	return out.ID, err
}

// Received is a message a phone received and decrypted.
type Received struct {
	Seq  int64  `json:"seq"`
	ID   string `json:"id"`
	From string `json:"from"`
	Chat string `json:"chat"`
	Text string `json:"text"`
}

// Received lists what a phone decrypted after seq.
func (w *WasimClient) Received(number string, after int64) ([]Received, error) {
	var out []Received
	err := w.do(http.MethodGet, fmt.Sprintf("/admin/phones/%s/messages?after=%d", number, after), nil, &out)
	return out, err
}

// Device is wasim's view of a linked companion.
type Device struct {
	JID              string `json:"jid"`
	Connected        bool   `json:"connected"`
	Removed          bool   `json:"removed"`
	ConnectionsTotal uint64 `json:"connections_total"`
	ReplacedTotal    uint64 `json:"replaced_total"`
	OverlapMsTotal   int64  `json:"overlap_ms_total"`
	Queued           int    `json:"queued"`
}

// Devices is GET /admin/devices, by device JID.
func (w *WasimClient) Devices() (map[string]Device, error) {
	var list []Device
	if err := w.do(http.MethodGet, "/admin/devices", nil, &list); err != nil {
		return nil, err
	}
	out := make(map[string]Device, len(list))
	for _, d := range list {
		out[d.JID] = d
	}
	return out, nil
}

// Stats is GET /admin/stats (the totals the harness reports).
type Stats struct {
	Devices          int    `json:"devices"`
	DevicesConnected int    `json:"devices_connected"`
	Connections      int    `json:"connections"`
	MessagesRouted   uint64 `json:"messages_routed"`
	Replaced         uint64 `json:"replaced"`
	Queued           int    `json:"queued"`
}

// Stats is GET /admin/stats.
func (w *WasimClient) Stats() (Stats, error) {
	var s Stats
	err := w.do(http.MethodGet, "/admin/stats", nil, &s)
	return s, err
}
