package worker_test

import (
	"bytes"
	"context"
	"fmt"
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
	"github.com/dtfleet/dtfleet/internal/logtest"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/proto"
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
	logs := &logtest.Buffer{}
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

// TestOversizeEventIsRecordedByKey (issue 9, row 7): an event too large to read is recorded as a
// failed event that status shows, named by its dedupe key when the key field comes before its
// bulk in the part the client read ("mb:2"), else by its index in the slot's response; the slot
// itself is delivered and its delivery does not clear those records.
func TestOversizeEventIsRecordedByKey(t *testing.T) {
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
	keyLast := fmt.Appendf(nil, `{"pad":"%s","time":%d,"pbid":5}`, strings.Repeat("y", 2<<20), now.Add(-25*time.Minute).UnixMilli())
	body := []byte("[" + string(bytes.Join([][]byte{
		breach(1, now.Add(-50*time.Minute), 100),
		breach(2, now.Add(-40*time.Minute), 2<<20), // over the 1 MB bound, its pbid first
		breach(3, now.Add(-30*time.Minute), 100),
		keyLast, // over the bound, its pbid after the bulk: index 3
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
	runWorker(t, b, cfg, worker.Options{Fetchers: map[string]worker.Fetcher{"darktrace": client}})
	it := publishItem(t, b, 1, now.Add(-time.Hour), now)
	d := waitDone(t, b, 1)
	if d.Failed || d.Events != 2 || d.Dropped != 2 {
		t.Fatalf("done marker %+v; want 2 events delivered and 2 dropped", d)
	}
	failed, err := status.ListFailed(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]status.FailedSlot{}
	for _, f := range failed {
		got[f.Event] = f
	}
	for _, want := range []string{"mb:2", "index 3"} {
		f, ok := got[want]
		if !ok {
			t.Fatalf("no failed-event record for %q; records: %+v", want, failed)
		}
		if f.Seq != it.Seq || !f.From.Equal(time.UnixMilli(it.Start).UTC()) || !strings.Contains(f.Error, want) ||
			!strings.Contains(f.Error, "max_event_size_in_mb") {
			t.Errorf("record %+v; want slot %d's window and an error naming %q and the limit", f, it.Seq, want)
		}
		if f.Key == proto.FailedKey(it.Input, it.Service, it.Start, it.End) {
			t.Errorf("record of %q under the slot's own key %s, which its delivery clears", want, f.Key)
		}
	}
	if len(failed) != 2 {
		t.Fatalf("%d failure records; want the 2 events: %+v", len(failed), failed)
	}
	// `failed clear` deletes exactly the record status names.
	cleared, err := status.ClearFailed(context.Background(), b, func(f status.FailedSlot) bool { return f.Event == "mb:2" })
	if err != nil || len(cleared) != 1 {
		t.Fatalf("clearing the record of mb:2: %v (%d cleared)", err, len(cleared))
	}
	if left, err := status.ListFailed(context.Background(), b); err != nil || len(left) != 1 || left[0].Event != "index 3" {
		t.Fatalf("after clearing mb:2: %+v, %v; want only the record of index 3", left, err)
	}
}
