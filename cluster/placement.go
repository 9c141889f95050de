package cluster

import (
	"hash/fnv"
	"sort"

	"github.com/amarula/amarula/catalog"
)

// Place ranks members for profile by rendezvous (highest-random-weight)
// hashing: every member gets a pseudo-random score for the profile, and the
// ranking is by score. Adding or removing one member of N only moves the
// profiles that member wins or held — about 1/N of them — and every node
// computes the same ranking from the same member set without talking.
// members should be the eligible ones (see Eligible); the result is a new
// slice, best first.
func Place(profile string, members []string) []string {
	type scored struct {
		name  string
		score uint64
	}
	s := make([]scored, len(members))
	for i, m := range members {
		s[i] = scored{m, score(m, profile)}
	}
	sort.Slice(s, func(i, j int) bool {
		if s[i].score != s[j].score {
			return s[i].score > s[j].score
		}
		return s[i].name < s[j].name
	})
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].name
	}
	return out
}

// Top returns the best-ranked member for profile, or "" if there is none.
func Top(profile string, members []string) string {
	best, bestScore := "", uint64(0)
	for _, m := range members {
		sc := score(m, profile)
		if best == "" || sc > bestScore || (sc == bestScore && m < best) {
			best, bestScore = m, sc
		}
	}
	return best
}

// score hashes (member, profile) with FNV-1a and a splitmix64 finaliser
// (FNV alone mixes the last bytes poorly). It must never change: every node
// of a cluster must compute the same placement.
func score(member, profile string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	h.Write([]byte(profile))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Eligible returns the names of members that may own profiles: alive or
// suspect (suspicion is usually transient; a dead verdict removes the node),
// not draining, and holding a lease. Sorted.
func Eligible(members []Member) []string {
	out := make([]string, 0, len(members))
	for _, m := range members {
		if m.Eligible() {
			out = append(out, m.Name)
		}
	}
	sort.Strings(out)
	return out
}

// PlaceProfile is Place with the operator's pin: a pinned node that is
// among members ranks first.
func PlaceProfile(p catalog.Profile, members []string) []string {
	rank := Place(p.ID, members)
	if p.Pin == "" || len(rank) == 0 || rank[0] == p.Pin {
		return rank
	}
	for i, m := range rank {
		if m == p.Pin {
			copy(rank[1:i+1], rank[:i])
			rank[0] = p.Pin
			break
		}
	}
	return rank
}
