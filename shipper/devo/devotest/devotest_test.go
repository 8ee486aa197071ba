package devotest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, line string
		want       Received
		wantErr    bool
	}{
		{name: "collector SDK", line: `<14>2024-05-01 12:34:56.789 collector-01 edr.darktrace.respond.model_breach: {"pbid":1}`,
			want: Received{Priority: 14, Timestamp: "2024-05-01 12:34:56.789", Host: "collector-01", Tag: "edr.darktrace.respond.model_breach", Msg: `{"pbid":1}`}},
		{name: "python SDK constant date", line: "<14>Jan  1 00:00:00 host1 my.app.test: hello: world",
			want: Received{Priority: 14, Timestamp: "Jan  1 00:00:00", Host: "host1", Tag: "my.app.test", Msg: "hello: world"}},
		{name: "RFC 3339", line: "<13>2024-05-01T12:34:56+02:00 h test.keep.free: x",
			want: Received{Priority: 13, Timestamp: "2024-05-01T12:34:56+02:00", Host: "h", Tag: "test.keep.free", Msg: "x"}},
		{name: "empty message", line: "<14>2019-02-15T09:10:53.975Z localhost.localdomain my.app:",
			want: Received{Priority: 14, Timestamp: "2019-02-15T09:10:53.975Z", Host: "localhost.localdomain", Tag: "my.app"}},
		{name: "multi-line message", line: "<14>Jan  1 00:00:00 h my.app.multi: line one\nline two",
			want: Received{Priority: 14, Timestamp: "Jan  1 00:00:00", Host: "h", Tag: "my.app.multi", Msg: "line one\nline two"}},
		{name: "PRI 0", line: "<0>t h a.b: m", want: Received{Priority: 0, Timestamp: "t", Host: "h", Tag: "a.b", Msg: "m"}},
		{name: "no angle bracket", line: "14>t h a.b: m", wantErr: true},
		{name: "PRI too big", line: "<192>t h a.b: m", wantErr: true},
		{name: "PRI not a number", line: "<1x>t h a.b: m", wantErr: true},
		{name: "PRI too long", line: "<0014>t h a.b: m", wantErr: true},
		{name: "no colon", line: "<14>t h a.b m", wantErr: true},
		{name: "no timestamp", line: "<14>h a.b: m", wantErr: true},
		{name: "only a tag", line: "<14>a.b: m", wantErr: true},
		{name: "empty", line: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseLine([]byte(tt.line))
		if tt.wantErr {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: ParseLine(%q) = %+v, %v; want ErrMalformed", tt.name, tt.line, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: ParseLine(%q) = %+v, %v; want %+v", tt.name, tt.line, got, err, tt.want)
		}
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		`<14>2024-05-01 12:34:56.789 collector-01 edr.darktrace.respond.model_breach: {"pbid":1234,"time":1714566896000}`,
		"<14>Jan  1 00:00:00 host1 my.app.test: hello",
		"<13>2019-02-15T09:10:53.975Z localhost.localdomain my.app.http.js: this is a example of log",
		"<14>a b c:", "<1>", "<", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		got, err := ParseLine(line)
		if err != nil {
			return
		}
		if got.Priority < 0 || got.Priority > 191 {
			t.Fatalf("PRI %d", got.Priority)
		}
		if got.Host == "" || got.Tag == "" || got.Timestamp == "" ||
			strings.ContainsAny(got.Host, " ") || strings.ContainsAny(got.Tag, " ") {
			t.Fatalf("bad fields %+v from %q", got, line)
		}
		if !bytes.HasSuffix(line, []byte(got.Msg)) {
			t.Fatalf("message %q is not the end of %q", got.Msg, line)
		}
		// Rebuilding the line in the collector SDK's form parses back to the same fields.
		again, err := ParseLine(fmt.Appendf(nil, "<%d>%s %s %s: %s", got.Priority, got.Timestamp, got.Host, got.Tag, got.Msg))
		if err != nil || again != got {
			t.Fatalf("rebuilt line parses as %+v, %v; want %+v", again, err, got)
		}
	})
}

// gzipMember compresses lines as one gzip member.
func gzipMember(t testing.TB, lines string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte(lines)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mixedStream is every framing on one connection, as PYSDK and devo-go may send them.
func mixedStream(t testing.TB) ([]byte, []Received) {
	t.Helper()
	var s bytes.Buffer
	s.WriteString("<14>2024-05-01 12:34:56.789 h1 my.app.one: first\n")
	rec := "<14>Jan  1 00:00:00 host1 my.app.test.multi: line one\nline two\n"
	fmt.Fprintf(&s, "%d %s", len(rec), rec)
	s.Write(gzipMember(t, "<14>2024-05-01 12:34:56.789 h2 my.app.gz: g1\n<14>2024-05-01 12:34:56.789 h2 my.app.gz: g2\n"))
	s.WriteString("\x00\x00<13>2024-05-01T12:34:56Z h3 my.app.one: second\r\n")
	s.Write(gzipMember(t, "<14>2024-05-01 12:34:56.789 h2 my.app.gz: g3"))
	s.WriteString("not syslog at all\n")
	s.WriteString("<14>2024-05-01 12:34:56.789 h1 my.app.one: last without LF")
	want := []Received{
		{Framing: FramingLF, Priority: 14, Timestamp: "2024-05-01 12:34:56.789", Host: "h1", Tag: "my.app.one", Msg: "first"},
		{Framing: FramingOctet, Priority: 14, Timestamp: "Jan  1 00:00:00", Host: "host1", Tag: "my.app.test.multi", Msg: "line one\nline two"},
		{Framing: FramingGzip, Priority: 14, Timestamp: "2024-05-01 12:34:56.789", Host: "h2", Tag: "my.app.gz", Msg: "g1"},
		{Framing: FramingGzip, Priority: 14, Timestamp: "2024-05-01 12:34:56.789", Host: "h2", Tag: "my.app.gz", Msg: "g2"},
		{Framing: FramingLF, Priority: 13, Timestamp: "2024-05-01T12:34:56Z", Host: "h3", Tag: "my.app.one", Msg: "second\r"},
		{Framing: FramingGzip, Priority: 14, Timestamp: "2024-05-01 12:34:56.789", Host: "h2", Tag: "my.app.gz", Msg: "g3"},
		{Framing: FramingLF, Priority: 14, Timestamp: "2024-05-01 12:34:56.789", Host: "h1", Tag: "my.app.one", Msg: "last without LF"},
	}
	return s.Bytes(), want
}

func newTestServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// sendRaw writes data on conn, half-closes it and waits for the server's EOF.
func sendRaw(t testing.TB, conn net.Conn, data []byte) error {
	t.Helper()
	if _, err := conn.Write(data); err != nil {
		return err
	}
	switch c := conn.(type) {
	case *tls.Conn:
		if err := c.CloseWrite(); err != nil {
			return err
		}
	case *net.TCPConn:
		if err := c.CloseWrite(); err != nil {
			return err
		}
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if err != nil {
		return err
	}
	if n != 0 {
		t.Fatalf("the server wrote %d bytes back", n)
	}
	return nil
}

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRelayFramings(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	data, want := mixedStream(t)
	if err := sendRaw(t, dial(t, s.RelayAddr()), data); err != nil {
		t.Fatal(err)
	}
	got := s.All()
	if len(got) != len(want) {
		t.Fatalf("got %d events %+v; want %d", len(got), got, len(want))
	}
	for i := range want {
		w := want[i]
		w.Listener, w.Conn = "relay", 1
		if got[i] != w {
			t.Errorf("event %d = %+v; want %+v", i, got[i], w)
		}
	}
	if m := s.Malformed(); len(m) != 1 || m[0] != "not syslog at all" {
		t.Errorf("malformed frames %q; want the one non-syslog line", m)
	}
	if s.Count() != len(want) || s.CountTag("my.app.gz") != 3 {
		t.Errorf("Count %d, CountTag(my.app.gz) %d", s.Count(), s.CountTag("my.app.gz"))
	}
	if tags := s.Tags(); strings.Join(tags, ",") != "my.app.gz,my.app.one,my.app.test.multi" {
		t.Errorf("Tags = %q", tags)
	}
}

func FuzzFrameReader(f *testing.F) {
	data, _ := mixedStream(f)
	f.Add(data)
	f.Add([]byte("12 <14>a b c: d\n"))
	f.Add([]byte("\x1f\x8b\x08\x00"))
	f.Add([]byte("999999999 x"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data), 1<<16)
		lines, size := 0, 0
		_ = fr.run(func(framing string, line []byte) bool {
			lines++
			size += len(line)
			if framing != FramingGzip && bytes.IndexByte(line, '\n') >= 0 && framing != FramingOctet {
				t.Fatalf("an %s line holds a LF: %q", framing, line)
			}
			return true
		})
		if size > 1<<16*4+len(data)*2 && !bytes.Contains(data, []byte{0x1f, 0x8b}) {
			t.Fatalf("%d bytes of lines from %d bytes of input", size, len(data))
		}
	})
}

func TestTLSListener(t *testing.T) {
	t.Parallel()
	p, err := NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Options{TLSAddr: "127.0.0.1:0", CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientCAFile: p.CA})
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(p.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(caPEM)
	dialTLS := func(cert, key string) (*tls.Conn, error) {
		conf := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
		if cert != "" {
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			conf.Certificates = []tls.Certificate{pair}
		}
		c, err := tls.Dial("tcp", s.TLSAddr(), conf)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	data, want := mixedStream(t)
	c, err := dialTLS(p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := sendRaw(t, c, data); err != nil {
		t.Fatalf("sending over TLS: %v", err)
	}
	if got := s.Count(); got != len(want) {
		t.Fatalf("the TLS listener recorded %d events; want %d", got, len(want))
	}
	for _, tt := range []struct{ name, cert, key string }{
		{"no client certificate", "", ""},
		{"client certificate from another CA", p.OtherClientCert, p.OtherClientKey},
		{"expired client certificate", p.ExpiredCert, p.ExpiredKey},
	} {
		c, err := dialTLS(tt.cert, tt.key)
		if err == nil {
			err = sendRaw(t, c, []byte("<14>t h my.app.x: refused\n"))
		}
		if err == nil {
			t.Errorf("%s: the server accepted the connection", tt.name)
		}
	}
	s.RejectClientCert(true)
	c, err = dialTLS(p.ClientCert, p.ClientKey)
	if err == nil {
		err = sendRaw(t, c, []byte("<14>t h my.app.x: rejected\n"))
	}
	if err == nil {
		t.Error("RejectClientCert(true): the server accepted the client certificate")
	}
	if got := s.Count(); got != len(want) {
		t.Fatalf("the TLS listener recorded %d events; want %d", got, len(want))
	}
}

func TestResetAfterKeepsEarlierLines(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	s.ResetAfter(3)
	var data []byte
	for i := range 10 {
		data = fmt.Appendf(data, "<14>t h my.app.x: %d\n", i)
	}
	err := sendRaw(t, dial(t, s.RelayAddr()), data)
	// The RST can reach the client before its half-close (shutdown then fails with ENOTCONN, or
	// a write with EPIPE) or after it (the read fails with ECONNRESET): all three are the reset.
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("the client saw %v; want a connection reset", err)
	}
	if got := s.Count(); got != 3 || s.Resets() != 1 {
		t.Fatalf("Count %d, Resets %d; want 3 and 1", got, s.Resets())
	}
	// One-shot: the next connection goes through.
	if err := sendRaw(t, dial(t, s.RelayAddr()), data); err != nil {
		t.Fatal(err)
	}
	if got := s.Count(); got != 13 {
		t.Fatalf("Count %d; want 13", got)
	}
}

func TestResetEveryTimesStops(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	s.ResetEveryTimes(4, 3)
	var data []byte
	for i := range 10 {
		data = fmt.Appendf(data, "<14>t h my.app.x: %d\n", i)
	}
	failed := 0
	for range 5 {
		if sendRaw(t, dial(t, s.RelayAddr()), data) != nil {
			failed++
		}
	}
	// Three connections are reset after 4 lines each; the last two go through whole.
	if s.Resets() != 3 || failed != 3 || s.Count() != 3*4+2*10 {
		t.Fatalf("Resets %d, failed sends %d, Count %d; want 3, 3 and %d", s.Resets(), failed, s.Count(), 3*4+2*10)
	}
}

func TestRefuse(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	s.Refuse(true)
	// The reset may come so fast that the dial itself fails.
	if c, err := net.Dial("tcp", s.RelayAddr()); err == nil {
		defer c.Close()
		if err := sendRaw(t, c, []byte("<14>t h my.app.x: m\n")); err == nil {
			t.Fatal("a refused connection confirmed its lines")
		}
	}
	s.Refuse(false)
	if err := sendRaw(t, dial(t, s.RelayAddr()), []byte("<14>t h my.app.x: m\n")); err != nil {
		t.Fatal(err)
	}
	if s.Count() != 1 || s.Accepted() != 2 {
		t.Fatalf("Count %d, Accepted %d; want 1 and 2", s.Count(), s.Accepted())
	}
}

func TestStallAndIdleTimeout(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	s.Stall(time.Hour)
	c := dial(t, s.RelayAddr())
	if _, err := c.Write([]byte("<14>t h my.app.x: stalled\n")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var buf [1]byte
	if _, err := c.Read(buf[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a stalled server answered the half-close: %v", err)
	}
	s.Stall(0)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf[:]); !errors.Is(err, io.EOF) {
		t.Fatalf("after the stall: %v; want EOF", err)
	}
	if s.Count() != 1 {
		t.Fatalf("Count %d; want 1", s.Count())
	}
	s.IdleTimeout(50 * time.Millisecond)
	idle := dial(t, s.RelayAddr())
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.Read(buf[:]); !errors.Is(err, io.EOF) {
		t.Fatalf("an idle connection was not closed: %v", err)
	}
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitFor(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor on an empty server = %v", err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.WaitFor(ctx, 2)
	}()
	c := dial(t, s.RelayAddr())
	if _, err := c.Write([]byte("<14>t h my.app.x: 1\n<14>t h my.app.x: 2\n")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitFor: %v", err)
	}
}

func TestDirFiles(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "out")
	s, err := NewServer(Options{RelayAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	multi := "<14>t h my.app.one: multi\nline\n"
	data := "<14>t h my.app.one: {\"a\":1}\n<14>t h my.app.two: {\"b\":2}\n" +
		fmt.Sprintf("%d %s", len(multi), multi) + "<14>t h ../../etc/x: odd tag\n"
	if err := sendRaw(t, dial(t, s.RelayAddr()), []byte(data)); err != nil {
		t.Fatal(err)
	}
	// Files are flushed whenever a connection waits, so they are current already.
	got, err := os.ReadFile(filepath.Join(dir, "my.app.one.log"))
	if err != nil || string(got) != "{\"a\":1}\nmulti\\nline\n" {
		t.Fatalf("my.app.one.log = %q, %v", got, err)
	}
	resp, err := http.Post(s.HTTPURL()+"/stream/d/token!t/h/my.app.two", "text/plain", strings.NewReader("x\ny\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got, err = os.ReadFile(filepath.Join(dir, "my.app.two.log"))
	if err != nil || string(got) != "{\"b\":2}\nx\ny\n" {
		t.Fatalf("my.app.two.log = %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".._.._etc_x.log")); err != nil {
		t.Fatalf("the odd tag's file: %v", err)
	}
}

func TestHTTPEndpoint(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{HTTPAddr: "127.0.0.1:0", HTTPToken: "goodtoken", MaxHTTPBody: 1 << 10})
	base := s.HTTPURL()
	gz := func(s string) []byte { return gzipMember(t, s) }
	tests := []struct {
		name, method, path string
		body               []byte
		gzip               bool
		wantStatus         int
		wantMsgs           []string
	}{
		{"event GET", http.MethodGet, "/event/dom/token!goodtoken/h1/my.app.http?" + url.QueryEscape("hello world"), nil, false, http.StatusNoContent, []string{"hello world"}},
		{"event POST", http.MethodPost, "/event/dom/token!goodtoken/h1/my.app.http?%7B%22a%22%3A1%7D", nil, false, http.StatusNoContent, []string{`{"a":1}`}},
		{"stream", http.MethodPost, "/stream/dom/token!goodtoken/h1/my.app.http", []byte("l1\nl2\r\n\nl3"), false, http.StatusOK, []string{"l1", "l2", "l3"}},
		{"stream gzip", http.MethodPost, "/stream/dom/token!goodtoken/h1/my.app.http", gz("z1\nz2\n"), true, http.StatusOK, []string{"z1", "z2"}},
		{"stream GET", http.MethodGet, "/stream/dom/token!goodtoken/h1/my.app.http", nil, false, http.StatusMethodNotAllowed, nil},
		{"bad token", http.MethodPost, "/stream/dom/token!bad/h1/my.app.http", []byte("x\n"), false, http.StatusUnauthorized, nil},
		{"bad path", http.MethodPost, "/stream/dom/h1/my.app.http", []byte("x\n"), false, http.StatusNotFound, nil},
		{"too large", http.MethodPost, "/stream/dom/token!goodtoken/h1/my.app.http", bytes.Repeat([]byte("0123456789\n"), 200), false, http.StatusRequestEntityTooLarge, nil},
	}
	for _, tt := range tests {
		before := s.Count()
		req, err := http.NewRequest(tt.method, base+tt.path, bytes.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		if tt.gzip {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus {
			t.Errorf("%s: status %d; want %d", tt.name, resp.StatusCode, tt.wantStatus)
		}
		all := s.All()[before:]
		var msgs []string
		for _, e := range all {
			msgs = append(msgs, e.Msg)
			if e.Host != "h1" || e.Tag != "my.app.http" || e.Domain != "dom" || e.Listener != "http" {
				t.Errorf("%s: event %+v", tt.name, e)
			}
		}
		if strings.Join(msgs, "|") != strings.Join(tt.wantMsgs, "|") {
			t.Errorf("%s: messages %q; want %q", tt.name, msgs, tt.wantMsgs)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestPKI(t *testing.T) {
	t.Parallel()
	p, err := NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	load := func(path string) *x509.Certificate {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(data, mustRead(t, strings.TrimSuffix(path, ".crt")+".key"))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	pool := func(path string) *x509.CertPool {
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(mustRead(t, path)) {
			t.Fatalf("%s holds no certificate", path)
		}
		return p
	}
	ca, other := pool(p.CA), pool(p.OtherCA)
	tests := []struct {
		cert   string
		roots  *x509.CertPool
		dns    string
		usage  x509.ExtKeyUsage
		wantOK bool
	}{
		{p.ServerCert, ca, "localhost", x509.ExtKeyUsageServerAuth, true},
		{p.ServerCert, ca, "127.0.0.1", x509.ExtKeyUsageServerAuth, true},
		{p.WrongNameServerCert, ca, "localhost", x509.ExtKeyUsageServerAuth, false},
		{p.WrongNameServerCert, ca, "", x509.ExtKeyUsageServerAuth, true},
		{p.ForeignServerCert, ca, "localhost", x509.ExtKeyUsageServerAuth, false},
		{p.ForeignServerCert, other, "localhost", x509.ExtKeyUsageServerAuth, true},
		{p.ClientCert, ca, "", x509.ExtKeyUsageClientAuth, true},
		{p.ExpiredCert, ca, "", x509.ExtKeyUsageClientAuth, false},
		{p.NotYetValidCert, ca, "", x509.ExtKeyUsageClientAuth, false},
		{p.OtherClientCert, ca, "", x509.ExtKeyUsageClientAuth, false},
		{p.OtherClientCert, other, "", x509.ExtKeyUsageClientAuth, true},
	}
	for _, tt := range tests {
		_, err := load(tt.cert).Verify(x509.VerifyOptions{Roots: tt.roots, DNSName: tt.dns, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
		if (err == nil) != tt.wantOK {
			t.Errorf("%s for %q: %v; want ok=%v", filepath.Base(tt.cert), tt.dns, err, tt.wantOK)
		}
	}
	if _, err := tls.X509KeyPair(mustRead(t, p.ClientCert), mustRead(t, p.MismatchedKey)); err == nil {
		t.Error("the mismatched key matches the client certificate")
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestCloseEndsConnections checks that Close returns with clients still connected.
func TestCloseEndsConnections(t *testing.T) {
	t.Parallel()
	s, err := NewServer(Options{RelayAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, s.RelayAddr())
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "<14>t h my.app.x: open\n")
	w.Flush()
	if err := s.WaitFor(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	s.Stall(time.Hour)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
