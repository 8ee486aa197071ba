package main

import (
	"fmt"
	"time"

	"github.com/jonboulle/clockwork"
)

// debugClockEnv names the test knob that shifts a role process's clock: a Go duration such as
// 1h or -10m, added to the host's time wherever the roles read it (the worker's signed Date
// header and rate-limiter instants, the coordinator's planning, the shipper's and the leases'
// times). It exists for the chaos suite, which skews one worker's clock as a host without time
// synchronisation would; it is not a setting for production and is documented only in
// docs/operations.md.
const debugClockEnv = "DTFLEET_DEBUG_CLOCK_OFFSET"

// maxDebugClockOffset bounds the knob: a day covers every skew worth testing (a forgotten time
// zone, a dead NTP daemon) and keeps a typo such as 100000h from sending a role years away.
const maxDebugClockOffset = 24 * time.Hour

// debugClock returns the clock a role process runs on: nil (the roles' default, the real clock)
// when the knob is unset, else the real clock shifted by its offset. An unparsable value or one
// beyond ±maxDebugClockOffset is refused with an error naming the variable.
func debugClock(getenv func(string) string) (clockwork.Clock, time.Duration, error) {
	v := getenv(debugClockEnv)
	if v == "" {
		return nil, 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return nil, 0, fmt.Errorf("%s=%q: want a duration such as 1h or -10m: %w", debugClockEnv, v, err)
	}
	if d > maxDebugClockOffset || d < -maxDebugClockOffset {
		return nil, 0, fmt.Errorf("%s=%q: the offset must be within ±%v", debugClockEnv, v, maxDebugClockOffset)
	}
	if d == 0 {
		return nil, 0, nil
	}
	return offsetClock{Clock: clockwork.NewRealClock(), offset: d}, d, nil
}

// offsetClock is a real clock whose readings are shifted by offset. Timers, tickers and sleeps
// take durations and run on real time unchanged; only the instants read (Now) and the
// differences against them (Since, Until) carry the offset.
type offsetClock struct {
	clockwork.Clock
	offset time.Duration
}

func (c offsetClock) Now() time.Time                  { return c.Clock.Now().Add(c.offset) }
func (c offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c offsetClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }
