package worker_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// TestOversizeEventIsDropped (issue 9, row 7): one event over workers.max_event_size_in_mb is
// dropped whole (counted, and in the done marker), never published, let alone as a broken line;
// the rest of the slot is delivered.
func TestOversizeEventIsDropped(t *testing.T) {
	b := bustest.New(t)
	y := `
outputs: {console_1: {type: console}}
workers: {concurrency: 2, max_event_size_in_mb: 1}
inputs:
  darktrace:
    credentials: {public_token: pub, private_token: priv, instance: "https://dt.example"}
    services:
      modelbreaches: {look_back_in_minutes: 0}
`
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Hour)
	evs := [][]byte{
		breach(1, now.Add(-50*time.Minute), 100),
		breach(2, now.Add(-40*time.Minute), 2<<20), // over the 1 MB bound
		breach(3, now.Add(-30*time.Minute), 100),
		breach(4, now.Add(-20*time.Minute), 1<<20-200), // just under it
	}
	reg := prometheus.NewRegistry()
	runWorker(t, b, cfg, worker.Options{Fetchers: map[string]worker.Fetcher{"darktrace": &slowFetcher{events: evs}}, Registerer: reg})
	publishItem(t, b, 1, now.Add(-time.Hour), now)
	d := waitDone(t, b, 1)
	if d.Failed || d.Events != 3 || d.Dropped != 1 {
		t.Fatalf("done marker %+v; want 3 events delivered and 1 dropped", d)
	}
	chs, _ := chunks(t, b, d)
	var got []string
	for _, ch := range chs {
		for _, e := range ch.Events {
			if e.More {
				continue
			}
			if len(e.D) > 1<<20 {
				t.Errorf("an event of %d bytes was published over the 1 MB bound", len(e.D))
			}
			got = append(got, e.K)
		}
	}
	if len(got) != 3 {
		t.Fatalf("published %d whole events (%v); want 3", len(got), got)
	}
	lane := map[string]string{"input": "darktrace", "service": config.ServiceModelBreaches, "reason": "too_large"}
	waitFor(t, "the dropped event to be counted", func() bool {
		return counter(t, reg, "dtfleet_worker_events_dropped_total", lane) == 1
	})
}

// TestOversizeEventIsNotRead (issue 9, row 7, client side): with the Darktrace client, an event
// over workers.max_event_size_in_mb is reported by the client's scanner without being held
// (darktrace.Request.MaxEventSize), and the worker drops and counts it as it does any oversize
// event; the rest of the slot is delivered.
func TestOversizeEventIsNotRead(t *testing.T) {
	b := bustest.New(t)
	y := `
outputs: {console_1: {type: console}}
workers: {concurrency: 2, max_event_size_in_mb: 1}
inputs:
  darktrace:
    credentials: {public_token: pub, private_token: priv, instance: "https://dt.example"}
    services:
      modelbreaches: {look_back_in_minutes: 0}
`
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Hour)
	body := []byte("[" + string(bytes.Join([][]byte{
		breach(1, now.Add(-50*time.Minute), 100),
		breach(2, now.Add(-40*time.Minute), 2<<20), // over the 1 MB bound
		breach(3, now.Add(-30*time.Minute), 100),
	}, []byte(","))) + "]")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	client, err := darktrace.New(darktrace.Config{BaseURL: srv.URL, PublicToken: "pub", PrivateToken: "priv",
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	reg := prometheus.NewRegistry()
	logs := &lockedBuffer{}
	runWorker(t, b, cfg, worker.Options{Fetchers: map[string]worker.Fetcher{"darktrace": client}, Registerer: reg,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	publishItem(t, b, 1, now.Add(-time.Hour), now)
	d := waitDone(t, b, 1)
	if d.Failed || d.Events != 2 || d.Dropped != 1 {
		t.Fatalf("done marker %+v; want 2 events delivered and 1 dropped", d)
	}
	lane := map[string]string{"input": "darktrace", "service": config.ServiceModelBreaches, "reason": "too_large"}
	waitFor(t, "the dropped event to be counted", func() bool {
		return counter(t, reg, "dtfleet_worker_events_dropped_total", lane) == 1
	})
	// The client's scanner reported it (by its place in the response): the worker never read it
	// whole.
	if out := logs.String(); !strings.Contains(out, "dropped unread") || !strings.Contains(out, `"index":1`) {
		t.Fatalf("no log line of the event dropped unread at index 1:\n%s", out)
	}
}
