package media

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/amarula/amarula/msgstore"
)

// CDN is a streaming Downloader for WhatsApp's media CDN: it GETs the
// encrypted file and decrypts it while the caller reads, so memory stays
// at two 64 KiB chunks whatever the file size (whatsmeow's Download returns
// the whole file as one []byte).
type CDN struct {
	// Client does the requests; its transport decides where they go (the
	// session's media client, or a rewriting one for wasim). Default
	// http.DefaultClient.
	Client *http.Client
	// Hosts returns the media hosts to try in order (whatsmeow's media
	// connection hosts, e.g. "mmg.whatsapp.net"). Required unless every
	// descriptor carries a full URL.
	Hosts func(ctx context.Context) ([]string, error)
	// Scheme of host URLs; default "https".
	Scheme string
}

var _ Downloader = (*CDN)(nil)

const waOrigin = "https://web.whatsapp.com"

// Download implements Downloader. It tries the descriptor's URL first (when
// it is a direct CDN URL), then each host with the direct path, like
// whatsmeow; 404/410 stop the search with ErrExpired.
func (c *CDN) Download(ctx context.Context, m msgstore.Media) (io.ReadCloser, error) {
	if len(m.MediaKey) == 0 {
		return nil, fmt.Errorf("%w: descriptor has no media key", ErrPermanent)
	}
	_, mms, err := kindInfo(m.Kind)
	if err != nil {
		return nil, err
	}
	var urls []string
	if m.URL != "" && !strings.HasPrefix(m.URL, "https://web.whatsapp.net") {
		urls = append(urls, m.URL)
	}
	if m.DirectPath != "" {
		if !strings.HasPrefix(m.DirectPath, "/") {
			return nil, fmt.Errorf("%w: direct path %q does not start with /", ErrPermanent, m.DirectPath)
		}
		if c.Hosts == nil {
			return nil, fmt.Errorf("%w: CDN has no Hosts", ErrPermanent)
		}
		hosts, err := c.Hosts(ctx)
		if err != nil {
			return nil, fmt.Errorf("media: cdn hosts: %w", err)
		}
		scheme := c.Scheme
		if scheme == "" {
			scheme = "https"
		}
		for _, h := range hosts {
			urls = append(urls, fmt.Sprintf("%s://%s%s&hash=%s&mms-type=%s&__wa-mms=", scheme, h, m.DirectPath,
				base64.URLEncoding.EncodeToString(m.FileEncSHA256), mms))
		}
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("%w: no URL to download from", ErrPermanent)
	}
	var lastErr error
	for _, u := range urls {
		body, err := c.get(ctx, u)
		if err == nil {
			r, err := NewDecryptReader(body, m.MediaKey, m.Kind, m.FileEncSHA256)
			if err != nil {
				_ = body.Close()
				return nil, err
			}
			return readCloser{r, body}, nil
		}
		if errors.Is(err, ErrExpired) || ctx.Err() != nil {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

func (c *CDN) get(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: media url: %v", ErrPermanent, err)
	}
	req.Header.Set("Origin", waOrigin)
	req.Header.Set("Referer", waOrigin+"/")
	client := c.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("media: download: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, nil
	case http.StatusNotFound, http.StatusGone:
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%w: cdn answered %d", ErrExpired, resp.StatusCode)
	default:
		_ = resp.Body.Close()
		return nil, fmt.Errorf("media: download: cdn answered %d", resp.StatusCode)
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}
