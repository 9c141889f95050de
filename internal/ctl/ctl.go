// Package ctl implements amarulactl: list, create and pair profiles and
// show the cluster, through a node's documented HTTP API (api.md).
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

const usage = `usage: amarulactl [--url URL] [--key KEY] <command>

commands:
  profiles list                      every profile with state and owner
  profiles create ID [--webhook URL] [--webhook-secret SECRET] [--events 'message.*,session.*']
  profiles qr ID [--png FILE]        current pairing code (or the QR image)
  cluster status                     nodes, their state and load

URL defaults to $AMARULA_URL or http://127.0.0.1:8080; KEY to $AMARULA_ADMIN_KEY.`

// errUsage marks a wrong invocation (exit code 2).
var errUsage = errors.New("usage")

// Run executes one command and returns the process exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("amarulactl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	base := fs.String("url", firstNonEmpty(getenv("AMARULA_URL"), "http://127.0.0.1:8080"), "node API base URL")
	key := fs.String("key", getenv("AMARULA_ADMIN_KEY"), "admin key")
	timeout := fs.Duration("timeout", 15*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintln(stderr, usage)
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, err
	}
	c := &client{base: strings.TrimRight(*base, "/"), key: *key, http: &http.Client{Timeout: *timeout}}
	if _, err := url.Parse(c.base); err != nil || !strings.HasPrefix(c.base, "http") {
		return 2, fmt.Errorf("--url %q is not an http(s) URL", *base)
	}
	err := dispatch(ctx, c, fs.Args(), stdout)
	switch {
	case err == nil:
		return 0, nil
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, usage)
		return 2, err
	default:
		return 1, err
	}
}

func dispatch(ctx context.Context, c *client, args []string, out io.Writer) error {
	if len(args) < 2 {
		return fmt.Errorf("%w: missing command", errUsage)
	}
	switch args[0] + " " + args[1] {
	case "profiles list":
		return c.listProfiles(ctx, out)
	case "profiles create":
		return c.createProfile(ctx, args[2:], out)
	case "profiles qr":
		return c.qr(ctx, args[2:], out)
	case "cluster status":
		return c.cluster(ctx, out)
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, strings.Join(args[:2], " "))
}

type client struct {
	base, key string
	http      *http.Client
}

// apiError is the API's error body.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (c *client) do(ctx context.Context, method, path string, body any, accept string) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e apiError
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return nil, fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Error.Code, e.Error.Message)
		}
		return nil, fmt.Errorf("%s %s: status %d", method, path, resp.StatusCode)
	}
	return b, nil
}

type profile struct {
	ID             string `json:"id"`
	State          string `json:"state"`
	Owner          string `json:"owner"`
	JID            string `json:"jid"`
	ConnectedSince *int64 `json:"connected_since"`
}

func (c *client) listProfiles(ctx context.Context, out io.Writer) error {
	b, err := c.do(ctx, http.MethodGet, "/v1/profiles", nil, "")
	if err != nil {
		return err
	}
	var resp struct {
		Profiles []profile `json:"profiles"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return fmt.Errorf("decode profiles: %w", err)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tOWNER\tJID\tCONNECTED SINCE")
	for _, p := range resp.Profiles {
		since := "-"
		if p.ConnectedSince != nil {
			since = time.Unix(*p.ConnectedSince, 0).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.ID, p.State, dash(p.Owner), dash(p.JID), since)
	}
	return tw.Flush()
}

func (c *client) createProfile(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("profiles create", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	hook := fs.String("webhook", "", "webhook URL")
	secret := fs.String("webhook-secret", "", "webhook HMAC secret")
	events := fs.String("events", "", "comma list of event patterns")
	id, rest := splitID(args)
	if err := fs.Parse(rest); err != nil || id == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: profiles create ID [--webhook URL] [--webhook-secret S] [--events P,…]", errUsage)
	}
	body := map[string]any{"id": id}
	if *hook != "" {
		wh := map[string]any{"url": *hook, "secret": *secret}
		if *events != "" {
			wh["events"] = strings.Split(*events, ",")
		}
		body["webhook"] = wh
	}
	if _, err := c.do(ctx, http.MethodPost, "/v1/profiles", body, ""); err != nil {
		return err
	}
	fmt.Fprintf(out, "created profile %s; pair it with: amarulactl profiles qr %s\n", id, id)
	return nil
}

func (c *client) qr(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("profiles qr", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	png := fs.String("png", "", "write the QR image to this file")
	id, rest := splitID(args)
	if err := fs.Parse(rest); err != nil || id == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: profiles qr ID [--png FILE]", errUsage)
	}
	path := "/v1/profiles/" + url.PathEscape(id) + "/qr"
	if *png != "" {
		b, err := c.do(ctx, http.MethodGet, path, nil, "image/png")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*png, b, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s (%d bytes)\n", *png, len(b))
		return nil
	}
	b, err := c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	var q struct {
		Code      string `json:"code"`
		ExpiresAt int64  `json:"expires_at"`
	}
	if err := json.Unmarshal(b, &q); err != nil {
		return fmt.Errorf("decode qr: %w", err)
	}
	fmt.Fprintln(out, q.Code)
	if q.ExpiresAt > 0 {
		fmt.Fprintf(out, "expires %s\n", time.Unix(q.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

func (c *client) cluster(ctx context.Context, out io.Writer) error {
	b, err := c.do(ctx, http.MethodGet, "/v1/cluster", nil, "")
	if err != nil {
		return err
	}
	var resp struct {
		Nodes []struct {
			Name     string `json:"name"`
			Address  string `json:"address"`
			State    string `json:"state"`
			Profiles int    `json:"profiles"`
			Version  string `json:"version"`
		} `json:"nodes"`
		ProfilesTotal int `json:"profiles_total"`
		Unassigned    int `json:"unassigned"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return fmt.Errorf("decode cluster: %w", err)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tPROFILES\tADDRESS\tVERSION")
	for _, n := range resp.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", n.Name, n.State, n.Profiles, dash(n.Address), dash(n.Version))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "profiles: %d total, %d unassigned\n", resp.ProfilesTotal, resp.Unassigned)
	return nil
}

// splitID takes the first non-flag argument as the profile id, so flags may
// come before or after it.
func splitID(args []string) (string, []string) {
	for i, a := range args {
		if !strings.HasPrefix(a, "-") && (i == 0 || !strings.HasPrefix(args[i-1], "--") || strings.Contains(args[i-1], "=")) {
			return a, append(append([]string{}, args[:i]...), args[i+1:]...)
		}
	}
	return "", args
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
