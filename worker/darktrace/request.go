package darktrace

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// Request is one call to a service's endpoint.
type Request struct {
	// Service is a config.Service* name; it decides the query and the response's shape.
	Service string
	// Endpoint is the path, e.g. /modelbreaches; empty means the service's default.
	Endpoint string
	// Start and End are the slot [Start, End) of a windowed service; zero for snapshots.
	Start, End time.Time
	// LookBack moves a windowed service's starttime back (its overlap with the slots before):
	// what became visible after an earlier slot was fetched is caught again, and deduplicated
	// by its key downstream.
	LookBack time.Duration
	// View asks antigena for its no-window view (includecleared=true&includehistory=true: the
	// current actions and those of the last 14 days, each in its current state) instead of a
	// window on start; Start and End are then not sent (the caller filters by state time).
	View bool
	// MaxEventSize, when positive, bounds the memory one event of the response takes: an event
	// whose compact JSON is longer is read and validated but not kept, and is reported to
	// TooLarge instead of the fetch's callback (its index in the response, its size and the
	// start of its compact JSON).
	MaxEventSize int
	// TooLarge receives each event over MaxEventSize: its index in the response, its compact
	// size and head, the first bytes of its compact JSON (at most TooLargeHead; valid only during
	// the call), from which the caller may read its key. An error from it stops the fetch as one
	// from the fetch's callback does. nil drops such events silently.
	TooLarge func(index int, size int64, head []byte) error
}

// defaultEndpoints maps each service to its endpoint.
var defaultEndpoints = map[string]string{
	config.ServiceAntigena:       "/antigena",
	config.ServiceIncidentEvents: "/aianalyst/incidentevents",
	config.ServiceSummary:        "/summarystatistics",
	config.ServiceStatus:         "/status",
	config.ServiceModelBreaches:  "/modelbreaches",
}

// PathAndQuery returns the request's path and the exact query string that is signed and sent:
//
//	modelbreaches            starttime=<Start-LookBack ms>&endtime=<End ms>&creationtime=true&includeacknowledged=true
//	aianalyst_incidentevents starttime=<Start-LookBack ms>&endtime=<End ms>&includeacknowledged=true&includeallpinned=false
//	antigena                 starttime=<Start-LookBack ms>&endtime=<End ms>&includecleared=true
//	antigena (View)          includecleared=true&includehistory=true
//	status                   fast=true&includechildren=true
//	summarystatistics        (no query)
//
// Times are epoch milliseconds. endtime is End itself: the appliance may treat endtime as
// inclusive, so an event exactly at End may come back in two adjacent slots (dtfleet
// de-duplicates by key); sending End-1ms instead would lose it where endtime is exclusive.
// Values are only digits and true/false, so the signed and sent forms cannot differ.
func (r Request) PathAndQuery() (path, query string, err error) {
	path = r.Endpoint
	def, known := defaultEndpoints[r.Service]
	if !known {
		return "", "", fmt.Errorf("%w: unknown service %q", ErrInvalidRequest, r.Service)
	}
	if path == "" {
		path = def
	}
	if err := checkPath(path); err != nil {
		return "", "", err
	}
	window := func(start time.Time) (string, error) {
		if r.Start.IsZero() || r.End.IsZero() {
			return "", fmt.Errorf("%w: %s needs a window (Start and End)", ErrInvalidRequest, r.Service)
		}
		if r.End.Before(r.Start) {
			return "", fmt.Errorf("%w: %s window ends (%s) before it starts (%s)", ErrInvalidRequest, r.Service,
				r.End.UTC().Format(time.RFC3339), r.Start.UTC().Format(time.RFC3339))
		}
		return "starttime=" + strconv.FormatInt(start.UnixMilli(), 10) +
			"&endtime=" + strconv.FormatInt(r.End.UnixMilli(), 10), nil
	}
	switch r.Service {
	case config.ServiceModelBreaches:
		if r.LookBack < 0 {
			return "", "", fmt.Errorf("%w: negative look-back %v", ErrInvalidRequest, r.LookBack)
		}
		w, err := window(r.Start.Add(-r.LookBack))
		if err != nil {
			return "", "", err
		}
		// creationtime=true: the window filters on creationTime, not time. Every breach is created
		// once, at or after its time, so windows on creationTime are complete once the appliance
		// clock passed them, however late a breach is created.
		return path, w + "&creationtime=true&includeacknowledged=true", nil
	case config.ServiceIncidentEvents:
		if r.LookBack < 0 {
			return "", "", fmt.Errorf("%w: negative look-back %v", ErrInvalidRequest, r.LookBack)
		}
		w, err := window(r.Start.Add(-r.LookBack))
		if err != nil {
			return "", "", err
		}
		return path, w + "&includeacknowledged=true&includeallpinned=false", nil
	case config.ServiceAntigena:
		if r.View {
			return path, "includecleared=true&includehistory=true", nil
		}
		if r.LookBack < 0 {
			return "", "", fmt.Errorf("%w: negative look-back %v", ErrInvalidRequest, r.LookBack)
		}
		w, err := window(r.Start.Add(-r.LookBack))
		if err != nil {
			return "", "", err
		}
		return path, w + "&includecleared=true", nil
	case config.ServiceStatus:
		// fast=true skips the slow subnet connectivity check (subnetData); includechildren=true
		// (the default, sent explicitly) keeps probes and Unified View instances.
		return path, "fast=true&includechildren=true", nil
	default: // summarystatistics
		return path, "", nil
	}
}

// checkPath accepts only an absolute path of unreserved characters, so that the signed path is
// the one on the wire.
func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%w: endpoint %q must start with /", ErrInvalidRequest, p)
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("/-._~", r):
		default:
			return fmt.Errorf("%w: endpoint %q has a character other than letters, digits and /-._~", ErrInvalidRequest, p)
		}
	}
	return nil
}

// TooLargeHead is how much of an event over Request.MaxEventSize the client keeps for
// Request.TooLarge: the top-level fields that name an event (pbid, id, codeid) come before its
// bulk in the appliance's answers, well within this.
const TooLargeHead = 64 << 10
