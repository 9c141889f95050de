package wasim

import (
	"context"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types/events"
)

func TestPhoneCodePairing(t *testing.T) {
	h := newHarness(t)
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	bob, _ := h.srv.CreatePhone("15550002222", "Bob")
	container := h.newContainer()
	c := h.newClient(container.NewDevice(), container)
	if err := c.cli.Connect(); err != nil {
		t.Fatal(err)
	}
	waitEvent[*events.QR](c, 10*time.Second, nil)
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	code, err := c.cli.PairPhone(ctx, "+1 555 000 1111", true, whatsmeow.PairClientChrome, "Chrome (Linux)")
	if err != nil {
		t.Fatalf("PairPhone: %v", err)
	}
	// A wrong code is rejected without disturbing the pairing attempt.
	if _, err := alice.LinkCode(ctx, "AAAA-AAAA"); err == nil {
		t.Fatal("wrong code accepted")
	} else {
		t.Log("wrong code:", err)
	}
	jid, err := alice.LinkCode(ctx, code)
	if err != nil {
		t.Fatalf("LinkCode(%s): %v", code, err)
	}
	ps := waitEvent[*events.PairSuccess](c, 10*time.Second, nil)
	if ps.ID != jid {
		t.Fatalf("PairSuccess %s, server %s", ps.ID, jid)
	}
	waitEvent[*events.Connected](c, 15*time.Second, nil)
	id, _ := bob.SendText(alice.JID(), "paired by code")
	waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == id })
}
