package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// blockerFunc adapts a function to Blocker.
type blockerFunc func(time.Duration) error

func (f blockerFunc) Blocked(bound time.Duration) error { return f(bound) }

// stuckFor is a Blocker stuck for d: blocked once d exceeds the bound.
func stuckFor(what string, d time.Duration) Blocker {
	return blockerFunc(func(bound time.Duration) error {
		if d > bound {
			return errors.New(what + " is stuck")
		}
		return nil
	})
}

func TestLanesReady(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		blockers []Blocker
		want     []string // substrings of the error; none: ready
	}{
		{name: "no roles"},
		{name: "standby and healthy", blockers: []Blocker{stuckFor("shipper", 0), stuckFor("worker", 0)}},
		{name: "a short outage", blockers: []Blocker{stuckFor("shipper", BlockedBound-time.Second)}},
		{name: "shipper past the bound", blockers: []Blocker{stuckFor("shipper", BlockedBound+time.Second), stuckFor("worker", 0)},
			want: []string{"shipper is stuck"}},
		{name: "both past the bound", blockers: []Blocker{stuckFor("shipper", time.Hour), stuckFor("worker", time.Hour)},
			want: []string{"shipper is stuck", "worker is stuck"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := LanesReady(BlockedBound, tc.blockers...)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("LanesReady = %v; want ready", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("LanesReady = nil; want an error naming %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("LanesReady = %q; want it to contain %q", err, w)
				}
			}
		})
	}
}
