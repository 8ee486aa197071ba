package fleet_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/shipper/devo"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/events"
)

// TestPoisonResponses feeds the data path (the Darktrace client, event processing and the Devo
// line encoder, as a worker and a shipper chain them) the bodies a broken or hostile appliance
// could send. Each ends, within a deadline, either as a malformed-body error (which the worker
// bounds and records as a failed slot: worker TestSettleBounds), as an event dropped unread for
// its size, or as events that each become exactly one Devo line: never a hang, a loop or a line
// broken by a raw newline, carriage return or NUL.
func TestPoisonResponses(t *testing.T) {
	t.Parallel()
	const maxEvent = 1 << 20
	tests := []struct {
		name      string
		body      string
		malformed bool // the fetch fails as a malformed body
		login     bool // the fetch fails as a login page (a permission error, terminal)
		delivered int  // events that become lines
		tooLarge  int  // events dropped unread
	}{
		{name: "raw NUL in a string", body: "[{\"pbid\":1,\"time\":1,\"x\":\"a\x00b\"}]", malformed: true},
		{name: "raw newline in a string", body: "[{\"pbid\":2,\"time\":1,\"x\":\"a\nb\"}]", malformed: true},
		{name: "raw carriage return in a key", body: "[{\"pb\rid\":2,\"time\":1}]", malformed: true},
		{name: "deep nesting", body: "[{\"pbid\":3,\"time\":1,\"x\":" + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "}]", malformed: true},
		{name: "truncated", body: `[{"pbid":4,"time":1,"x":"ab`, malformed: true},
		{name: "an HTML page with 200", body: "<html><body>sign in</body></html>", login: true},
		{name: "escaped NUL, newline, CR and line separators", body: `[{"pbid":5,"time":1,"x":"a\u0000b\nc\rd` + "\u2028\u2029" + `e\t"}]`, delivered: 1},
		{name: "a huge string under the limit", body: `[{"pbid":6,"time":1,"x":"` + strings.Repeat("y", maxEvent-100) + `"},{"pbid":7,"time":2}]`, delivered: 2},
		{name: "a huge string over the limit", body: `[{"pbid":8,"time":1},{"pbid":9,"time":1,"x":"` + strings.Repeat("z", 20*maxEvent) + `"},{"pbid":10,"time":3}]`, delivered: 2, tooLarge: 1},
		{name: "a huge number", body: `[{"pbid":11,"time":1,"x":` + strings.Repeat("9", 100000) + `}]`, delivered: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(srv.Close)
			c, err := darktrace.New(darktrace.Config{BaseURL: srv.URL, PublicToken: "pub", PrivateToken: config.Secret("priv"),
				Timeout: 20 * time.Second, Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			p, err := events.NewProcessor(events.Options{Service: config.ServiceModelBreaches})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
			var lines [][]byte
			tooLarge := 0
			req := darktrace.Request{Service: config.ServiceModelBreaches, Start: start, End: start.Add(time.Hour),
				MaxEventSize: maxEvent, TooLarge: func(int, int64, []byte) error { tooLarge++; return nil }}
			_, err = c.Fetch(ctx, req, func(raw []byte) error {
				return p.Process(raw, start, func(ev events.Event) error {
					lines = append(lines, devo.AppendLine(nil, ev.Time, "host", "edr.darktrace.respond.model_breach", ev.Data))
					return nil
				})
			})
			if ctx.Err() != nil {
				t.Fatalf("the fetch did not end within its deadline: %v", err)
			}
			if tt.login {
				if err == nil || darktrace.KindOf(err) != darktrace.KindPermission {
					t.Fatalf("fetch = %v (kind %v); want the login-page error", err, darktrace.KindOf(err))
				}
				return
			}
			if tt.malformed {
				if err == nil || darktrace.KindOf(err) != darktrace.KindMalformed {
					t.Fatalf("fetch = %v (kind %v); want a malformed-body error", err, darktrace.KindOf(err))
				}
				return
			}
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			if len(lines) != tt.delivered || tooLarge != tt.tooLarge {
				t.Fatalf("%d lines and %d dropped as too large; want %d and %d", len(lines), tooLarge, tt.delivered, tt.tooLarge)
			}
			for _, l := range lines {
				body := l[:len(l)-1]
				if l[len(l)-1] != '\n' || bytes.ContainsAny(body, "\n\r\x00") {
					t.Fatalf("a Devo line is broken: %.200q", l)
				}
			}
		})
	}
}
