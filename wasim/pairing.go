package wasim

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/wasim/phone"
)

// Pairing errors.
var (
	ErrUnknownRef     = errors.New("wasim: no connected client shows this QR ref")
	ErrQRMismatch     = errors.New("wasim: QR keys do not match the connection")
	ErrPairRejected   = errors.New("wasim: companion rejected pair-success")
	ErrPairTimeout    = errors.New("wasim: companion did not confirm pairing in time")
	ErrNoCodePairing  = errors.New("wasim: no client is waiting for a phone code for this phone")
	ErrUnknownPhone   = errors.New("wasim: unknown phone")
	ErrUnknownDevice  = errors.New("wasim: unknown device")
	ErrPhoneExists    = errors.New("wasim: phone already exists")
	ErrInvalidRequest = errors.New("wasim: invalid request")
	ErrUnknownMessage = errors.New("wasim: unknown message")
)

const numRefs = 6

func (c *conn) startRegistration() error {
	pd := c.payload.GetDevicePairingData()
	if pd == nil || len(pd.GetERegid()) != 4 || len(pd.GetEIdent()) != 32 || len(pd.GetESkeyID()) != 3 ||
		len(pd.GetESkeyVal()) != 32 || len(pd.GetESkeySig()) != 64 {
		c.log.Info("registration payload without valid pairing data, closing")
		return errors.New("bad device pairing data")
	}
	reg := &registration{
		regID:  parseBE(pd.GetERegid()),
		skeyID: parseBE(pd.GetESkeyID()),
	}
	copy(reg.identity[:], pd.GetEIdent())
	copy(reg.skey[:], pd.GetESkeyVal())
	copy(reg.skeySig[:], pd.GetESkeySig())
	refs := make([]waBinary.Node, numRefs)
	for i := range refs {
		ref := "2@" + base64.StdEncoding.EncodeToString([]byte(randomID(24)))
		reg.refs = append(reg.refs, ref)
		refs[i] = waBinary.Node{Tag: "ref", Content: []byte(ref)}
	}
	c.srv.mu.Lock()
	c.reg = reg // under s.mu: findCodePairing reads it from other goroutines
	for _, r := range reg.refs {
		c.srv.pairRefs[r] = c
	}
	c.srv.mu.Unlock()
	return c.send(waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{
		"from": types.ServerJID, "type": "set", "id": randomID(8), "xmlns": "md",
	}, Content: []waBinary.Node{{Tag: "pair-device", Content: refs}}})
}

func (r *registration) abortPairing(err error) {
	r.mu.Lock()
	ch := r.pairRes
	r.pairRes = nil
	r.mu.Unlock()
	if ch != nil {
		ch <- err
	}
}

// pairCompanion makes acct's phone sign the companion on c and waits for
// the companion's pair-device-sign. It returns the new device JID.
func (s *Server) pairCompanion(ctx context.Context, c *conn, acct *account, advSecret []byte) (types.JID, error) {
	reg := c.reg
	s.mu.Lock()
	acct.nextIdx++
	d := &device{
		acct: acct, idx: acct.nextIdx, noisePub: c.noisePub,
		regID: reg.regID, identity: reg.identity,
		skeyID: reg.skeyID, skey: reg.skey, skeySig: reg.skeySig,
		keyIndex: uint32(acct.nextIdx),
	}
	acct.devices[d.idx] = d
	for _, r := range reg.refs {
		delete(s.pairRefs, r)
	}
	s.mu.Unlock()
	fail := func(err error) (types.JID, error) {
		s.mu.Lock()
		delete(acct.devices, d.idx)
		s.mu.Unlock()
		return types.EmptyJID, err
	}
	container, err := acct.phone.dev.SignCompanion(reg.identity, advSecret, uint32(time.Now().Unix()), d.keyIndex, time.Now().Unix())
	if err != nil {
		return fail(err)
	}
	res := make(chan error, 1)
	id := randomID(8)
	reg.mu.Lock()
	reg.pairIQ, reg.pairDev, reg.pairRes = id, d, res
	reg.mu.Unlock()
	err = c.send(waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{
		"from": types.ServerJID, "type": "set", "id": id, "xmlns": "md",
	}, Content: []waBinary.Node{{Tag: "pair-success", Content: []waBinary.Node{
		{Tag: "device-identity", Content: container},
		{Tag: "platform", Attrs: waBinary.Attrs{"name": "android"}},
		{Tag: "device", Attrs: waBinary.Attrs{"jid": d.jid(), "lid": d.lidJID()}},
	}}}})
	if err != nil {
		reg.abortPairing(err)
		return fail(err)
	}
	t := time.NewTimer(s.cfg.PairTimeout)
	defer t.Stop()
	select {
	case err = <-res:
	case <-t.C:
		err = ErrPairTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		reg.abortPairing(err)
		return fail(err)
	}
	s.stats.pairings.Add(1)
	s.log.Info("companion paired", "device", d.jid().String())
	s.notifyDevicesChanged(acct)
	return d.jid(), nil
}

// handlePairResponse handles the companion's answer to pair-success.
func (c *conn) handlePairResponse(n *waBinary.Node) bool {
	reg := c.reg
	if reg == nil {
		return false
	}
	id, _ := n.Attrs["id"].(string)
	reg.mu.Lock()
	if id == "" || id != reg.pairIQ || reg.pairRes == nil {
		reg.mu.Unlock()
		return false
	}
	d, res := reg.pairDev, reg.pairRes
	reg.pairRes = nil
	reg.mu.Unlock()
	if n.Attrs["type"] != "result" {
		errNode := n.GetChildByTag("error")
		res <- fmt.Errorf("%w: %v %v", ErrPairRejected, errNode.Attrs["code"], errNode.Attrs["text"])
		c.closeAfter(c.srv.cfg.StreamErrorCloseDelay)
		return true
	}
	di, ok := n.GetOptionalChildByTag("pair-device-sign", "device-identity")
	raw, _ := di.Content.([]byte)
	if !ok || len(raw) == 0 {
		res <- fmt.Errorf("%w: pair-device-sign without device-identity", ErrPairRejected)
		c.closeAfter(c.srv.cfg.StreamErrorCloseDelay)
		return true
	}
	d.mu.Lock()
	d.deviceIdentity = raw
	d.linked = true
	d.mu.Unlock()
	_ = c.send(waBinary.Node{Tag: "stream:error", Attrs: waBinary.Attrs{"code": "515"}})
	c.closeAfter(c.srv.cfg.StreamErrorCloseDelay)
	res <- nil
	return true
}

// codePairing is the state of a phone-code pairing on one unpaired connection.
type codePairing struct {
	user       string
	wrappedEph []byte
	ref        []byte
	finish     chan codeFinish
}

type codeFinish struct {
	bundle   []byte
	identity [32]byte
}

// handleLinkCodeReg handles <link_code_companion_reg> iqs (notes §3.6).
func (c *conn) handleLinkCodeReg(iq *waBinary.Node, reg waBinary.Node) {
	if c.reg == nil {
		_ = c.send(iqError(iq, 400, "bad-request"))
		return
	}
	jid, _ := reg.Attrs["jid"].(types.JID)
	switch reg.Attrs["stage"] {
	case "companion_hello":
		wrapped, _ := reg.GetChildByTag("link_code_pairing_wrapped_companion_ephemeral_pub").Content.([]byte)
		if len(wrapped) != 80 || jid.User == "" {
			_ = c.send(iqError(iq, 400, "bad-request"))
			return
		}
		cp := &codePairing{user: jid.User, wrappedEph: wrapped, ref: []byte(randomID(16)), finish: make(chan codeFinish, 1)}
		c.reg.mu.Lock()
		c.reg.code = cp
		c.reg.mu.Unlock()
		_ = c.send(iqResult(iq, waBinary.Node{Tag: "link_code_companion_reg", Content: []waBinary.Node{
			{Tag: "link_code_pairing_ref", Content: cp.ref},
		}}))
	case "companion_finish":
		c.reg.mu.Lock()
		cp := c.reg.code
		c.reg.mu.Unlock()
		bundle, _ := reg.GetChildByTag("link_code_pairing_wrapped_key_bundle").Content.([]byte)
		ident, _ := reg.GetChildByTag("companion_identity_public").Content.([]byte)
		ref, _ := reg.GetChildByTag("link_code_pairing_ref").Content.([]byte)
		if cp == nil || len(ident) != 32 || string(ref) != string(cp.ref) {
			_ = c.send(iqError(iq, 400, "bad-request"))
			return
		}
		_ = c.send(iqResult(iq))
		select {
		case cp.finish <- codeFinish{bundle: bundle, identity: [32]byte(ident)}:
		default:
		}
	default:
		_ = c.send(iqError(iq, 400, "bad-request"))
	}
}

func (s *Server) abortCodePairing(*conn) {}

// findCodePairing returns the newest unpaired connection waiting for a code
// typed on user's phone.
func (s *Server) findCodePairing(user string) (*conn, *codePairing) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var best *conn
	var bestCP *codePairing
	for c := range s.conns {
		if c.reg == nil {
			continue
		}
		c.reg.mu.Lock()
		cp := c.reg.code
		c.reg.mu.Unlock()
		if cp != nil && cp.user == user && (best == nil || c.id > best.id) {
			best, bestCP = c, cp
		}
	}
	return best, bestCP
}

// linkCode runs the primary side of phone-code pairing for acct.
func (s *Server) linkCode(ctx context.Context, acct *account, code string) (types.JID, error) {
	norm, err := phone.NormalizeLinkCode(code)
	if err != nil {
		return types.EmptyJID, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	c, cp := s.findCodePairing(acct.user)
	if c == nil {
		return types.EmptyJID, ErrNoCodePairing
	}
	lc, wrappedPrimary, err := acct.phone.dev.StartLinkCode(norm, cp.wrappedEph)
	if err != nil {
		return types.EmptyJID, err
	}
	pub := lc.PrimaryIdentityPub()
	err = c.send(waBinary.Node{Tag: "notification", Attrs: waBinary.Attrs{
		"from": types.ServerJID, "type": "link_code_companion_reg", "id": randomID(8), "t": time.Now().Unix(),
	}, Content: []waBinary.Node{{Tag: "link_code_companion_reg", Attrs: waBinary.Attrs{"stage": "primary_hello"}, Content: []waBinary.Node{
		{Tag: "link_code_pairing_ref", Content: cp.ref},
		{Tag: "link_code_pairing_wrapped_primary_ephemeral_pub", Content: wrappedPrimary},
		{Tag: "primary_identity_pub", Content: pub[:]},
	}}}})
	if err != nil {
		return types.EmptyJID, err
	}
	t := time.NewTimer(s.cfg.PairTimeout)
	defer t.Stop()
	var fin codeFinish
	select {
	case fin = <-cp.finish:
	case <-t.C:
		return types.EmptyJID, ErrPairTimeout
	case <-ctx.Done():
		return types.EmptyJID, ctx.Err()
	case <-c.ctx.Done():
		return types.EmptyJID, errConnClosed
	}
	if fin.identity != c.reg.identity {
		return types.EmptyJID, fmt.Errorf("%w: companion identity differs from registration", ErrPairRejected)
	}
	adv, err := lc.Finish(fin.bundle, fin.identity)
	if err != nil {
		return types.EmptyJID, err
	}
	return s.pairCompanion(ctx, c, acct, adv)
}

// linkQR runs QR pairing: the phone of acct scanned qr.
func (s *Server) linkQR(ctx context.Context, acct *account, qr string) (types.JID, error) {
	q, err := phone.ParseQR(qr)
	if err != nil {
		return types.EmptyJID, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	s.mu.RLock()
	c := s.pairRefs[q.Ref]
	s.mu.RUnlock()
	if c == nil {
		return types.EmptyJID, ErrUnknownRef
	}
	if c.noisePub != q.NoisePub || c.reg.identity != q.IdentityPub {
		return types.EmptyJID, ErrQRMismatch
	}
	return s.pairCompanion(ctx, c, acct, q.AdvSecret)
}
