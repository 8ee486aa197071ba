package devo

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
)

const (
	testTag  = "edr.darktrace.respond.model_breach"
	testHost = "test-host"
)

// makeBatch builds a batch of n distinct JSON events of about size bytes each.
func makeBatch(tag, label string, n, size int) *Batch {
	b := &Batch{Tag: tag, Events: make([]Event, n)}
	pad := strings.Repeat("x", max(size-40, 0))
	for i := range b.Events {
		b.Events[i] = Event{
			Time: 1714566896000 + int64(i),
			Msg:  fmt.Appendf(nil, `{"label":%q,"n":%d,"pad":%q}`, label, i, pad),
		}
	}
	return b
}

// messages returns the messages of received events.
func messages(evs []devotest.Received) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Msg
	}
	return out
}

// batchMessages returns a batch's messages.
func batchMessages(b *Batch) []string {
	out := make([]string, len(b.Events))
	for i, e := range b.Events {
		out[i] = string(e.Msg)
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func newPKI(t testing.TB) *devotest.PKI {
	t.Helper()
	p, err := devotest.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newServer(t testing.TB, opts devotest.Options) *devotest.Server {
	t.Helper()
	s, err := devotest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the fake Devo: %v", err)
		}
	})
	return s
}

// tlsServer starts a fake Devo TLS listener with the given server certificate.
func tlsServer(t testing.TB, p *devotest.PKI, cert, key string) *devotest.Server {
	t.Helper()
	return newServer(t, devotest.Options{TLSAddr: "127.0.0.1:0", CertFile: cert, KeyFile: key, ClientCAFile: p.CA})
}

func hostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	fmt.Sscan(p, &port)
	return h, port
}

func tlsConfig(t testing.TB, p *devotest.PKI, addr string) config.Output {
	t.Helper()
	h, port := hostPort(t, addr)
	return config.Output{Type: config.OutputDevoPlatform, Config: config.OutputConfig{
		Address: h, Port: port, Chain: p.CA, Cert: p.ClientCert, Key: p.ClientKey}}
}

func relayConfig(t testing.TB, addr string) config.Output {
	t.Helper()
	h, port := hostPort(t, addr)
	return config.Output{Type: config.OutputRelay, Config: config.OutputConfig{Address: h, Port: port}}
}

func newOut(t testing.TB, name string, cfg config.Output, opts Options) Output {
	t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = testHost
	}
	out, err := NewOutput(name, cfg, opts)
	if err != nil {
		t.Fatalf("NewOutput: %v", err)
	}
	t.Cleanup(func() { out.Close() })
	return out
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTLSOutputDelivers(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			t.Parallel()
			srv := tlsServer(t, p, p.ServerCert, p.ServerKey)
			cfg := tlsConfig(t, p, srv.TLSAddr())
			cfg.Config.Gzip = gz
			out := newOut(t, "devo_1", cfg, Options{})
			ctx := testCtx(t)
			var want []string
			for i := range 3 {
				b := makeBatch(testTag, fmt.Sprint("batch", i), 2000, 120)
				if err := out.Send(ctx, b); err != nil {
					t.Fatalf("Send %d: %v", i, err)
				}
				want = append(want, batchMessages(b)...)
				// Send returns only after the server read everything: no waiting needed.
				if got := srv.CountTag(testTag); got != len(want) {
					t.Fatalf("after Send %d the server has %d events; want %d", i, got, len(want))
				}
			}
			got := srv.Events(testTag)
			if !equalStrings(messages(got), want) {
				t.Fatalf("the server received other messages or another order")
			}
			wantFraming := devotest.FramingLF
			if gz {
				wantFraming = devotest.FramingGzip
			}
			for _, e := range got {
				if e.Listener != "tls" || e.Framing != wantFraming || e.Host != testHost || e.Priority != 14 {
					t.Fatalf("event received as %+v; want tls, %s, host %s, PRI 14", e, wantFraming, testHost)
				}
				if _, err := time.Parse("2006-01-02 15:04:05.000", e.Timestamp); err != nil {
					t.Fatalf("timestamp %q: %v", e.Timestamp, err)
				}
			}
			if m := srv.Malformed(); len(m) != 0 {
				t.Fatalf("malformed frames: %q", m)
			}
			if srv.Resumed() == 0 {
				t.Errorf("no TLS session was resumed over %d connections", srv.Accepted())
			}
		})
	}
}

// TestGzipMembers checks the gzip framing itself: whole members of whole lines, each about
// gzipMemberSize uncompressed.
func TestGzipMembers(t *testing.T) {
	t.Parallel()
	s := newStreamSender("x", testHost, true, time.Second, slog.New(slog.DiscardHandler))
	var wire bytes.Buffer
	s.bw.Reset(&wire)
	b := makeBatch(testTag, "gz", 3000, 200)
	if err := s.writeGzip(b); err != nil {
		t.Fatal(err)
	}
	if err := s.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, e := range b.Events {
		want = AppendLine(want, e.Time, testHost, testTag, e.Msg)
	}
	br := bufio.NewReader(&wire)
	zr, err := gzip.NewReader(br)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	members := 0
	for {
		zr.Multistream(false)
		member, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("member %d: %v", members, err)
		}
		members++
		if len(member) == 0 || member[len(member)-1] != '\n' {
			t.Fatalf("member %d does not end with a whole line", members)
		}
		if len(member) > gzipMemberSize+300 {
			t.Fatalf("member %d holds %d bytes; want about %d", members, len(member), gzipMemberSize)
		}
		all = append(all, member...)
		if err := zr.Reset(br); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if members < len(want)/gzipMemberSize {
		t.Fatalf("%d members for %d bytes", members, len(want))
	}
	if !bytes.Equal(all, want) {
		t.Fatal("the members do not inflate to the batch's lines")
	}
}

func TestRelayOutputDelivers(t *testing.T) {
	t.Parallel()
	srv := newServer(t, devotest.Options{RelayAddr: "127.0.0.1:0"})
	out := newOut(t, "relay_1", relayConfig(t, srv.RelayAddr()), Options{})
	b := makeBatch("my.app.dt.breach", "relay", 5000, 300)
	if err := out.Send(testCtx(t), b); err != nil {
		t.Fatal(err)
	}
	got := srv.Events("my.app.dt.breach")
	if !equalStrings(messages(got), batchMessages(b)) {
		t.Fatalf("the relay received %d events, not the batch", len(got))
	}
	for _, e := range got {
		if e.Listener != "relay" || e.Framing != devotest.FramingLF {
			t.Fatalf("event received as %+v", e)
		}
	}
}

func TestNewOutputErrors(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a PEM file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.crt")
	tlsCfg := func(chain, cert, key string) config.Output {
		return config.Output{Type: config.OutputDevoPlatform, Config: config.OutputConfig{
			Address: "127.0.0.1", Port: 443, Chain: chain, Cert: cert, Key: key}}
	}
	tests := []struct {
		name      string
		cfg       config.Output
		wantIs    error
		wantFiles []string
	}{
		{"expired cert", tlsCfg(p.CA, p.ExpiredCert, p.ExpiredKey), ErrCertExpired, []string{p.ExpiredCert}},
		{"cert not yet valid", tlsCfg(p.CA, p.NotYetValidCert, p.NotYetValidKey), ErrCertNotYetValid, []string{p.NotYetValidCert}},
		{"mismatched key", tlsCfg(p.CA, p.ClientCert, p.MismatchedKey), ErrKeyMismatch, []string{p.ClientCert, p.MismatchedKey}},
		{"cert from another CA", tlsCfg(p.CA, p.OtherClientCert, p.OtherClientKey), ErrCertUntrusted, []string{p.OtherClientCert, p.CA}},
		{"wrong chain", tlsCfg(p.OtherCA, p.ClientCert, p.ClientKey), ErrCertUntrusted, []string{p.ClientCert, p.OtherCA}},
		{"missing chain", tlsCfg(missing, p.ClientCert, p.ClientKey), fs.ErrNotExist, []string{missing}},
		{"missing key", tlsCfg(p.CA, p.ClientCert, missing), fs.ErrNotExist, []string{missing}},
		{"chain not PEM", tlsCfg(garbage, p.ClientCert, p.ClientKey), ErrBadPEM, []string{garbage}},
		{"cert is a key", tlsCfg(p.CA, p.ClientKey, p.ClientKey), ErrBadPEM, []string{p.ClientKey}},
		{"key not PEM", tlsCfg(p.CA, p.ClientCert, garbage), ErrBadPEM, []string{garbage}},
		{"key is a cert", tlsCfg(p.CA, p.ClientCert, p.ClientCert), ErrBadPEM, []string{p.ClientCert}},
		{"no chain", tlsCfg("", p.ClientCert, p.ClientKey), ErrBadConfig, nil},
		{"no address", config.Output{Type: config.OutputDevoPlatform, Config: config.OutputConfig{
			Port: 443, Chain: p.CA, Cert: p.ClientCert, Key: p.ClientKey}}, ErrBadConfig, nil},
		{"bad port", config.Output{Type: config.OutputRelay, Config: config.OutputConfig{Address: "x", Port: 0}}, ErrBadConfig, nil},
		{"gzip to a relay", config.Output{Type: config.OutputRelay, Config: config.OutputConfig{
			Address: "x", Port: 13000, Gzip: true}}, ErrBadConfig, nil},
		{"http without token", config.Output{Type: config.OutputHTTP, Config: config.OutputConfig{
			URL: "https://http-eu.devo.io", Domain: "d"}}, ErrBadConfig, nil},
		{"http without url", config.Output{Type: config.OutputHTTP, Config: config.OutputConfig{
			Domain: "d", Token: "t"}}, ErrBadConfig, nil},
		{"http bad url", config.Output{Type: config.OutputHTTP, Config: config.OutputConfig{
			URL: "ftp://x", Domain: "d", Token: "t"}}, ErrBadConfig, nil},
		{"file without path", config.Output{Type: config.OutputFile}, ErrBadConfig, nil},
		{"unknown type", config.Output{Type: "syslog"}, ErrBadConfig, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := NewOutput("out_1", tt.cfg, Options{Hostname: testHost})
			if err == nil {
				out.Close()
				t.Fatal("NewOutput succeeded; want an error")
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tt.wantIs)
			}
			for _, f := range tt.wantFiles {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
			if !strings.Contains(err.Error(), "out_1") {
				t.Errorf("error %q does not name the output", err)
			}
		})
	}
}

func TestCertDatesInError(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	_, err := NewOutput("devo_1", config.Output{Type: config.OutputDevoPlatform, Config: config.OutputConfig{
		Address: "127.0.0.1", Port: 443, Chain: p.CA, Cert: p.ExpiredCert, Key: p.ExpiredKey}}, Options{Hostname: testHost})
	if err == nil || !regexp.MustCompile(`valid from \d{4}-\d\d-\d\dT.* to \d{4}-\d\d-\d\dT`).MatchString(err.Error()) {
		t.Fatalf("error %v does not give the validity dates", err)
	}
	// With a clock inside the validity period the same files load.
	out, err := NewOutput("devo_1", config.Output{Type: config.OutputDevoPlatform, Config: config.OutputConfig{
		Address: "127.0.0.1", Port: 443, Chain: p.CA, Cert: p.ExpiredCert, Key: p.ExpiredKey}},
		Options{Hostname: testHost, Now: func() time.Time { return time.Now().Add(-48 * time.Hour) }})
	if err != nil {
		t.Fatalf("NewOutput with a clock inside the validity period: %v", err)
	}
	out.Close()
}

func TestServerCertVerification(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	no, yes := false, true
	tests := []struct {
		name           string
		cert, key      string
		verifyHostname *bool
		wantOK         bool
	}{
		{"right name, default verification", p.ServerCert, p.ServerKey, nil, true},
		{"wrong name, hostname verified", p.WrongNameServerCert, p.WrongNameServerKey, &yes, false},
		{"wrong name, default verification", p.WrongNameServerCert, p.WrongNameServerKey, nil, false},
		{"wrong name, hostname not verified", p.WrongNameServerCert, p.WrongNameServerKey, &no, true},
		{"foreign CA, hostname verified", p.ForeignServerCert, p.ForeignServerKey, &yes, false},
		{"foreign CA, hostname not verified", p.ForeignServerCert, p.ForeignServerKey, &no, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := tlsServer(t, p, tt.cert, tt.key)
			cfg := tlsConfig(t, p, srv.TLSAddr())
			cfg.Config.VerifyHostname = tt.verifyHostname
			out := newOut(t, "devo_1", cfg, Options{Timeout: 5 * time.Second})
			b := makeBatch(testTag, "verify", 10, 50)
			err := out.Send(testCtx(t), b)
			if tt.wantOK != (err == nil) {
				t.Fatalf("Send = %v; want ok=%v", err, tt.wantOK)
			}
			if err != nil && !strings.Contains(err.Error(), "chain file "+p.CA) {
				t.Errorf("error %q does not name the chain file %s", err, p.CA)
			}
			want := 0
			if tt.wantOK {
				want = len(b.Events)
			}
			if got := srv.Count(); got != want {
				t.Fatalf("the server recorded %d events; want %d", got, want)
			}
		})
	}
}

func TestRejectedClientCert(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srv := tlsServer(t, p, p.ServerCert, p.ServerKey)
	out := newOut(t, "devo_1", tlsConfig(t, p, srv.TLSAddr()), Options{Timeout: 5 * time.Second})
	ctx := testCtx(t)
	b := makeBatch(testTag, "reject", 50, 50)
	srv.RejectClientCert(true)
	err := out.Send(ctx, b)
	if err == nil {
		t.Fatal("Send succeeded although the server rejected the client certificate")
	}
	if !errors.Is(err, ErrClientCertRejected) || !strings.Contains(err.Error(), "cert file "+p.ClientCert) {
		t.Errorf("error %q does not say that the server rejected cert file %s", err, p.ClientCert)
	}
	if n := srv.Count(); n != 0 {
		t.Fatalf("the server recorded %d events over a rejected handshake", n)
	}
	srv.RejectClientCert(false)
	if err := out.Send(ctx, b); err != nil {
		t.Fatalf("Send after the server accepts the certificate again: %v", err)
	}
	if n := srv.Count(); n != len(b.Events) {
		t.Fatalf("the server recorded %d events; want %d", n, len(b.Events))
	}
}

// TestResetMidBatchRetry resets the connection in the middle of a batch: Send fails, Retry delivers
// the whole batch, and the duplicates are exactly what the server had read before the reset.
func TestResetMidBatchRetry(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, kind := range []string{"tls", "tls+gzip", "relay"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var (
				srv *devotest.Server
				cfg config.Output
			)
			if kind == "relay" {
				srv = newServer(t, devotest.Options{RelayAddr: "127.0.0.1:0"})
				cfg = relayConfig(t, srv.RelayAddr())
			} else {
				srv = tlsServer(t, p, p.ServerCert, p.ServerKey)
				cfg = tlsConfig(t, p, srv.TLSAddr())
				cfg.Config.Gzip = kind == "tls+gzip"
			}
			logs := &recordingHandler{}
			out := newOut(t, "out_1", cfg, Options{})
			const n, cut = 1000, 300
			b := makeBatch(testTag, kind, n, 150)
			srv.ResetAfter(cut)
			if err := RetryGrace(testCtx(t), 0, out, b, expBackoff(time.Millisecond, 10*time.Millisecond), nil, slog.New(logs)); err != nil {
				t.Fatalf("Retry: %v", err)
			}
			if got := srv.Resets(); got != 1 {
				t.Fatalf("the server reset %d connections; want 1", got)
			}
			got := messages(srv.Events(testTag))
			want := batchMessages(b)
			if len(got) != n+cut {
				t.Fatalf("the server recorded %d events; want %d (the batch plus the %d read before the reset)", len(got), n+cut, cut)
			}
			if !equalStrings(got[:cut], want[:cut]) || !equalStrings(got[cut:], want) {
				t.Fatal("the server did not record the cut batch then the whole batch, in order")
			}
			if logs.count(slog.LevelWarn) != 1 {
				t.Fatalf("Retry logged %d warnings; want 1", logs.count(slog.LevelWarn))
			}
		})
	}
}

// TestResetEveryMultiBatch delivers several batches through a server that resets every 700
// events: every event arrives, in order, with duplicates only from the resets.
func TestResetEveryMultiBatch(t *testing.T) {
	t.Parallel()
	srv := newServer(t, devotest.Options{RelayAddr: "127.0.0.1:0"})
	out := newOut(t, "relay_1", relayConfig(t, srv.RelayAddr()), Options{})
	srv.ResetEvery(700)
	ctx := testCtx(t)
	var want []string
	for i := range 6 {
		b := makeBatch(testTag, fmt.Sprint("b", i), 500, 80)
		if err := RetryGrace(ctx, 0, out, b, expBackoff(time.Millisecond, 5*time.Millisecond), nil, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, batchMessages(b)...)
	}
	got := messages(srv.Events(testTag))
	seen := map[string]int{}
	for _, m := range got {
		seen[m]++
	}
	dups := len(got) - len(seen)
	if len(seen) != len(want) {
		t.Fatalf("%d distinct events arrived; want %d", len(seen), len(want))
	}
	if dups == 0 || srv.Resets() == 0 {
		t.Fatalf("no resets happened (%d duplicates)", dups)
	}
	// The last copy of each event arrives in batch order.
	last := map[string]int{}
	for i, m := range got {
		last[m] = i
	}
	for i := 1; i < len(want); i++ {
		if last[want[i-1]] > last[want[i]] {
			t.Fatalf("event %d was last delivered before event %d", i, i-1)
		}
	}
	t.Logf("%d events, %d resets, %d duplicates", len(want), srv.Resets(), dups)
}

func TestRefusedThenDelivered(t *testing.T) {
	t.Parallel()
	srv := newServer(t, devotest.Options{RelayAddr: "127.0.0.1:0"})
	out := newOut(t, "relay_1", relayConfig(t, srv.RelayAddr()), Options{Timeout: 5 * time.Second})
	ctx := testCtx(t)
	b := makeBatch(testTag, "refuse", 200, 100)
	srv.Refuse(true)
	if err := out.Send(ctx, b); err == nil {
		t.Fatal("Send succeeded on a refused connection")
	}
	logs := &recordingHandler{warned: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- RetryGrace(ctx, 0, out, b, expBackoff(time.Millisecond, 20*time.Millisecond), nil, slog.New(logs))
	}()
	select {
	case <-logs.warned:
	case <-ctx.Done():
		t.Fatal("Retry never logged a failure")
	}
	srv.Refuse(false)
	if err := <-done; err != nil {
		t.Fatalf("Retry: %v", err)
	}
	if got := messages(srv.Events(testTag)); !equalStrings(got, batchMessages(b)) {
		t.Fatalf("the server recorded %d events; want the batch once", len(got))
	}
}

// TestStalledServerTimesOut checks that an unconfirmed batch is an error: the server does not
// read, so no EOF comes back within the timeout.
func TestStalledServerTimesOut(t *testing.T) {
	t.Parallel()
	srv := newServer(t, devotest.Options{RelayAddr: "127.0.0.1:0"})
	out := newOut(t, "relay_1", relayConfig(t, srv.RelayAddr()), Options{Timeout: 200 * time.Millisecond})
	ctx := testCtx(t)
	b := makeBatch(testTag, "stall", 100, 100)
	srv.Stall(time.Hour)
	err := out.Send(ctx, b)
	if !errors.Is(err, ErrNoEOF) {
		t.Fatalf("Send to a stalled server = %v; want ErrNoEOF", err)
	}
	srv.Stall(0)
	// A generous timeout now, so that a loaded machine cannot fail the confirmed Send.
	patient := newOut(t, "relay_1", relayConfig(t, srv.RelayAddr()), Options{})
	if err := patient.Send(ctx, b); err != nil {
		t.Fatalf("Send after the stall: %v", err)
	}
	// The stalled connection is read once the stall ends, possibly while the second one is: its
	// late copies may interleave with the confirmed ones. The confirmed connection holds the batch.
	var last uint64
	for _, e := range srv.Events(testTag) {
		last = max(last, e.Conn)
	}
	var confirmed []devotest.Received
	for _, e := range srv.Events(testTag) {
		if e.Conn == last {
			confirmed = append(confirmed, e)
		}
	}
	if !equalStrings(messages(confirmed), batchMessages(b)) {
		t.Fatalf("the confirmed connection carried %d events; want the batch", len(confirmed))
	}
}

func TestSendStopsWithContext(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srv := tlsServer(t, p, p.ServerCert, p.ServerKey)
	out := newOut(t, "devo_1", tlsConfig(t, p, srv.TLSAddr()), Options{Timeout: time.Minute})
	srv.Stall(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := out.Send(ctx, makeBatch(testTag, "ctx", 10, 50))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send = %v; want an error wrapping context.DeadlineExceeded", err)
	}
	err = RetryGrace(ctx, 0, out, makeBatch(testTag, "ctx", 10, 50), nil, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Retry = %v; want an error wrapping context.DeadlineExceeded", err)
	}
}

func TestInvalidTagRefused(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	out := newOut(t, "console_1", config.Output{Type: config.OutputConsole}, Options{Stdout: &buf})
	err := RetryGrace(testCtx(t), 0, out, makeBatch("notatag", "x", 1, 10), nil, nil, nil)
	if !errors.Is(err, ErrInvalidTag) {
		t.Fatalf("Retry = %v; want ErrInvalidTag at once", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("the console got %q", buf.String())
	}
	if err := out.Send(testCtx(t), &Batch{Tag: "bad tag"}); err != nil {
		t.Fatalf("an empty batch is a no-op, got %v", err)
	}
}

func TestHTTPOutput(t *testing.T) {
	t.Parallel()
	const token = "tok3nSecretValue0123456789abcdef"
	srv := newServer(t, devotest.Options{HTTPAddr: "127.0.0.1:0", HTTPToken: token})
	logs := &recordingHandler{}
	cfg := config.Output{Type: config.OutputHTTP, Config: config.OutputConfig{
		URL: srv.HTTPURL(), Domain: "my_domain", Token: token}}
	out := newOut(t, "http_1", cfg, Options{Logger: slog.New(logs)})
	// Split into requests of about 20 kB.
	out.(*output).s.(*httpSender).maxPayload = 20 << 10
	ctx := testCtx(t)
	b := makeBatch(testTag, "http", 1000, 200)
	b.Events[5].Msg = []byte("raw\nnewline")
	if err := out.Send(ctx, b); err != nil {
		t.Fatal(err)
	}
	got := srv.Events(testTag)
	want := batchMessages(b)
	want[5] = `raw\nnewline`
	if !equalStrings(messages(got), want) {
		t.Fatalf("the server received %d events, not the batch", len(got))
	}
	requests := map[uint64]bool{}
	for _, e := range got {
		requests[e.Conn] = true
		if e.Listener != "http" || e.Framing != devotest.FramingStream || e.Host != testHost || e.Domain != "my_domain" {
			t.Fatalf("event received as %+v", e)
		}
	}
	if len(requests) < 8 {
		t.Fatalf("the batch went out in %d requests; want about 10", len(requests))
	}
	if strings.Contains(logs.text(), token) {
		t.Fatal("the logs hold the token")
	}
}

func TestHTTPErrorsHideToken(t *testing.T) {
	t.Parallel()
	const token = "tok3nSecretValue0123456789abcdef"
	srv := newServer(t, devotest.Options{HTTPAddr: "127.0.0.1:0", HTTPToken: "another-token", MaxHTTPBody: 100})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	tests := []struct {
		name, url  string
		wantStatus string
	}{
		{"wrong token", srv.HTTPURL(), "401"},
		{"connection refused", closedURL, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logs := &recordingHandler{}
			out := newOut(t, "http_1", config.Output{Type: config.OutputHTTP, Config: config.OutputConfig{
				URL: tt.url, Domain: "d", Token: token}}, Options{Logger: slog.New(logs), Timeout: 5 * time.Second})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			b := makeBatch(testTag, "x", 3, 50)
			err := RetryGrace(ctx, 0, out, b, expBackoff(time.Millisecond, time.Millisecond), nil, slog.New(logs))
			if err == nil {
				cancel()
				t.Fatal("delivery succeeded")
			}
			if tt.wantStatus != "" {
				if serr := out.Send(context.Background(), b); !errors.Is(serr, ErrHTTPStatus) || !strings.Contains(serr.Error(), tt.wantStatus) {
					t.Fatalf("Send = %v; want ErrHTTPStatus %s", serr, tt.wantStatus)
				}
			}
			for _, text := range []string{err.Error(), logs.text()} {
				if strings.Contains(text, token) {
					t.Fatalf("the token leaked: %s", text)
				}
			}
			if !strings.Contains(logs.text(), "token!REDACTED") {
				t.Fatalf("the logs do not show the redacted endpoint: %s", logs.text())
			}
		})
	}
}

func TestFileOutput(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a", "b", "devo.log")
	out := newOut(t, "file_1", config.Output{Type: config.OutputFile, Config: config.OutputConfig{Path: path}}, Options{})
	ctx := testCtx(t)
	var want []byte
	for i := range 2 {
		b := makeBatch(testTag, fmt.Sprint("file", i), 100, 60)
		if err := out.Send(ctx, b); err != nil {
			t.Fatal(err)
		}
		for _, e := range b.Events {
			want = AppendLine(want, e.Time, testHost, testTag, e.Msg)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("after Send %d the file holds %d bytes, not the batches' lines", i, len(got))
		}
	}
}

func TestConsoleOutput(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	out := newOut(t, "console_1", config.Output{Type: config.OutputConsole, Config: config.OutputConfig{Hostname: "cfg-host"}},
		Options{Stdout: &buf})
	b := makeBatch(testTag, "console", 2000, 60)
	if err := out.Send(testCtx(t), b); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, e := range b.Events {
		want = AppendLine(want, e.Time, "cfg-host", testTag, e.Msg)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatal("the console did not get the batch's lines")
	}
}

func TestStatsLine(t *testing.T) {
	t.Parallel()
	var ticks atomic.Int64
	base := time.Date(2023, 1, 10, 16, 9, 16, 116750000, time.UTC)
	clock := func() time.Time { return base.Add(time.Duration(ticks.Add(1)-1) * 250 * time.Millisecond) }
	logs := &recordingHandler{}
	var buf bytes.Buffer
	out := newOut(t, "console_1", config.Output{Type: config.OutputConsole},
		Options{Stdout: &buf, Logger: slog.New(logs), StatsPeriod: 5 * time.Millisecond, Now: clock})
	if err := out.Send(testCtx(t), makeBatch(testTag, "stats", 3, 50)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() { done <- out.(Runner).Run(ctx) }()
	want := `Standard - Total number of messages sent: 3, messages sent since "2023-01-10 16:09:16.616750+00:00": 3 (elapsed 0.250 seconds)`
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(logs.text(), want) {
		select {
		case <-deadline.C:
			t.Fatalf("no statistics line %q in:\n%s", want, logs.text())
		case <-tick.C:
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if !strings.Contains(logs.text(), "Standard - Total number of messages sent: 3, messages sent since") {
		t.Fatal("no later statistics line")
	}
	// The sender pool lines of Devo's collector come before each totals line.
	text := logs.text()
	for _, line := range []string{"Number of available senders: 1", "sender manager internal queue size: 0"} {
		if i := strings.Index(text, line); i < 0 || i > strings.Index(text, "Standard - Total") {
			t.Errorf("no %q before the first totals line in:\n%s", line, text)
		}
	}
}

// expBackoff is an exponential policy from initial to maxWait (initial when zero), for tests
// that must retry quickly.
func expBackoff(initial, maxWait time.Duration) backoff.BackOff {
	return &backoff.ExponentialBackOff{InitialInterval: initial, RandomizationFactor: 0.5, Multiplier: 2,
		MaxInterval: max(maxWait, initial)}
}

func TestNewBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		retries  int // waits drawn before the one checked
		min, max time.Duration
	}{
		{0, 500 * time.Millisecond, 1500 * time.Millisecond},
		{3, 4 * time.Second, 12 * time.Second},
		{100, 30 * time.Second, 90 * time.Second},
	}
	for _, tt := range tests {
		for range 50 {
			bo := NewBackoff()
			for range tt.retries {
				bo.NextBackOff()
			}
			if d := bo.NextBackOff(); d < tt.min || d > tt.max {
				t.Fatalf("wait after %d retries = %s; want within [%s, %s]", tt.retries, d, tt.min, tt.max)
			}
		}
	}
}

// TestRetryGraceWaitsOnTheClock checks that the retries are paced by the policy on the injected
// clock: each attempt after a failure starts only once the fake clock has moved by the policy's
// wait (1 s, 2 s, 4 s here).
func TestRetryGraceWaitsOnTheClock(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	start := clock.Now()
	f := &flakyOutput{fails: 3, clock: clock}
	bo := &backoff.ExponentialBackOff{InitialInterval: time.Second, Multiplier: 2, MaxInterval: time.Minute}
	done := make(chan error, 1)
	go func() { done <- RetryGrace(testCtx(t), 0, f, makeBatch(testTag, "x", 1, 10), bo, clock, nil) }()
	// Move the clock in small steps whenever RetryGrace waits, until it returns: the attempts
	// then fall on the policy's waits, not on the steps.
	base := testCtx(t)
	ctx, cancel := context.WithCancel(base)
	errc := make(chan error, 1)
	go func() { errc <- <-done; cancel() }()
	for clock.BlockUntilContext(ctx, 1) == nil {
		clock.Advance(250 * time.Millisecond)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("RetryGrace = %v", err)
		}
	case <-base.Done():
		t.Fatal("RetryGrace did not return")
	}
	want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second}
	if len(f.at) != len(want) {
		t.Fatalf("%d attempts; want %d", len(f.at), len(want))
	}
	for i, at := range f.at {
		if got := at.Sub(start); got != want[i] {
			t.Fatalf("attempt %d at +%s on the clock; want +%s", i+1, got, want[i])
		}
	}
}

// flakyOutput fails its first fails Sends.
type flakyOutput struct {
	fails int
	calls int
	clock clockwork.Clock // when set, at records the clock's time of each Send
	at    []time.Time
}

func (f *flakyOutput) Name() string { return "flaky" }
func (f *flakyOutput) Close() error { return nil }
func (f *flakyOutput) Send(context.Context, *Batch) error {
	f.calls++
	if f.clock != nil {
		f.at = append(f.at, f.clock.Now())
	}
	if f.calls <= f.fails {
		return errors.New("temporary failure")
	}
	return nil
}

func TestRetryNeverDrops(t *testing.T) {
	t.Parallel()
	f := &flakyOutput{fails: 7}
	logs := &recordingHandler{}
	err := RetryGrace(testCtx(t), 0, f, makeBatch(testTag, "x", 1, 10), expBackoff(time.Microsecond, time.Millisecond), nil, slog.New(logs))
	if err != nil || f.calls != 8 {
		t.Fatalf("Retry = %v after %d calls; want nil after 8", err, f.calls)
	}
	if n := logs.count(slog.LevelWarn); n != 7 {
		t.Fatalf("Retry logged %d failures; want 7", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := RetryGrace(ctx, 0, &flakyOutput{fails: 1 << 30}, makeBatch(testTag, "x", 1, 10), nil, nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Retry with a cancelled context = %v", err)
	}
}

// gateOutput blocks each Send until release is closed or the Send's context ends.
type gateOutput struct {
	started chan struct{} // receives once per Send
	release chan struct{}
	calls   atomic.Int32
}

func (g *gateOutput) Name() string { return "gate" }
func (g *gateOutput) Close() error { return nil }
func (g *gateOutput) Send(ctx context.Context, _ *Batch) error {
	g.calls.Add(1)
	g.started <- struct{}{}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestRetryGraceFinishesTheAttemptInFlight stops the caller while a Send is under way: with a
// grace the attempt goes on and its success is returned; without one (Retry) it is cut. Either
// way no new attempt starts once the caller stopped.
func TestRetryGraceFinishesTheAttemptInFlight(t *testing.T) {
	t.Parallel()
	b := makeBatch(testTag, "grace", 1, 10)
	for _, grace := range []time.Duration{0, time.Minute} {
		g := &gateOutput{started: make(chan struct{}, 1), release: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- RetryGrace(ctx, grace, g, b, expBackoff(time.Millisecond, 0), nil, nil) }()
		<-g.started
		cancel()
		var err error
		if grace > 0 {
			// The attempt must still be running after the stop: it ends only when released.
			select {
			case err = <-errc:
				t.Fatalf("grace %v: RetryGrace returned %v before the attempt in flight finished", grace, err)
			default:
			}
			close(g.release)
			if err = <-errc; err != nil {
				t.Fatalf("grace %v: RetryGrace = %v; want the attempt's success", grace, err)
			}
		} else if err = <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Retry = %v; want the attempt cut by the cancellation", err)
		}
		if n := g.calls.Load(); n != 1 {
			t.Fatalf("grace %v: %d attempts; want 1", grace, n)
		}
	}
}

// recordingHandler is a slog.Handler that keeps every record's text.
type recordingHandler struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	levels map[slog.Level]int
	warned chan struct{} // closed at the first warning, when not nil
	once   sync.Once
	attrs  []slog.Attr
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.levels == nil {
		h.levels = map[slog.Level]int{}
	}
	h.levels[r.Level]++
	fmt.Fprintf(&h.buf, "%s %s", r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&h.buf, " %s", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&h.buf, " %s", a)
		return true
	})
	h.buf.WriteByte('\n')
	if r.Level == slog.LevelWarn && h.warned != nil {
		h.once.Do(func() { close(h.warned) })
	}
	return nil
}

// WithAttrs shares the parent's buffer (a simplification good enough for these tests).
func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{parent: h, attrs: as}
}
func (h *recordingHandler) WithGroup(string) slog.Handler { return h }

func (h *recordingHandler) text() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.buf.String()
}

func (h *recordingHandler) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.levels[l]
}

// attrHandler adds attributes before handing records to a recordingHandler.
type attrHandler struct {
	parent *recordingHandler
	attrs  []slog.Attr
}

func (h *attrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *attrHandler) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	return h.parent.Handle(ctx, r)
}
func (h *attrHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{parent: h.parent, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}
func (h *attrHandler) WithGroup(string) slog.Handler { return h }

func BenchmarkTLSSend(b *testing.B) {
	p := newPKI(b)
	for _, gz := range []bool{false, true} {
		b.Run(fmt.Sprintf("gzip=%v", gz), func(b *testing.B) {
			srv := newServer(b, devotest.Options{TLSAddr: "127.0.0.1:0", CertFile: p.ServerCert, KeyFile: p.ServerKey,
				ClientCAFile: p.CA, CountOnly: true})
			cfg := tlsConfig(b, p, srv.TLSAddr())
			cfg.Config.Gzip = gz
			out := newOut(b, "devo_1", cfg, Options{})
			batch := makeBatch(testTag, "bench", 2000, 1000)
			size := 0
			for _, e := range batch.Events {
				size += len(AppendLine(nil, e.Time, testHost, testTag, e.Msg))
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			ctx := context.Background()
			for b.Loop() {
				if err := out.Send(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRelaySend(b *testing.B) {
	srv := newServer(b, devotest.Options{RelayAddr: "127.0.0.1:0", CountOnly: true})
	out := newOut(b, "relay_1", relayConfig(b, srv.RelayAddr()), Options{})
	batch := makeBatch(testTag, "bench", 2000, 1000)
	size := 0
	for _, e := range batch.Events {
		size += len(AppendLine(nil, e.Time, testHost, testTag, e.Msg))
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if err := out.Send(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
}

// TestOutputMetrics: a confirmed batch counts its lines, message bytes, one batch and one
// confirm observation; a failed Send counts none of them, and each Send after a failed one counts
// a reconnect.
func TestOutputMetrics(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	out := newOut(t, "file_1", config.Output{Type: config.OutputFile, Config: config.OutputConfig{Path: filepath.Join(t.TempDir(), "devo.log")}},
		Options{Metrics: m})
	b := makeBatch(testTag, "metrics", 5, 40)
	var msgBytes int
	for _, e := range b.Events {
		msgBytes += len(e.Msg)
	}
	if err := out.Send(testCtx(t), b); err != nil {
		t.Fatal(err)
	}
	// A relay whose port refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	p, _ := strconv.Atoi(port)
	down := newOut(t, "relay_1", config.Output{Type: config.OutputRelay, Config: config.OutputConfig{Address: host, Port: p, Hostname: "h"}},
		Options{Metrics: m, Timeout: 2 * time.Second})
	for range 3 {
		if err := down.Send(testCtx(t), b); err == nil {
			t.Fatal("Send to a refusing relay succeeded")
		}
	}
	tests := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"file lines", m.lines.WithLabelValues("file_1"), 5},
		{"file bytes", m.bytes.WithLabelValues("file_1"), float64(msgBytes)},
		{"file batches", m.batches.WithLabelValues("file_1"), 1},
		{"file reconnects", m.reconnects.WithLabelValues("file_1"), 0},
		{"relay lines", m.lines.WithLabelValues("relay_1"), 0},
		{"relay batches", m.batches.WithLabelValues("relay_1"), 0},
		{"relay reconnects", m.reconnects.WithLabelValues("relay_1"), 2},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(tt.c); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(m, "dtfleet_devo_confirm_duration_seconds"); n != 1 {
		t.Errorf("confirm duration series = %d, want 1 (the file output's)", n)
	}
}
