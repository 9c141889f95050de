package node

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/media"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/registry"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/s3"
)

// mediaHooks are the session template's media hooks: every new message
// with a file not stored yet gets a durable download job in the
// transaction that stores it, and the worker is told after the commit.
// worker is read at call time (the worker is built after the registry).
func mediaHooks(worker func() *media.Worker) (msgstore.Hook, func(profile string)) {
	enqueue := func(tx storage.Tx, m msgstore.Message, _ msgstore.Origin) error {
		if m.Media == nil || m.Media.State == msgstore.MediaStored {
			return nil // no file, or a sent file already copied
		}
		return media.Enqueue(tx, m.Profile, m.ID, *m.Media)
	}
	notify := func(profile string) {
		if w := worker(); w != nil {
			w.Notify(profile)
		}
	}
	return enqueue, notify
}

// openMedia builds the node's media worker over the registry's sessions:
// downloads from WhatsApp's CDN (through the simulator when configured),
// media retry through the owning session, objects in p.objects.
func (m *Main) openMedia(p *parts) error {
	hc, err := session.NewMediaHTTPClient(m.Config.WhatsAppURL)
	if err != nil {
		return err
	}
	cfg := media.DefaultConfig()
	cfg.Logger = m.Logger.With("component", "media")
	cfg.Metrics = media.NewMetrics(m.Registry)
	if m.Config.MediaMaxBytes > 0 {
		cfg.MaxSize = m.Config.MediaMaxBytes // AMARULA_MEDIA_MAX_BYTES bounds downloads too
	}
	if m.Config.tuneMedia != nil {
		m.Config.tuneMedia(&cfg)
	}
	w, err := media.New(media.Deps{
		Store:       p.store,
		Objects:     p.objects,
		Messages:    p.registry.Messages(),
		Downloader:  &media.CDN{Client: hc, Hosts: waitMediaHosts(p.registry)},
		Rerequester: p.registry,
	}, cfg)
	if err != nil {
		return err
	}
	p.media = w
	return nil
}

// waitMediaHosts asks the registry for the CDN hosts, waiting up to 30 s
// for a session of this node to connect: right after a start the jobs of
// an attached profile are loaded before its session logged in, and a
// failed attempt would count against the job's MaxAttempts.
func waitMediaHosts(reg *registry.Registry) func(ctx context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for {
			hosts, err := reg.MediaHosts(ctx)
			if err == nil {
				return hosts, nil
			}
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

// mediaErrors map media-sending input errors to their answers.
var mediaErrors = []api.ErrorMapping{
	{Err: session.ErrMediaTooLarge, Status: http.StatusRequestEntityTooLarge, Code: "media_too_large"},
	{Err: session.ErrMediaType, Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type"},
	{Err: session.ErrMediaFetch, Status: http.StatusBadRequest, Code: "media_unreachable"},
}

// runMedia runs the worker until ctx ends (a background loop of Main).
func (m *Main) runMedia(ctx context.Context, w *media.Worker) {
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		if err := w.Run(ctx); err != nil {
			m.Logger.Error("media worker stopped", "err", err)
		}
	}()
}

// mediaSessions adds the media files to a profile's deletion: after the
// session layer wiped the profile's storage (its media jobs included), the
// objects under media/<profile>/ go too.
type mediaSessions struct {
	*clusterSessions
	objects s3.Objects
}

// Delete implements api.Sessions.
func (ms *mediaSessions) Delete(ctx context.Context, profile string) error {
	if err := ms.clusterSessions.Delete(ctx, profile); err != nil {
		return err
	}
	// media.ObjectKey: media/<profile>/<message id>.
	if _, err := ms.objects.DeletePrefix(ctx, "media/"+profile+"/"); err != nil {
		return fmt.Errorf("delete media of %s: %w", profile, err)
	}
	return nil
}
