package wasim

import (
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waMmsRetry"
	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/wasim/phone"
)

// handleMediaRetry serves a companion's media retry request (a receipt of
// type server-error, notes §8.5): the phone that sent the media re-uploads
// it and answers with <notification type="mediaretry">.
func (s *Server) handleMediaRetry(d *device, n *waBinary.Node) {
	id, _ := n.Attrs["id"].(string)
	rmr := n.GetChildByTag("rmr")
	chat, _ := rmr.Attrs["jid"].(types.JID)
	fromMe := rmr.AttrGetter().OptionalBool("from_me")
	sender := d.acct
	if !fromMe {
		sender = s.lookupAccount(chat)
	}
	reply := func(content []waBinary.Node) {
		s.deliver(d, 'n', id, waBinary.Node{Tag: "notification", Attrs: waBinary.Attrs{
			"from": d.acct.jid(), "type": "mediaretry", "id": id, "t": nowUnix(),
		}, Content: append([]waBinary.Node{{Tag: "rmr", Attrs: rmr.Attrs}}, content...)})
	}
	notAvailable := []waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": "2"}}}
	if sender == nil {
		reply(notAvailable)
		return
	}
	p := sender.phone
	p.mu.Lock()
	sm := p.sent[id]
	p.mu.Unlock()
	var ref *phone.MediaRef
	if sm != nil {
		ref = phone.Describe(sm.m).Media
	}
	if ref == nil {
		reply(notAvailable)
		return
	}
	encP, _ := n.GetChildByTag("encrypt", "enc_p").Content.([]byte)
	encIV, _ := n.GetChildByTag("encrypt", "enc_iv").Content.([]byte)
	if _, err := phone.DecryptMediaRetryReceipt(ref.MediaKey, encP, encIV, id); err != nil {
		s.log.Info("media retry request does not decrypt", "id", id, "err", err)
		reply(notAvailable)
		return
	}
	up, err := s.media.store.Reupload(blobID(ref.FileEncSHA256))
	result := waMmsRetry.MediaRetryNotification_SUCCESS
	if err != nil {
		result = waMmsRetry.MediaRetryNotification_NOT_FOUND
	}
	ct, iv, err := phone.EncryptMediaRetryNotification(ref.MediaKey, id, up.DirectPath, result)
	if err != nil {
		reply(notAvailable)
		return
	}
	s.stats.mediaRetries.Add(1)
	reply([]waBinary.Node{{Tag: "encrypt", Content: []waBinary.Node{
		{Tag: "enc_p", Content: ct},
		{Tag: "enc_iv", Content: iv},
	}}})
}
