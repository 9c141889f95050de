package catalog

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxUpdateAttempts bounds the compare-and-swap loop of Update.
const maxUpdateAttempts = 16

// Etcd is the cluster catalog: /amarula/<cluster>/profiles/<id> = JSON.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
}

var _ Catalog = (*Etcd)(nil)

// NewEtcd returns the catalog of cluster over cli.
func NewEtcd(cli *clientv3.Client, cluster string) *Etcd {
	if cluster == "" {
		cluster = "default"
	}
	return &Etcd{cli: cli, prefix: ProfilesPrefix(cluster)}
}

// ProfilesPrefix is the etcd prefix of the catalog of cluster.
func ProfilesPrefix(cluster string) string { return "/amarula/" + cluster + "/profiles/" }

func (c *Etcd) key(id string) string { return c.prefix + id }

// Create implements Catalog.
func (c *Etcd) Create(ctx context.Context, p Profile) error {
	p, b, err := prepareCreate(p)
	if err != nil {
		return err
	}
	k := c.key(p.ID)
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b))).
		Commit()
	if err != nil {
		return fmt.Errorf("catalog create %s: %w", p.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("catalog create %s: %w", p.ID, ErrExists)
	}
	return nil
}

// Get implements Catalog.
func (c *Etcd) Get(ctx context.Context, id string) (Profile, error) {
	if err := ValidateID(id); err != nil {
		return Profile{}, err
	}
	resp, err := c.cli.Get(ctx, c.key(id))
	if err != nil {
		return Profile{}, fmt.Errorf("catalog get %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return Profile{}, fmt.Errorf("catalog get %s: %w", id, ErrNotFound)
	}
	p, err := decode(resp.Kvs[0].Value)
	if err != nil {
		return Profile{}, fmt.Errorf("catalog get %s: %w", id, err)
	}
	return p, nil
}

// List implements Catalog. Undecodable entries are skipped.
func (c *Etcd) List(ctx context.Context) ([]Profile, error) {
	resp, err := c.cli.Get(ctx, c.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("catalog list: %w", err)
	}
	out := make([]Profile, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if p, err := decode(kv.Value); err == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Update implements Catalog with a compare-and-swap on the mod revision.
func (c *Etcd) Update(ctx context.Context, id string, fn func(*Profile) error) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	k := c.key(id)
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		resp, err := c.cli.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("catalog update %s: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("catalog update %s: %w", id, ErrNotFound)
		}
		_, b, err := applyUpdate(id, resp.Kvs[0].Value, fn)
		if err != nil {
			return fmt.Errorf("catalog update %s: %w", id, err)
		}
		txn, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(k, string(b))).
			Commit()
		if err != nil {
			return fmt.Errorf("catalog update %s: %w", id, err)
		}
		if txn.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("catalog update %s: gave up after %d conflicting attempts", id, maxUpdateAttempts)
}

// Delete implements Catalog.
func (c *Etcd) Delete(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	resp, err := c.cli.Delete(ctx, c.key(id))
	if err != nil {
		return fmt.Errorf("catalog delete %s: %w", id, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("catalog delete %s: %w", id, ErrNotFound)
	}
	return nil
}

// Watch implements Catalog. It starts at the current revision and follows
// the prefix; if etcd compacted past the watcher (or the stream breaks and
// the history it needs is gone) it sends Reset and continues from now. The
// goroutine ends, and the channel closes, when ctx is done.
func (c *Etcd) Watch(ctx context.Context) <-chan Change {
	out := make(chan Change, 64)
	// Pin the start revision now, so changes made right after Watch
	// returns are not missed even if the stream is slow to open.
	var rev int64
	if resp, err := c.cli.Get(ctx, c.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
		rev = resp.Header.Revision + 1
	}
	go func() {
		defer close(out)
		c.watch(ctx, rev, out)
	}()
	return out
}

func (c *Etcd) watch(ctx context.Context, rev int64, out chan<- Change) {
	send := func(ch Change) bool {
		select {
		case out <- ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// needReset: the reader may have missed changes before rev was pinned.
	needReset := rev == 0
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if rev == 0 {
			resp, err := c.cli.Get(ctx, c.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				if !sleepCtx(ctx, backoff) {
					return
				}
				backoff = min(backoff*2, 2*time.Second)
				continue
			}
			rev = resp.Header.Revision + 1
			if needReset && !send(Change{Type: Reset}) {
				return
			}
			needReset = false
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range c.cli.Watch(wctx, c.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev)) {
			if wr.CompactRevision != 0 {
				// History is gone: restart from now and tell the reader.
				rev, needReset = 0, true
				break
			}
			if wr.Canceled || wr.Err() != nil {
				break
			}
			backoff = 100 * time.Millisecond
			for _, ev := range wr.Events {
				id := strings.TrimPrefix(string(ev.Kv.Key), c.prefix)
				ch := Change{Type: Delete, ID: id}
				if ev.Type == mvccpb.PUT {
					p, err := decode(ev.Kv.Value)
					if err != nil {
						continue
					}
					ch = Change{Type: Put, ID: id, Profile: &p}
				}
				if !send(ch) {
					cancel()
					return
				}
				rev = ev.Kv.ModRevision + 1
			}
			rev = max(rev, wr.Header.Revision+1)
		}
		cancel()
		if needReset {
			continue
		}
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// sleepCtx waits d or until ctx is done; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
