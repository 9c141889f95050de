package session

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waMmsRetry"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/amarula/amarula/msgstore"
)

// ErrMediaNotOnPhone is returned by RequestReupload when the sender's phone
// no longer has the file: no retry can bring it back.
var ErrMediaNotOnPhone = errors.New("session: the phone no longer has this media")

// RequestReupload asks the phone that sent stored message msgID to
// re-upload its media (a media retry receipt, for a file the CDN answers
// 404/410 for) and waits for the answer; it returns the new direct path.
// md is the message's media descriptor (its key encrypts the request).
func (s *Session) RequestReupload(ctx context.Context, msgID string, md msgstore.Media) (string, error) {
	if !s.running() {
		return "", ErrNotRunning
	}
	if len(md.MediaKey) == 0 {
		return "", fmt.Errorf("%w: media of %s has no key", ErrInvalidRequest, msgID)
	}
	m, err := s.msgs.Get(ctx, s.cfg.Profile, msgID)
	if err != nil {
		return "", fmt.Errorf("session %s: reupload %s: %w", s.cfg.Profile, msgID, err)
	}
	chat, err1 := types.ParseJID(m.Chat)
	sender, err2 := types.ParseJID(m.From)
	if err := errors.Join(err1, err2); err != nil {
		return "", fmt.Errorf("session %s: reupload %s: stored addresses: %w", s.cfg.Profile, msgID, err)
	}
	info := &types.MessageInfo{ID: msgID, MessageSource: types.MessageSource{
		Chat: chat, Sender: sender, IsFromMe: m.FromMe, IsGroup: chat.Server == types.GroupServer}}

	answer := make(chan *events.MediaRetry, 1)
	s.mu.Lock()
	if s.retries == nil {
		s.retries = make(map[string]chan *events.MediaRetry)
	}
	s.retries[msgID] = answer
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.retries[msgID] == answer {
			delete(s.retries, msgID)
		}
		s.mu.Unlock()
	}()

	cli := s.client()
	if !cli.IsLoggedIn() {
		return "", fmt.Errorf("%w (state %s)", ErrNotConnected, s.State())
	}
	if err := cli.SendMediaRetryReceipt(ctx, info, md.MediaKey); err != nil {
		return "", fmt.Errorf("session %s: reupload %s: %w", s.cfg.Profile, msgID, err)
	}
	var evt *events.MediaRetry
	select {
	case evt = <-answer:
	case <-ctx.Done():
		return "", ctx.Err()
	case <-s.done:
		return "", ErrNotRunning
	}
	notif, err := whatsmeow.DecryptMediaRetryNotification(evt, md.MediaKey)
	switch {
	case errors.Is(err, whatsmeow.ErrMediaNotAvailableOnPhone):
		return "", fmt.Errorf("%w: %s", ErrMediaNotOnPhone, msgID)
	case err != nil:
		return "", fmt.Errorf("session %s: reupload %s: %w", s.cfg.Profile, msgID, err)
	}
	switch notif.GetResult() {
	case waMmsRetry.MediaRetryNotification_SUCCESS:
		if notif.GetDirectPath() == "" {
			return "", fmt.Errorf("session %s: reupload %s: answer without a direct path", s.cfg.Profile, msgID)
		}
		return notif.GetDirectPath(), nil
	case waMmsRetry.MediaRetryNotification_NOT_FOUND:
		return "", fmt.Errorf("%w: %s", ErrMediaNotOnPhone, msgID)
	default:
		return "", fmt.Errorf("session %s: reupload %s: phone answered %s", s.cfg.Profile, msgID, notif.GetResult())
	}
}

// onMediaRetry hands a phone's answer to the waiting RequestReupload.
func (s *Session) onMediaRetry(e *events.MediaRetry) {
	s.mu.Lock()
	answer := s.retries[e.MessageID]
	s.mu.Unlock()
	if answer == nil {
		return
	}
	select {
	case answer <- e:
	default:
	}
}

// MediaHosts returns the CDN hosts WhatsApp hands this session for media
// downloads (whatsmeow's cached media connection, refreshed when stale),
// for the media worker's CDN downloader.
func (s *Session) MediaHosts(ctx context.Context) ([]string, error) {
	if !s.running() {
		return nil, ErrNotRunning
	}
	mc, err := s.client().DangerousInternals().RefreshMediaConn(ctx, false) //nolint:staticcheck // the only access to media hosts
	if err != nil {
		return nil, fmt.Errorf("session %s: media hosts: %w", s.cfg.Profile, err)
	}
	hosts := make([]string, 0, len(mc.Hosts))
	for _, h := range mc.Hosts {
		hosts = append(hosts, h.Hostname)
	}
	return hosts, nil
}

// MediaHTTPClient is the HTTP client media requests must use: the
// simulator redirect when Config.WhatsAppURL is set, nil (the default
// client) for real WhatsApp.
func (s *Session) MediaHTTPClient() *http.Client {
	if s.cfg.WhatsAppURL == "" {
		return nil
	}
	addr, err := simulatorAddr(s.cfg.WhatsAppURL)
	if err != nil {
		return nil
	}
	return loopbackHTTPClient(addr)
}
