package cluster

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/amarula/amarula/catalog"
)

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d", i)
	}
	return out
}

func profiles(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("profile-%05d", i)
	}
	return out
}

func TestPlaceDeterministicAndOrderFree(t *testing.T) {
	ms := names(5)
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	for _, p := range profiles(200) {
		a, b := Place(p, ms), Place(p, rev)
		if !slices.Equal(a, b) {
			t.Fatalf("%s: ranking depends on member order: %v vs %v", p, a, b)
		}
		if Top(p, ms) != a[0] {
			t.Fatalf("%s: Top %s != Place[0] %s", p, Top(p, ms), a[0])
		}
		if len(a) != 5 {
			t.Fatalf("ranking lost members: %v", a)
		}
	}
	if Place("p", nil) == nil || len(Place("p", nil)) != 0 || Top("p", nil) != "" {
		t.Fatal("empty member set")
	}
}

// TestPlaceSpreadAndMinimalMovement: each member gets about 1/N of the
// profiles, and adding one member to N moves about 1/(N+1) of them — all
// to the new member — while removing one moves only that member's.
func TestPlaceSpreadAndMinimalMovement(t *testing.T) {
	const nProfiles = 20000
	ps := profiles(nProfiles)
	for _, tc := range []struct{ n int }{{2}, {3}, {5}, {10}, {25}} {
		t.Run(fmt.Sprintf("N=%d", tc.n), func(t *testing.T) {
			before := names(tc.n)
			after := names(tc.n + 1)
			newcomer := after[tc.n]
			count := map[string]int{}
			moved := 0
			for _, p := range ps {
				a, b := Top(p, before), Top(p, after)
				count[a]++
				if a != b {
					moved++
					if b != newcomer {
						t.Fatalf("%s moved %s → %s, not to the newcomer", p, a, b)
					}
				}
			}
			ideal := float64(nProfiles) / float64(tc.n)
			// A fair random assignment: binomial, allow 4 standard deviations.
			pr := 1 / float64(tc.n)
			tol := 4 * math.Sqrt(nProfiles*pr*(1-pr)) / ideal
			for m, c := range count {
				if dev := math.Abs(float64(c)-ideal) / ideal; dev > tol {
					t.Errorf("%s owns %d, ideal %.0f (%.1f%% off)", m, c, ideal, dev*100)
				}
			}
			frac, want := float64(moved)/nProfiles, 1/float64(tc.n+1)
			if math.Abs(frac-want)/want > 0.1 {
				t.Errorf("adding a member moved %.3f of profiles, want ≈ %.3f", frac, want)
			}
			// Removing member 0 moves only what it held.
			rest := before[1:]
			for _, p := range ps {
				a := Top(p, before)
				if b := Top(p, rest); a != before[0] && a != b {
					t.Fatalf("%s moved %s → %s though %s stayed", p, a, b, a)
				}
			}
			t.Logf("N=%d: spread ideal %.0f, adding one moved %.2f%% (ideal %.2f%%)", tc.n, ideal, frac*100, want*100)
		})
	}
}

func TestEligibleAndQuorum(t *testing.T) {
	ms := []Member{
		{Name: "c", State: StateAlive, Meta: Meta{LeaseOK: true}},
		{Name: "a", State: StateSuspect, Meta: Meta{LeaseOK: true}},
		{Name: "b", State: StateDraining, Meta: Meta{LeaseOK: true, Draining: true}},
		{Name: "d", State: StateAlive, Meta: Meta{LeaseOK: false}},
		{Name: "e", State: StateDead, Meta: Meta{LeaseOK: true}},
	}
	if got := Eligible(ms); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("eligible %v", got)
	}
	for _, tc := range []struct {
		alive, dead int
		want        bool
	}{{1, 0, true}, {1, 1, true}, {2, 1, true}, {1, 2, false}, {2, 2, false}, {3, 2, true}} {
		var m []Member
		for i := 0; i < tc.alive; i++ {
			m = append(m, Member{State: StateAlive})
		}
		for i := 0; i < tc.dead; i++ {
			m = append(m, Member{State: StateDead})
		}
		if got := hasQuorum(m); got != tc.want {
			t.Errorf("alive %d dead %d: quorum %v, want %v", tc.alive, tc.dead, got, tc.want)
		}
	}
}

func TestPlaceProfilePin(t *testing.T) {
	ms := names(5)
	for _, id := range profiles(50) {
		plain := Place(id, ms)
		for _, pin := range []string{plain[0], plain[3], "gone"} {
			got := PlaceProfile(catalog.Profile{ID: id, Pin: pin}, ms)
			want := plain
			if pin != "gone" {
				want = append([]string{pin}, slices.DeleteFunc(slices.Clone(plain), func(m string) bool { return m == pin })...)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s pin %s: %v, want %v", id, pin, got, want)
			}
		}
	}
}

// BenchmarkPlacePass is the placement cost of one reconcile pass: 1,000
// profiles over 5 members.
func BenchmarkPlacePass(b *testing.B) {
	ms, ps := names(5), profiles(1000)
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range ps {
			_ = Place(p, ms)
		}
	}
}
