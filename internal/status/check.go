package status

import (
	"fmt"
	"os"
	"time"
)

// Exit statuses of `dtfleet status --check`, for cron and monitoring. The worst finding wins.
const (
	CheckHealthy     = 0 // every lane delivered within the allowed lag, no failed slot
	CheckLagging     = 1 // a windowed lane is behind by more than the allowed lag, or has no leader
	CheckFailed      = 2 // failure records await a replay (dtfleet failed list)
	CheckUnreachable = 3 // NATS or the store could not be read
)

// Check grades st: CheckFailed when failure records exist, else CheckLagging when the
// coordinator has no leader or a windowed lane delivered nothing or is more than maxLag behind
// st.Now, else CheckHealthy. It returns one reason per finding, for people. Snapshot lanes are
// not graded on lag: they deliver once per period by design.
func Check(st *Status, maxLag time.Duration) (code int, reasons []string) {
	if st.Coordinator == "" {
		code = CheckLagging
		reasons = append(reasons, "no coordinator holds the lease: nothing new is planned")
	}
	for _, l := range st.Lanes {
		if l.Snapshot {
			continue
		}
		switch {
		case l.DeliveredUntil.IsZero():
			code = CheckLagging
			reasons = append(reasons, fmt.Sprintf("%s.%s has delivered nothing yet", l.Input, l.Service))
		case st.Now.Sub(l.DeliveredUntil) > maxLag:
			code = CheckLagging
			reasons = append(reasons, fmt.Sprintf("%s.%s lags %s (delivered until %s; allowed %s)", l.Input, l.Service,
				st.Now.Sub(l.DeliveredUntil).Round(time.Second), l.DeliveredUntil.Format(time.RFC3339), maxLag))
		}
	}
	if len(st.Failed) > 0 {
		code = CheckFailed
		reasons = append(reasons, fmt.Sprintf("%d failed slot(s) await a replay (dtfleet failed list)", len(st.Failed)))
	}
	return code, reasons
}

// EnvOrPlaceholder resolves ${NAME} like os.LookupEnv, but gives unset variables a placeholder,
// so that commands which read only the bus (status, failed, replay) load a configuration whose
// Darktrace tokens come from environment variables set only for `dtfleet run`. The placeholder
// never reaches the appliance: those commands send no request to it.
func EnvOrPlaceholder(name string) (string, bool) {
	if v, ok := os.LookupEnv(name); ok {
		return v, true
	}
	return "unset-" + name, true
}
