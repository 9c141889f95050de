package node

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestE2EPairPhone pairs by phone code instead of QR: POST /pair-phone
// answers an 8-character code, the phone enters it, the profile connects,
// and messages flow.
func TestE2EPairPhone(t *testing.T) {
	const id = "bycode"
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		n := startNode(t, nodeConfig(s, b, "n1"))
		c := n.api
		c.createProfile(id, nil)
		c.waitQR(id) // the session is up and pairing
		var pc struct {
			Code string `json:"code"`
		}
		c.json(http.MethodPost, "/v1/profiles/"+id+"/pair-phone", map[string]string{"phone": "+" + ownNumber}, http.StatusOK, &pc)
		if !regexp.MustCompile(`^[A-Z0-9]{4}-[A-Z0-9]{4}$`).MatchString(pc.Code) {
			t.Fatalf("pairing code %q, want ABCD-EFGH", pc.Code)
		}
		var out struct {
			DeviceJID string `json:"device_jid"`
		}
		httpJSON(t, http.MethodPost, s.admin+"/admin/phones/"+ownNumber+"/link-code", "", map[string]string{"code": pc.Code}, http.StatusOK, &out)
		p := c.waitState(id, "connected", 30*time.Second)
		if !strings.HasPrefix(p.JID, ownNumber) || !strings.HasPrefix(out.DeviceJID, ownNumber) {
			t.Fatalf("paired by code as %q (device %q)", p.JID, out.DeviceJID)
		}
		in := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": "paired by code"})
		c.waitMessage(id, in, nil)
		r := c.send(id, map[string]any{"to": s.peerJID(), "text": "answered"})
		s.waitReceived(t, peerNumber, r.ID)
		if st, _, _ := c.do(http.MethodPost, "/v1/profiles/"+id+"/pair-phone", map[string]string{"phone": "+" + ownNumber}, nil); st != http.StatusConflict {
			t.Fatalf("pair-phone on a paired profile: %d, want 409", st)
		}
	})
}
