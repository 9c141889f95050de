package testcluster

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// PeerPhone is the number of the phone that chats with every profile.
const PeerPhone = "15559990000"

// Linked is a profile paired with a wasim phone (its own account).
type Linked struct {
	Profile    string
	Phone      string // the account's phone number
	AccountJID string // user JID of the account
	DeviceJID  string // the companion device the node runs
}

// EnsurePeer creates the peer phone once; it returns its user JID.
func (c *Cluster) EnsurePeer() (string, error) {
	jid, err := c.Wasim.Admin.CreatePhone(PeerPhone, "Peer")
	if StatusOf(err) == 409 {
		return PeerPhone + "@s.whatsapp.net", nil
	}
	return jid, err
}

// LinkProfile creates a phone (number) and the profile id, shows the
// profile's QR (fetched through any node, forwarded to the owner) to the
// phone and waits until wasim sees the companion connected.
func (c *Cluster) LinkProfile(id, number string) (Linked, error) {
	l := Linked{Profile: id, Phone: number}
	var err error
	if l.AccountJID, err = c.Wasim.Admin.CreatePhone(number, "Account "+id); err != nil && StatusOf(err) != 409 {
		return l, fmt.Errorf("create phone %s: %w", number, err)
	}
	if l.AccountJID == "" {
		l.AccountJID = number + "@s.whatsapp.net"
	}
	if err := c.anyAPI(func(a *Client) error { return a.CreateProfile(id) }); err != nil && StatusOf(err) != 409 {
		return l, fmt.Errorf("create profile %s: %w", id, err)
	}
	// A QR can expire or rotate between the fetch and the scan: retry.
	err = Poll(90*time.Second, 250*time.Millisecond, "profile "+id+" linked", func() error {
		var code string
		qerr := c.anyAPI(func(a *Client) error {
			var e error
			code, _, e = a.QR(id)
			return e
		})
		if qerr != nil {
			return qerr
		}
		dev, lerr := c.Wasim.Admin.Link(number, code)
		if lerr != nil {
			return lerr
		}
		l.DeviceJID = dev
		return nil
	})
	if err != nil {
		return l, err
	}
	err = Poll(60*time.Second, 100*time.Millisecond, "device "+l.DeviceJID+" connected", func() error {
		devs, err := c.Wasim.Admin.Devices()
		if err != nil {
			return err
		}
		if d := devs[l.DeviceJID]; !d.Connected {
			return fmt.Errorf("not connected (%+v)", d)
		}
		return nil
	})
	return l, err
}

// NextPhone returns a phone number not used yet in this cluster.
func (c *Cluster) NextPhone() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.phones++
	return fmt.Sprintf("1555%07d", 1000+c.phones)
}

// LinkMany links n profiles "<prefix>-<i>" with phones, parallel at a
// time, and waits until every one is connected in the API too.
func (c *Cluster) LinkMany(prefix string, n, parallel int) ([]Linked, error) {
	if parallel < 1 {
		parallel = 1
	}
	out := make([]Linked, n)
	errs := make([]error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = c.LinkProfile(fmt.Sprintf("%s-%d", prefix, i), c.NextPhone())
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return out, err
	}
	return out, c.WaitConnected(out, 60*time.Second)
}

// WaitConnected waits until every profile is "connected" in GET
// /v1/profiles and its device is connected in wasim.
func (c *Cluster) WaitConnected(ls []Linked, timeout time.Duration) error {
	return Poll(timeout, 200*time.Millisecond, fmt.Sprintf("%d profiles connected", len(ls)), func() error {
		var ps []Profile
		if err := c.anyAPI(func(a *Client) error {
			var e error
			ps, e = a.Profiles()
			return e
		}); err != nil {
			return err
		}
		state := map[string]Profile{}
		for _, p := range ps {
			state[p.ID] = p
		}
		devs, err := c.Wasim.Admin.Devices()
		if err != nil {
			return err
		}
		var bad []string
		for _, l := range ls {
			p := state[l.Profile]
			if p.State != "connected" || p.Owner == "" || !devs[l.DeviceJID].Connected {
				bad = append(bad, fmt.Sprintf("%s(%s@%s, wasim %v)", l.Profile, p.State, p.Owner, devs[l.DeviceJID].Connected))
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			return fmt.Errorf("not connected: %s", strings.Join(bad, " "))
		}
		return nil
	})
}

// Sent is one message a phone sent to a profile's account.
type Sent struct {
	ID      string
	Profile string
	At      time.Time
}

// Traffic sends texts from the peer phone to the profiles' accounts,
// round-robin, every interval, until count messages were sent, stop is
// closed, or maxDur passed (every bound is hard). Send errors are counted,
// not retried (the message was then not sent).
type Traffic struct {
	mu     sync.Mutex
	sent   []Sent
	errs   int
	lastEr error
	done   chan struct{}
	stop   chan struct{}
	once   sync.Once
}

// StartTraffic starts the sender goroutine; Stop ends it and waits.
func (c *Cluster) StartTraffic(ls []Linked, count int, interval, maxDur time.Duration) *Traffic {
	tr := &Traffic{done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(tr.done)
		deadline := time.Now().Add(maxDur)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; i < count && time.Now().Before(deadline); i++ {
			l := ls[i%len(ls)]
			id, err := c.Wasim.Admin.SendText(PeerPhone, l.AccountJID, fmt.Sprintf("chaos %s #%d", l.Profile, i))
			tr.mu.Lock()
			if err != nil {
				tr.errs++
				tr.lastEr = err
			} else {
				tr.sent = append(tr.sent, Sent{ID: id, Profile: l.Profile, At: time.Now()})
			}
			tr.mu.Unlock()
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return tr
}

// Count is the number of messages sent so far.
func (tr *Traffic) Count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.sent)
}

// WaitCount waits until n messages were sent (or the traffic ended).
func (tr *Traffic) WaitCount(n int, timeout time.Duration) error {
	return Poll(timeout, 20*time.Millisecond, fmt.Sprintf("%d messages sent", n), func() error {
		if got := tr.Count(); got < n && !isClosed(tr.done) {
			return fmt.Errorf("%d sent", got)
		}
		return nil
	})
}

// Stop ends the traffic and returns what was sent and the send errors.
func (tr *Traffic) Stop() ([]Sent, int, error) {
	tr.once.Do(func() { close(tr.stop) })
	<-tr.done
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]Sent(nil), tr.sent...), tr.errs, tr.lastEr
}

// Wait waits until the traffic ended by itself (count or maxDur).
func (tr *Traffic) Wait() ([]Sent, int, error) {
	<-tr.done
	return tr.Stop()
}

// Delivery is the outcome of checking sent messages against the store.
type Delivery struct {
	Sent, Stored, Duplicated, Lost int
	LostIDs                        []string
	DuplicatedIDs                  []string
}

func (d Delivery) String() string {
	return fmt.Sprintf("sent %d, stored %d, duplicated %d, lost %d", d.Sent, d.Stored, d.Duplicated, d.Lost)
}

// CheckStored waits (up to timeout) until every sent message is stored
// in its profile (GET messages on any node), then counts message.received
// events per id in each profile's event log: more than one is a
// duplicate, none (or not stored) is lost.
func (c *Cluster) CheckStored(sent []Sent, timeout time.Duration) (Delivery, error) {
	byProfile := map[string][]string{}
	for _, s := range sent {
		byProfile[s.Profile] = append(byProfile[s.Profile], s.ID)
	}
	d := Delivery{Sent: len(sent)}
	stored := map[string]bool{}
	err := Poll(timeout, 500*time.Millisecond, fmt.Sprintf("%d messages stored", len(sent)), func() error {
		missing := 0
		for p, ids := range byProfile {
			var msgs []Message
			if err := c.anyAPI(func(a *Client) error {
				var e error
				msgs, e = a.Messages(p)
				return e
			}); err != nil {
				return err
			}
			have := map[string]bool{}
			for _, m := range msgs {
				have[m.ID] = true
			}
			for _, id := range ids {
				if have[id] {
					stored[id] = true
				} else {
					missing++
				}
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d not stored yet", missing)
		}
		return nil
	})
	for p, ids := range byProfile {
		var evs []Event
		if e := c.anyAPI(func(a *Client) error {
			var e error
			evs, e = a.Events(p)
			return e
		}); e != nil {
			return d, e
		}
		counts := map[string]int{}
		for _, e := range evs {
			if e.Type == "message.received" {
				counts[e.MessageID()]++
			}
		}
		for _, id := range ids {
			switch n := counts[id]; {
			case n > 1:
				d.Duplicated++
				d.DuplicatedIDs = append(d.DuplicatedIDs, id)
			}
			if stored[id] && counts[id] > 0 {
				d.Stored++
			} else {
				d.Lost++
				d.LostIDs = append(d.LostIDs, p+"/"+id)
			}
		}
	}
	if err != nil && d.Lost == 0 {
		return d, err
	}
	return d, nil
}

// SendFromProfiles sends one text from each profile to the peer phone via
// the API (any node; retried with the same Idempotency-Key while the
// profile has no owner, bounded by timeout) and waits until the peer
// phone decrypted each. It returns the number sent, decrypted by the
// phone, and decrypted more than once.
func (c *Cluster) SendFromProfiles(ls []Linked, tag string, timeout time.Duration) (sent, decrypted, dup int, err error) {
	peerJID := PeerPhone + "@s.whatsapp.net"
	ids := map[string]string{}
	for _, l := range ls {
		key := tag + "-" + l.Profile
		var id string
		t0 := time.Now()
		perr := Poll(timeout, 250*time.Millisecond, "send from "+l.Profile, func() error {
			return c.anyAPI(func(a *Client) error {
				var e error
				id, e = a.SendText(l.Profile, peerJID, "reply "+key, key)
				return e
			})
		})
		if perr != nil {
			return sent, 0, 0, perr
		}
		ids[id] = l.Profile
		sent++
		c.mu.Lock()
		c.sendLat = append(c.sendLat, time.Since(t0))
		c.mu.Unlock()
	}
	seen := map[string]int{}
	err = Poll(timeout, 250*time.Millisecond, "peer phone decrypts the replies", func() error {
		got, err := c.Wasim.Admin.Received(PeerPhone, 0)
		if err != nil {
			return err
		}
		clear(seen)
		for _, r := range got {
			if _, ok := ids[r.ID]; ok {
				seen[r.ID]++
			}
		}
		if len(seen) < len(ids) {
			return fmt.Errorf("%d of %d decrypted", len(seen), len(ids))
		}
		return nil
	})
	for _, n := range seen {
		decrypted++
		if n > 1 {
			dup++
		}
	}
	return sent, decrypted, dup, err
}

// PhoneFailure is a message a simulated phone could not decrypt (it
// answered with a retry receipt).
type PhoneFailure struct{ Phone, ID string }

// SendLatencies returns (and forgets) how long each API send of
// SendFromProfiles took until a node accepted it, retries included.
func (c *Cluster) SendLatencies() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.sendLat
	c.sendLat = nil
	return out
}

// DecryptFailures lists decryption failures on both sides, from the logs:
// the nodes' "undecryptable message" (whatsmeow could not decrypt what a
// phone sent; message ids) and wasim's "could not decrypt" (a phone could
// not decrypt what a node sent and answered with a retry receipt). Either
// may heal — the node left the message unacknowledged and it was
// redelivered, or the node re-sent it on the retry receipt —; Healed
// tells the phone-side ones apart.
func (c *Cluster) DecryptFailures() (nodeIDs []string, phones []PhoneFailure) {
	field := func(line, key string) string {
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				return v
			}
		}
		return "?"
	}
	for _, n := range c.Nodes() {
		for _, line := range n.LogLines("undecryptable message") {
			nodeIDs = append(nodeIDs, field(line, "id"))
		}
	}
	for _, line := range c.Wasim.LogLines("could not decrypt") {
		phones = append(phones, PhoneFailure{Phone: field(line, "phone"), ID: field(line, "id")})
	}
	return nodeIDs, phones
}

// Healed reports whether the phone decrypted the message in the end.
func (c *Cluster) Healed(f PhoneFailure) bool {
	got, err := c.Wasim.Admin.Received(f.Phone, 0)
	if err != nil {
		return false
	}
	for _, r := range got {
		if r.ID == f.ID {
			return true
		}
	}
	return false
}

// FencedWrites reads amarula_fenced_writes_total (storage writes refused
// with ErrFenced) of every running node that answers /metrics. The
// counter restarts at 0 with each run of a node: read it before a restart.
func (c *Cluster) FencedWrites() map[string]int {
	out := map[string]int{}
	for _, n := range c.Running() {
		if m, err := n.API.Metrics(); err == nil {
			out[n.Name] = int(m["amarula_fenced_writes_total"])
		}
	}
	return out
}

// FencedLogLines counts log lines with storage.ErrFenced's message, per
// node, over every run of the node.
func (c *Cluster) FencedLogLines() map[string]int {
	out := map[string]int{}
	for _, n := range c.Nodes() {
		out[n.Name] = n.CountLog("write fenced by a newer owner")
	}
	return out
}
