package wasim

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waMmsRetry"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestImageBothWaysByteIdentical(t *testing.T) {
	s := newScenario(t)
	h, alice, bob, c, ctx := s.harness, s.alice, s.bob, s.c, s.ctx

	// Client -> phone: upload over HTTP, send, the phone downloads and decrypts.
	img := randomBytes(150_000)
	up, err := c.cli.Upload(ctx, img, whatsmeow.MediaImage)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	resp, err := c.cli.SendMessage(ctx, bob.JID(), &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
		URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath), MediaKey: up.MediaKey,
		FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
		Mimetype: proto.String("image/jpeg"), Caption: proto.String("look"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	var got ReceivedMessage
	poll(t, 10*time.Second, "bob gets the image", func() bool {
		for _, m := range bob.Messages(0) {
			if m.ID == resp.ID {
				got = m
				return true
			}
		}
		return false
	})
	if got.Type != "media" || got.Media == nil || got.Media.Error != "" || got.Media.SHA256 != hex.EncodeToString(sum[:]) ||
		got.Media.Size != len(img) || got.Media.Mime != "image/jpeg" || got.Text != "look" || !bytes.Equal(got.Data, img) {
		t.Fatalf("phone got %+v (media %+v)", got, got.Media)
	}

	// Phone -> client: the client downloads from the url and from direct_path.
	img2 := randomBytes(70_000)
	id, err := bob.SendMedia(alice.JID(), "image", "image/png", img2, "back", "")
	if err != nil {
		t.Fatal(err)
	}
	evt := c.waitMessage(id)
	im := evt.Message.GetImageMessage()
	if im == nil || im.GetCaption() != "back" || evt.Info.MediaType != "image" {
		t.Fatalf("event %+v", evt)
	}
	data, err := c.cli.Download(ctx, im)
	if err != nil || !bytes.Equal(data, img2) {
		t.Fatalf("Download: %v (equal=%v)", err, bytes.Equal(data, img2))
	}
	data, err = c.cli.DownloadMediaWithPath(ctx, im.GetDirectPath(), im.GetFileEncSHA256(), im.GetFileSHA256(), im.GetMediaKey(), int(im.GetFileLength()), whatsmeow.MediaImage, "image")
	if err != nil || !bytes.Equal(data, img2) {
		t.Fatalf("DownloadMediaWithPath: %v", err)
	}

	// Documents too.
	doc := randomBytes(3000)
	id, err = bob.SendMedia(alice.JID(), "document", "application/pdf", doc, "", "a.pdf")
	if err != nil {
		t.Fatal(err)
	}
	evt = c.waitMessage(id)
	dm := evt.Message.GetDocumentMessage()
	if data, err = c.cli.Download(ctx, dm); err != nil || !bytes.Equal(data, doc) || dm.GetFileName() != "a.pdf" {
		t.Fatalf("document: %v", err)
	}

	// Expired media answers 404.
	if n, err := h.srv.ExpireMedia(id); err != nil || n != 1 {
		t.Fatalf("ExpireMedia: %d %v", n, err)
	}
	if _, err = c.cli.Download(ctx, dm); err == nil {
		t.Fatal("download of expired media succeeded")
	}
}

func TestReactionEditRevoke(t *testing.T) {
	s := newScenario(t)
	alice, bob, c, ctx := s.alice, s.bob, s.c, s.ctx

	// Phone -> client.
	orig, _ := bob.SendText(alice.JID(), "original")
	c.waitMessage(orig)
	sent, err := c.cli.SendMessage(ctx, bob.JID(), &waE2E.Message{Conversation: proto.String("mine")})
	if err != nil {
		t.Fatal(err)
	}

	rid, _ := bob.SendReaction(alice.JID(), sent.ID, "👍")
	evt := c.waitMessage(rid)
	if r := evt.Message.GetReactionMessage(); r.GetText() != "👍" || r.GetKey().GetID() != sent.ID || r.GetKey().GetFromMe() {
		t.Fatalf("reaction %+v", r)
	}
	eid, _ := bob.SendEdit(alice.JID(), orig, "edited")
	evt = c.waitMessage(eid)
	pm := evt.Message.GetProtocolMessage()
	if !evt.IsEdit || evt.Info.Edit != types.EditAttributeMessageEdit || pm.GetKey().GetID() != orig ||
		pm.GetEditedMessage().GetConversation() != "edited" {
		t.Fatalf("edit %+v", evt)
	}
	vid, _ := bob.SendRevoke(alice.JID(), orig)
	evt = c.waitMessage(vid)
	pm = evt.Message.GetProtocolMessage()
	if evt.Info.Edit != types.EditAttributeSenderRevoke || pm.GetType() != waE2E.ProtocolMessage_REVOKE || pm.GetKey().GetID() != orig {
		t.Fatalf("revoke %+v", evt)
	}

	// Client -> phone.
	for _, m := range []*waE2E.Message{
		c.cli.BuildReaction(bob.JID(), bob.JID(), orig, "❤"),
		c.cli.BuildEdit(bob.JID(), sent.ID, &waE2E.Message{Conversation: proto.String("mine, edited")}),
		c.cli.BuildRevoke(bob.JID(), types.EmptyJID, sent.ID),
	} {
		if _, err := c.cli.SendMessage(ctx, bob.JID(), m); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{"reaction": orig, "edit": sent.ID, "revoke": sent.ID}
	poll(t, 10*time.Second, "bob gets reaction, edit and revoke", func() bool {
		seen := 0
		for _, m := range bob.Messages(0) {
			if tgt, ok := want[m.Type]; ok && m.TargetID == tgt {
				if (m.Type == "reaction" && m.Text != "❤") || (m.Type == "edit" && m.Text != "mine, edited") {
					continue
				}
				seen++
			}
		}
		return seen == 3
	})
}

// Expired media answers 404 until the phone re-uploads it on the client's
// media retry request.
func TestMediaRetryAfterExpiry(t *testing.T) {
	s := newScenario(t)
	h, alice, bob, c, ctx := s.harness, s.alice, s.bob, s.c, s.ctx
	pic := randomBytes(20_000)
	id, _ := bob.SendMedia(alice.JID(), "image", "image/jpeg", pic, "", "")
	evt := c.waitMessage(id)
	im := evt.Message.GetImageMessage()
	if _, err := h.srv.ExpireMedia(id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cli.Download(ctx, im); !errors.Is(err, whatsmeow.ErrMediaDownloadFailedWith404) {
		t.Fatalf("download of expired media: %v", err)
	}
	if err := c.cli.SendMediaRetryReceipt(ctx, &evt.Info, im.GetMediaKey()); err != nil {
		t.Fatal(err)
	}
	mr := waitEvent[*events.MediaRetry](c, 10*time.Second, func(r *events.MediaRetry) bool { return r.MessageID == id })
	if mr.Error != nil {
		t.Fatalf("media retry error %+v", mr.Error)
	}
	notif, err := whatsmeow.DecryptMediaRetryNotification(mr, im.GetMediaKey())
	if err != nil || notif.GetResult() != waMmsRetry.MediaRetryNotification_SUCCESS {
		t.Fatalf("retry notification: %v %v", notif, err)
	}
	im.DirectPath = proto.String(notif.GetDirectPath())
	if data, err := c.cli.Download(ctx, im); err != nil || !bytes.Equal(data, pic) {
		t.Fatalf("download after re-upload: %v", err)
	}
}

func TestHistorySync(t *testing.T) {
	s := newScenario(t)
	alice, bob, c := s.alice, s.bob, s.c
	id, err := alice.SendHistorySync(*c.cli.Store.ID, []HistoryMessage{
		{Chat: bob.JID().String(), ID: "H1", Text: "old hello", Timestamp: 1700000000},
		{Chat: bob.JID().String(), ID: "H2", FromMe: true, Text: "old reply", Timestamp: 1700000060},
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := waitEvent[*events.HistorySync](c, 10*time.Second, nil)
	convs := hs.Data.GetConversations()
	if len(convs) != 1 || convs[0].GetID() != bob.JID().String() || len(convs[0].GetMessages()) != 2 ||
		convs[0].GetMessages()[1].GetMessage().GetMessage().GetConversation() != "old reply" {
		t.Fatalf("history %+v", hs.Data)
	}
	poll(t, 5*time.Second, "hist_sync receipt", func() bool { return alice.HasReceipt(id, "hist_sync") })
}
