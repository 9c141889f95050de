package wasim

import (
	"sort"
	"strings"
	"time"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// handleNode dispatches one decoded node from the client.
func (c *conn) handleNode(n *waBinary.Node) {
	switch n.Tag {
	case "iq":
		c.handleIQ(n)
	case "message":
		if c.dev != nil {
			c.srv.routeMessage(c, n)
		}
	case "receipt":
		if c.dev != nil {
			c.srv.handleReceipt(c, n)
		}
	case "ack":
		if c.dev != nil {
			c.srv.handleClientAck(c, n)
		}
	case "presence", "chatstate", "call", "notification":
		// Accepted and ignored: wasim does not simulate presence or calls.
	default:
		c.srv.logUnknownOnce("node:" + n.Tag)
	}
}

func (c *conn) handleIQ(n *waBinary.Node) {
	typ, _ := n.Attrs["type"].(string)
	if typ == "result" || typ == "error" {
		c.handlePairResponse(n)
		return
	}
	if _, ok := n.Attrs["id"].(string); !ok {
		c.srv.logUnknownOnce("iq-without-id")
		return
	}
	xmlns, _ := n.Attrs["xmlns"].(string)
	kids := n.GetChildren()
	var first waBinary.Node
	if len(kids) > 0 {
		first = kids[0]
	}
	switch xmlns {
	case "w:p":
		_ = c.send(iqResult(n))
		return
	case "md":
		switch first.Tag {
		case "link_code_companion_reg":
			c.handleLinkCodeReg(n, first)
			return
		case "remove-companion-device":
			_ = c.send(iqResult(n))
			if c.dev != nil {
				c.srv.unlink(c.dev, false)
			}
			return
		}
	}
	if c.dev == nil {
		// Unpaired connections may only pair.
		c.srv.logUnknownOnce("unpaired-iq:"+xmlns+"/"+first.Tag, "xmlns", xmlns)
		_ = c.send(iqError(n, 401, "not-authorized"))
		return
	}
	switch xmlns {
	case "encrypt":
		switch first.Tag {
		case "count":
			c.dev.mu.Lock()
			cnt := c.dev.preKeyCount()
			c.dev.mu.Unlock()
			_ = c.send(iqResult(n, waBinary.Node{Tag: "count", Attrs: waBinary.Attrs{"value": cnt}}))
		case "key":
			_ = c.send(iqResult(n, waBinary.Node{Tag: "list", Content: c.srv.fetchBundles(children(first))}))
		case "registration", "list", "identity", "type", "skey":
			c.srv.uploadPreKeys(c.dev, n)
			_ = c.send(iqResult(n))
		default:
			_ = c.send(iqResult(n))
		}
	case "usync":
		_ = c.send(iqResult(n, c.srv.usync(c.dev, first)))
	case "passive":
		_ = c.send(iqResult(n))
		if first.Tag == "active" {
			c.srv.activate(c)
		}
	case "w:m":
		if first.Tag == "media_conn" {
			_ = c.send(iqResult(n, c.srv.mediaConnNode()))
			return
		}
		c.srv.logUnknownOnce("iq:w:m/" + first.Tag)
		_ = c.send(iqError(n, 501, "feature-not-implemented"))
	case "w:g2":
		switch first.Tag {
		case "query":
			c.srv.groupInfo(c, n)
			return
		case "participating":
			c.srv.groupsParticipating(c, n)
			return
		}
		if typ == "set" && c.srv.groupSet(c, n, first) {
			return
		}
		c.srv.logUnknownOnce("iq:w:g2/" + first.Tag)
		_ = c.send(iqError(n, 501, "feature-not-implemented"))
	case "w:sync:app:state":
		// Minimal valid answer: every requested collection at version 0,
		// no snapshot, no patches (notes §10).
		var cols []waBinary.Node
		for _, col := range children(first) {
			cols = append(cols, waBinary.Node{Tag: "collection", Attrs: waBinary.Attrs{"name": col.Attrs["name"], "version": "0"}})
		}
		_ = c.send(iqResult(n, waBinary.Node{Tag: "sync", Content: cols}))
	default:
		c.srv.logUnknownOnce("iq:"+xmlns+"/"+first.Tag, "xmlns", xmlns)
		_ = c.send(iqError(n, 501, "feature-not-implemented"))
	}
}

func (s *Server) uploadPreKeys(d *device, n *waBinary.Node) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if reg, ok := n.GetChildByTag("registration").Content.([]byte); ok && len(reg) == 4 {
		d.regID = parseBE(reg)
	}
	if id, ok := n.GetChildByTag("identity").Content.([]byte); ok && len(id) == 32 {
		d.identity = [32]byte(id)
	}
	skey := n.GetChildByTag("skey")
	sid, _ := skey.GetChildByTag("id").Content.([]byte)
	sval, _ := skey.GetChildByTag("value").Content.([]byte)
	ssig, _ := skey.GetChildByTag("signature").Content.([]byte)
	if len(sid) == 3 && len(sval) == 32 && len(ssig) == 64 {
		d.skeyID, d.skey, d.skeySig = parseBE(sid), [32]byte(sval), [64]byte(ssig)
	}
	keys := children(n.GetChildByTag("list"))
	buf := make([]byte, 0, len(d.prekeys)+len(keys)*preKeyRecordSize)
	buf = append(buf, d.prekeys...)
	for _, k := range keys {
		id, _ := k.GetChildByTag("id").Content.([]byte)
		val, _ := k.GetChildByTag("value").Content.([]byte)
		if len(id) == 3 && len(val) == 32 {
			buf = append(buf, id...)
			buf = append(buf, val...)
		}
	}
	d.prekeys = buf
}

// bundle is a prekey bundle as served to another device.
type bundle struct {
	regID    uint32
	identity [32]byte
	skeyID   uint32
	skey     [32]byte
	skeySig  [64]byte
	pkID     uint32
	pk       []byte // nil when the device ran out of one-time prekeys
}

func (b *bundle) node(jid types.JID) waBinary.Node {
	content := []waBinary.Node{
		{Tag: "registration", Content: be32(b.regID)},
		{Tag: "type", Content: []byte{5}},
		{Tag: "identity", Content: b.identity[:]},
		{Tag: "skey", Content: []waBinary.Node{
			{Tag: "id", Content: be24(b.skeyID)},
			{Tag: "value", Content: b.skey[:]},
			{Tag: "signature", Content: b.skeySig[:]},
		}},
	}
	if b.pk != nil {
		content = append(content, waBinary.Node{Tag: "key", Content: []waBinary.Node{
			{Tag: "id", Content: be24(b.pkID)},
			{Tag: "value", Content: b.pk},
		}})
	}
	return waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": jid}, Content: content}
}

// lookupAccount resolves a PN or LID user.
func (s *Server) lookupAccount(jid types.JID) *account {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch jid.Server {
	case types.DefaultUserServer:
		return s.accounts[jid.User]
	case types.HiddenUserServer:
		return s.byLID[jid.User]
	}
	return nil
}

// lookupDevice resolves a companion device JID (device > 0).
func (s *Server) lookupDevice(jid types.JID) *device {
	a := s.lookupAccount(jid)
	if a == nil || jid.Device == 0 {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return a.devices[jid.Device]
}

// bundleFor takes a bundle (consuming a one-time prekey) for jid.
func (s *Server) bundleFor(jid types.JID) (*bundle, bool) {
	a := s.lookupAccount(jid)
	if a == nil {
		return nil, false
	}
	if jid.Device == 0 {
		p := a.phone.dev
		b := &bundle{regID: p.RegistrationID(), identity: p.IdentityPub()}
		b.skeyID, b.skey, b.skeySig = p.SignedPreKey()
		if id, pub, ok := p.TakePreKey(); ok {
			b.pkID, b.pk = id, pub[:]
		}
		return b, true
	}
	d := s.lookupDevice(jid)
	if d == nil {
		return nil, false
	}
	d.mu.Lock()
	if !d.linked || d.removed {
		d.mu.Unlock()
		return nil, false
	}
	b := &bundle{regID: d.regID, identity: d.identity, skeyID: d.skeyID, skey: d.skey, skeySig: d.skeySig}
	var took bool
	b.pkID, b.pk, took = d.takePreKey()
	left := d.preKeyCount()
	c := d.conn
	d.mu.Unlock()
	if took && left < lowPreKeys && c != nil {
		// Like the real server: ask the device to top up its prekeys
		// (notification.go: handleEncryptNotification uploads when < 5).
		_ = c.send(waBinary.Node{Tag: "notification", Attrs: waBinary.Attrs{
			"from": types.ServerJID, "type": "encrypt", "id": randomID(8), "t": nowUnix(),
		}, Content: []waBinary.Node{{Tag: "count", Attrs: waBinary.Attrs{"value": left}}}})
	}
	return b, true
}

// lowPreKeys is whatsmeow's MinPreKeyCount: below it a device uploads more.
const lowPreKeys = 5

func (s *Server) fetchBundles(users []waBinary.Node) []waBinary.Node {
	out := make([]waBinary.Node, 0, len(users))
	for _, u := range users {
		jid, ok := u.Attrs["jid"].(types.JID)
		if u.Tag != "user" || !ok {
			continue
		}
		if b, ok := s.bundleFor(jid); ok {
			out = append(out, b.node(jid))
			continue
		}
		out = append(out, waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": jid}, Content: []waBinary.Node{
			{Tag: "error", Attrs: waBinary.Attrs{"code": "404", "text": "item-not-found"}},
		}})
	}
	return out
}

// deviceIDs lists the account's devices: 0 (the phone) plus linked companions.
func (s *Server) deviceIDs(a *account) []uint16 {
	s.mu.RLock()
	devs := make([]*device, 0, len(a.devices))
	for _, d := range a.devices {
		devs = append(devs, d)
	}
	s.mu.RUnlock()
	ids := []uint16{0}
	for _, d := range devs {
		d.mu.Lock()
		if d.linked && !d.removed {
			ids = append(ids, d.idx)
		}
		d.mu.Unlock()
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func (s *Server) usync(requester *device, q waBinary.Node) waBinary.Node {
	var wantDevices, wantLID, wantContact bool
	for _, qn := range children(q.GetChildByTag("query")) {
		switch qn.Tag {
		case "devices":
			wantDevices = true
		case "lid":
			wantLID = true
		case "contact":
			wantContact = true
		}
	}
	var users []waBinary.Node
	for _, u := range children(q.GetChildByTag("list")) {
		jid, ok := u.Attrs["jid"].(types.JID)
		if !ok {
			// Contact lookups carry "+NUMBER" (or NUMBER@c.us) as content.
			raw, _ := u.GetChildByTag("contact").Content.(string)
			if b, okb := u.GetChildByTag("contact").Content.([]byte); okb {
				raw = string(b)
			}
			num := strings.TrimPrefix(strings.SplitN(raw, "@", 2)[0], "+")
			if num == "" {
				continue
			}
			jid = types.NewJID(num, types.DefaultUserServer)
		}
		a := s.lookupAccount(jid)
		var content []waBinary.Node
		if wantContact {
			t := "out"
			if a != nil {
				t = "in"
			}
			content = append(content, waBinary.Node{Tag: "contact", Attrs: waBinary.Attrs{"type": t}})
		}
		if wantDevices {
			var list []waBinary.Node
			if a != nil {
				s.watch(a, requester)
				for _, id := range s.deviceIDs(a) {
					attrs := waBinary.Attrs{"id": int(id)}
					if id != 0 {
						attrs["key-index"] = int(id)
					}
					list = append(list, waBinary.Node{Tag: "device", Attrs: attrs})
				}
			}
			content = append(content, waBinary.Node{Tag: "devices", Content: []waBinary.Node{
				{Tag: "device-list", Content: list},
			}})
		}
		if wantLID && a != nil {
			content = append(content, waBinary.Node{Tag: "lid", Attrs: waBinary.Attrs{"val": a.lidJID()}})
		}
		users = append(users, waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": jid}, Content: content})
	}
	return waBinary.Node{Tag: "usync", Attrs: waBinary.Attrs{
		"sid": q.Attrs["sid"], "index": "0", "last": "true",
	}, Content: []waBinary.Node{
		{Tag: "result"},
		{Tag: "list", Content: users},
	}}
}

func (s *Server) mediaConnNode() waBinary.Node {
	return waBinary.Node{Tag: "media_conn", Attrs: waBinary.Attrs{
		"auth": s.media.auth, "ttl": "3600", "auth_ttl": "3600", "max_buckets": "12",
	}, Content: []waBinary.Node{{Tag: "host", Attrs: waBinary.Attrs{"hostname": s.cfg.MediaHost}}}}
}

// activate starts live delivery on c and flushes the device's queue,
// followed by <ib><offline count=N/></ib> (notes §9.5).
func (s *Server) activate(c *conn) {
	d := c.dev
	d.mu.Lock()
	if d.conn != c || d.active {
		d.mu.Unlock()
		return
	}
	d.active = true
	snapshot := make([][]byte, len(d.pending))
	for i, q := range d.pending {
		snapshot[i] = q.data
	}
	d.mu.Unlock()
	for _, data := range snapshot {
		if err := c.sendEncoded(data); err != nil {
			return
		}
	}
	_ = c.send(waBinary.Node{Tag: "ib", Attrs: waBinary.Attrs{"from": types.ServerJID}, Content: []waBinary.Node{
		{Tag: "offline", Attrs: waBinary.Attrs{"count": len(snapshot)}},
	}})
}

// deliver queues a stanza for d and sends it at once if d is live. The
// stanza stays queued until the device's receipt or ack removes it.
func (s *Server) deliver(d *device, kind byte, id string, n waBinary.Node) {
	data, err := EncodeNode(n)
	if err != nil {
		s.log.Error("marshal stanza", "err", err, "tag", n.Tag)
		return
	}
	d.mu.Lock()
	if d.removed {
		d.mu.Unlock()
		return
	}
	if len(d.pending) >= s.cfg.OfflineQueueLimit {
		s.log.Warn("offline queue full, dropping oldest", "device", d.jid().String())
		d.pending = d.pending[1:]
	}
	d.pending = append(d.pending, queued{kind: kind, id: id, data: data})
	c := d.conn
	live := c != nil && d.active
	d.mu.Unlock()
	if live {
		_ = c.sendEncoded(data)
	}
}

// dequeue removes queued stanzas of kind with any of ids.
func (d *device) dequeue(kind byte, ids ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.pending[:0]
	for _, q := range d.pending {
		drop := false
		if q.kind == kind {
			for _, id := range ids {
				if q.id == id {
					drop = true
					break
				}
			}
		}
		if !drop {
			out = append(out, q)
		}
	}
	for i := len(out); i < len(d.pending); i++ {
		d.pending[i] = queued{}
	}
	d.pending = out
	if len(d.pending) == 0 {
		d.pending = nil
	}
}

// unlink removes a companion: it gets <stream:error code=401
// device_removed> if connected and <failure 401> on later logins.
func (s *Server) unlink(d *device, notify bool) {
	d.mu.Lock()
	if d.removed {
		d.mu.Unlock()
		return
	}
	d.removed = true
	d.pending = nil
	d.prekeys = nil
	c := d.conn
	d.mu.Unlock()
	s.log.Info("device unlinked", "device", d.jid().String())
	s.notifyDevicesChanged(d.acct)
	if c != nil && notify {
		_ = c.send(waBinary.Node{Tag: "stream:error", Attrs: waBinary.Attrs{"code": "401"}, Content: []waBinary.Node{
			{Tag: "conflict", Attrs: waBinary.Attrs{"type": "device_removed"}},
		}})
		c.closeAfter(s.cfg.StreamErrorCloseDelay)
	}
}

func nowUnix() int64 { return time.Now().Unix() }

func (s *Server) watch(a *account, d *device) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.watchers == nil {
		a.watchers = map[*device]struct{}{}
	}
	a.watchers[d] = struct{}{}
}

// notifyDevicesChanged tells every companion that fetched a's device list
// to drop its cached copy (<notification type="devices"><update/>).
func (s *Server) notifyDevicesChanged(a *account) {
	s.mu.Lock()
	watchers := make([]*device, 0, len(a.watchers))
	for d := range a.watchers {
		d.mu.Lock()
		gone := d.removed
		d.mu.Unlock()
		if gone {
			delete(a.watchers, d)
			continue
		}
		watchers = append(watchers, d)
	}
	s.mu.Unlock()
	for _, d := range watchers {
		id := randomID(8)
		s.deliver(d, 'n', id, waBinary.Node{Tag: "notification", Attrs: waBinary.Attrs{
			"from": a.jid(), "type": "devices", "id": id, "t": nowUnix(), "lid": a.lidJID(),
		}, Content: []waBinary.Node{{Tag: "update", Attrs: waBinary.Attrs{"hash": randomID(4)}}}})
	}
}
