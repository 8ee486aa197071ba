package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Print writes st for people: a table of lanes, then the failed slots and the workers seen.
func Print(w io.Writer, st *Status) {
	fmt.Fprintf(w, "dtfleet status at %s\ncoordinator leader: %s\n", st.Now.Format(time.RFC3339), withHost(st.Coordinator, st.CoordinatorHost))
	if p := st.PlanningPaused; p != nil {
		fmt.Fprintf(w, "PLANNING PAUSED since %s: %s (%d of %d bytes used)\n", p.Since.Format(time.RFC3339), p.Reason, p.UsedBytes, p.RoomBytes)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INPUT\tSERVICE\tPLANNED\tPLANNED UNTIL\tDELIVERED\tDELIVERED UNTIL\tLAG\tBACKLOG\tEVENTS\tDUPS\tFAILED\tSHIPPER")
	for _, l := range st.Lanes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", l.Input, l.Service, l.PlannedSeq, fmtTime(l.PlannedUntil),
			l.DeliveredSeq, fmtTime(l.DeliveredUntil), orNone(l.Lag), l.Backlog, l.Events, l.Duplicates, l.FailedPassed, withHost(l.Shipper, l.ShipperHost))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nfailed slots (retried automatically when a next retry is shown; dtfleet replay replays one now): %d\n", len(st.Failed))
	PrintFailed(w, st.Failed)
	fmt.Fprintf(w, "\nworkers seen: %d\n", len(st.Workers))
	for _, wk := range st.Workers {
		fmt.Fprintf(w, "  %s (host %s pid %d): %d slots done, %d in flight, last seen %s\n", wk.ID, wk.Host, wk.PID, wk.Slots, wk.InFlight, wk.Seen.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "\npacing:\n")
	for _, p := range st.Pacing {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// withHost is a leader's name with where it runs, "-" for none.
func withHost(holder, host string) string {
	if host == "" {
		return orNone(holder)
	}
	return holder + " (" + host + ")"
}
