package registry

import (
	"context"
	"fmt"

	"github.com/amarula/amarula/session"
)

// Groups lists the groups of profile: live from its session when it runs
// here, otherwise from the group cache in shared storage (what the owner
// last saw). The API's router sends group requests to the owner, so the
// cache answers only while the profile runs nowhere.
func (r *Registry) Groups(ctx context.Context, profile string) ([]session.Group, error) {
	if s, ok := r.Lookup(profile); ok {
		return s.ListGroups(ctx)
	}
	gs, err := session.CachedGroups(ctx, r.cfg.Store, profile)
	if err != nil {
		return nil, fmt.Errorf("registry: groups of %s: %w", profile, err)
	}
	return gs, nil
}

// Group returns one group of profile (jid as session.ParseGroupJID takes
// it), live or from the cache like Groups. Errors wrap
// session.ErrInvalidRequest (malformed jid), session.ErrGroupNotFound or
// session.ErrNotInGroup.
func (r *Registry) Group(ctx context.Context, profile, jid string) (session.Group, error) {
	gid, err := session.ParseGroupJID(jid)
	if err != nil {
		return session.Group{}, err
	}
	if s, ok := r.Lookup(profile); ok {
		return s.GroupInfo(ctx, gid)
	}
	return session.CachedGroup(ctx, r.cfg.Store, profile, gid)
}
