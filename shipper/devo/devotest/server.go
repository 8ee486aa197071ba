package devotest

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxHTTPBody is Devo's HTTP ingestion limit per request.
const DefaultMaxHTTPBody = 32 << 20

// Options configure a Server. At least one listen address must be set.
type Options struct {
	// TLSAddr is the TLS syslog listener's address ("127.0.0.1:0" for any free port); "" for none.
	// It needs CertFile, KeyFile and ClientCAFile: clients must present a certificate from that CA.
	TLSAddr                         string
	CertFile, KeyFile, ClientCAFile string
	// RelayAddr is the plain TCP syslog listener's address; "" for none.
	RelayAddr string
	// HTTPAddr is the HTTP ingestion listener's address (plain HTTP); "" for none.
	HTTPAddr string
	// HTTPToken, when set, is the only token the HTTP endpoint accepts (others get 401).
	HTTPToken string
	// MaxHTTPBody is the largest HTTP request body accepted (larger ones get 413);
	// default DefaultMaxHTTPBody.
	MaxHTTPBody int64
	// MaxLine is the largest syslog frame accepted (a larger one ends the connection);
	// default 32 MiB.
	MaxLine int
	// IdleTimeout closes syslog connections that send nothing for that long; zero never does.
	// IdleTimeout changes it at run time.
	IdleTimeout time.Duration
	// Dir, when set, receives every event's message, one per line, appended to Dir/<tag>.log.
	// Newlines inside a message are written as the two characters `\n`.
	Dir string
	// CountOnly keeps only counts in memory, not the events (for benchmarks and long runs).
	CountOnly bool
	// OnReceive, when set, is called with every event as it is recorded (benchmarks measure
	// arrival times with it). It runs on the connection's goroutine and must be quick.
	OnReceive func(Received)
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server is a fake Devo receiver. It never writes application data back to a syslog client; when
// a client half-closes, it closes the connection once it has read everything, so a sender that
// waits for EOF learns that its lines were read. All methods are safe for concurrent use.
type Server struct {
	opts   Options
	logger *slog.Logger
	tlsLn  net.Listener
	relay  net.Listener
	httpLn net.Listener
	httpSv *http.Server
	tlsCfg *tls.Config

	done chan struct{}
	wg   sync.WaitGroup

	connSeq   atomic.Uint64
	refuse    atomic.Bool
	rejectCrt atomic.Bool
	idle      atomic.Int64 // nanoseconds
	stallTill atomic.Int64 // unix nanoseconds; 0 when not stalled
	resumed   atomic.Int64
	accepted  atomic.Int64

	mu         sync.Mutex
	conns      map[net.Conn]struct{}
	stallWake  chan struct{}
	events     []Received
	count      int
	countByTag map[string]*int
	// lastTag and lastCount are the tag recorded last and its counter in countByTag: a
	// connection's lines repeat their tag, so the map is looked up only when it changes.
	lastTag     string
	lastCount   *int
	msgBytes    int64
	malformed   []string
	malformedN  int
	notify      chan struct{}
	resetLeft   int // lines before the next reset; 0 when no reset is armed
	resetEvery  int // re-arm value after a reset; 0 for one-shot
	resetTimes  int // resets left before ResetEvery disarms itself; 0 for no limit
	resets      int
	closeLeft   int  // lines before the next early close; 0 when none is armed
	closeLinger bool // the armed early close is a lingering one (LingeringCloseAfter)
	closes      int
	files       map[string]*bufio.Writer
	osFiles     map[string]*os.File
	fileErr     error
	closed      bool
}

// NewServer starts the listeners named in opts and returns once they accept connections.
func NewServer(opts Options) (*Server, error) {
	if opts.TLSAddr == "" && opts.RelayAddr == "" && opts.HTTPAddr == "" {
		return nil, errors.New("starting the fake Devo: no listen address")
	}
	if opts.MaxHTTPBody <= 0 {
		opts.MaxHTTPBody = DefaultMaxHTTPBody
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = 32 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:       opts,
		logger:     opts.Logger,
		done:       make(chan struct{}),
		conns:      make(map[net.Conn]struct{}),
		stallWake:  make(chan struct{}),
		countByTag: make(map[string]*int),
		files:      make(map[string]*bufio.Writer),
		osFiles:    make(map[string]*os.File),
	}
	s.idle.Store(int64(opts.IdleTimeout))
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
			return nil, fmt.Errorf("creating the output directory %s: %w", opts.Dir, err)
		}
	}
	if err := s.listen(); err != nil {
		s.closeListeners()
		return nil, err
	}
	if s.tlsLn != nil {
		s.wg.Add(1)
		go s.acceptLoop(s.tlsLn, "tls")
	}
	if s.relay != nil {
		s.wg.Add(1)
		go s.acceptLoop(s.relay, "relay")
	}
	if s.httpLn != nil {
		s.httpSv = &http.Server{
			Handler:           http.HandlerFunc(s.serveHTTP),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.httpSv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.logger.Error("fake Devo HTTP listener stopped", "error", err)
			}
		}()
	}
	return s, nil
}

func (s *Server) listen() error {
	var err error
	if s.opts.TLSAddr != "" {
		if s.tlsCfg, err = s.serverTLS(); err != nil {
			return err
		}
		if s.tlsLn, err = net.Listen("tcp", s.opts.TLSAddr); err != nil {
			return fmt.Errorf("listening for TLS on %s: %w", s.opts.TLSAddr, err)
		}
	}
	if s.opts.RelayAddr != "" {
		if s.relay, err = net.Listen("tcp", s.opts.RelayAddr); err != nil {
			return fmt.Errorf("listening for the relay on %s: %w", s.opts.RelayAddr, err)
		}
	}
	if s.opts.HTTPAddr != "" {
		if s.httpLn, err = net.Listen("tcp", s.opts.HTTPAddr); err != nil {
			return fmt.Errorf("listening for HTTP on %s: %w", s.opts.HTTPAddr, err)
		}
	}
	return nil
}

// serverTLS builds the TLS listener's configuration: TLS 1.2+, client certificates required and
// verified against the client CA, and rejected at will (RejectClientCert), resumed sessions too.
func (s *Server) serverTLS() (*tls.Config, error) {
	if s.opts.CertFile == "" || s.opts.KeyFile == "" || s.opts.ClientCAFile == "" {
		return nil, errors.New("starting the fake Devo: a TLS listener needs CertFile, KeyFile and ClientCAFile")
	}
	pair, err := tls.LoadX509KeyPair(s.opts.CertFile, s.opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the server certificate %s and key %s: %w", s.opts.CertFile, s.opts.KeyFile, err)
	}
	caPEM, err := os.ReadFile(s.opts.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("reading the client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("client CA file %s holds no PEM certificate", s.opts.ClientCAFile)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		VerifyConnection: func(tls.ConnectionState) error {
			if s.rejectCrt.Load() {
				return errors.New("client certificate rejected by the fake Devo")
			}
			return nil
		},
	}, nil
}

// TLSAddr is the TLS listener's address ("" without one).
func (s *Server) TLSAddr() string { return addrOf(s.tlsLn) }

// RelayAddr is the plain TCP listener's address ("" without one).
func (s *Server) RelayAddr() string { return addrOf(s.relay) }

// HTTPAddr is the HTTP listener's address ("" without one).
func (s *Server) HTTPAddr() string { return addrOf(s.httpLn) }

// HTTPURL is the HTTP endpoint's base URL, e.g. "http://127.0.0.1:8080" ("" without one).
func (s *Server) HTTPURL() string {
	if s.httpLn == nil {
		return ""
	}
	return "http://" + s.httpLn.Addr().String()
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// Close stops the listeners, ends every connection, waits for the server's goroutines and
// flushes and closes the files. It returns the first error writing the files, if any.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.closeListeners()
	if s.httpSv != nil {
		s.httpSv.Close()
	}
	s.wg.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushFilesLocked()
	for tag, f := range s.osFiles {
		if err := f.Close(); err != nil && s.fileErr == nil {
			s.fileErr = fmt.Errorf("closing the file of %s: %w", tag, err)
		}
	}
	return s.fileErr
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.tlsLn, s.relay, s.httpLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// Refuse makes the syslog listeners reset every new connection at once (as a load balancer with
// no healthy backend does) and the HTTP endpoint answer 503, until Refuse(false).
func (s *Server) Refuse(on bool) { s.refuse.Store(on) }

// RejectClientCert makes the TLS listener fail every handshake's client certificate check (the
// client learns it on its first read), until RejectClientCert(false).
func (s *Server) RejectClientCert(on bool) { s.rejectCrt.Store(on) }

// IdleTimeout sets the idle timeout of syslog connections (zero: none); it applies to the next read
// of every connection.
func (s *Server) IdleTimeout(d time.Duration) { s.idle.Store(int64(d)) }

// Stall stops the server from reading anything, on every connection, for d from now; Stall(0)
// resumes at once. A stalled TLS listener does not complete handshakes either.
func (s *Server) Stall(d time.Duration) {
	if d <= 0 {
		s.stallTill.Store(0)
	} else {
		s.stallTill.Store(time.Now().Add(d).UnixNano())
	}
	s.mu.Lock()
	close(s.stallWake)
	s.stallWake = make(chan struct{})
	s.mu.Unlock()
}

// ResetAfter arms a one-shot reset: after n more events are recorded (n >= 1), the connection that
// carried the n-th one is reset (RST) at once, and what it sent after that event is dropped.
// Events recorded before the reset stay recorded. n <= 0 disarms it. HTTP requests are aborted
// instead of reset.
func (s *Server) ResetAfter(n int) {
	s.mu.Lock()
	s.resetLeft, s.resetEvery, s.resetTimes = max(n, 0), 0, 0
	s.mu.Unlock()
}

// ResetEvery is ResetAfter(n) re-armed after each reset, until ResetEvery(0).
func (s *Server) ResetEvery(n int) { s.ResetEveryTimes(n, 0) }

// ResetEveryTimes is ResetEvery(n) that disarms itself after times resets (times <= 0: never),
// so that a test gets exactly that many resets whatever the timing.
func (s *Server) ResetEveryTimes(n, times int) {
	s.mu.Lock()
	s.resetLeft, s.resetEvery, s.resetTimes = max(n, 0), max(n, 0), max(times, 0)
	s.mu.Unlock()
}

// CloseAfter arms a one-shot early close of a syslog connection: after n more events are
// recorded (n >= 1), the server stops processing the connection that carried the n-th one and
// closes it at once. If it holds bytes of the client it has received but not processed (in its
// own buffers or the kernel's), it aborts with a reset, as the kernel does when a socket is closed
// with data unread. Otherwise it closes with a TCP FIN (after a close_notify for TLS), and the
// kernel answers whatever the client sends after that with a reset. Lines are thus never dropped
// behind a FIN that answers the client's own: a client that checks the order of the EOFs and
// looks for a reset can always tell. (For TLS, records the TLS layer has buffered but not yet
// decrypted are not seen as unread.) n <= 0 disarms it.
func (s *Server) CloseAfter(n int) { s.armClose(n, false) }

// LingeringCloseAfter is CloseAfter with a lingering close: the server ends its side with a FIN
// (after a close_notify for TLS), never a reset, then reads and discards, unrecorded, whatever
// else the client sends until the client's EOF, and closes. The client's writes and its
// half-close all succeed. A client can tell that lines were lost only if the FIN reaches it
// before it half-closes; once the server's kernel holds the client's whole batch and its FIN, the
// lingering server's EOF looks like any other, so no syslog client can detect it (the reference's
// EOF handshake assumes a server does not do this). n <= 0 disarms it.
func (s *Server) LingeringCloseAfter(n int) { s.armClose(n, true) }

func (s *Server) armClose(n int, linger bool) {
	s.mu.Lock()
	s.closeLeft, s.closeLinger = max(n, 0), linger
	s.mu.Unlock()
}

// EarlyCloses is the number of connections CloseAfter and LingeringCloseAfter closed so far.
func (s *Server) EarlyCloses() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closes
}

// closeDue counts one recorded syslog event against the armed early close and reports whether
// its connection must be closed now, and whether lingering.
func (s *Server) closeDue() (due, linger bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeLeft == 0 {
		return false, false
	}
	if s.closeLeft--; s.closeLeft > 0 {
		return false, false
	}
	s.closes++
	return true, s.closeLinger
}

// Resets is the number of resets (and aborted HTTP requests) done so far.
func (s *Server) Resets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resets
}

// Accepted is the number of syslog connections accepted so far (refused ones included).
func (s *Server) Accepted() int { return int(s.accepted.Load()) }

// Resumed is the number of TLS handshakes that resumed an earlier session.
func (s *Server) Resumed() int { return int(s.resumed.Load()) }

// Count is the number of events recorded so far.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Bytes is the number of bytes of the messages (after "TAG: ") of the events recorded so far.
func (s *Server) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgBytes
}

// CountTag is the number of events recorded so far with tag.
func (s *Server) CountTag(tag string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.countByTag[tag]; n != nil {
		return *n
	}
	return 0
}

// Tags lists the tags of the events recorded so far, sorted.
func (s *Server) Tags() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tags := make([]string, 0, len(s.countByTag))
	for t := range s.countByTag {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	return tags
}

// Events returns a copy of the events recorded with tag, in arrival order (nil with CountOnly).
func (s *Server) Events(tag string) []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Received
	for _, e := range s.events {
		if e.Tag == tag {
			out = append(out, e)
		}
	}
	return out
}

// All returns a copy of every recorded event, in arrival order (nil with CountOnly).
func (s *Server) All() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// maxMalformedKept is how many malformed frames Malformed keeps.
const maxMalformedKept = 1000

// MalformedCount is the number of frames that did not parse.
func (s *Server) MalformedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.malformedN
}

// Malformed returns the first 1000 frames that did not parse (each cut to 256 bytes), in arrival
// order.
func (s *Server) Malformed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.malformed)
}

// WaitFor waits until at least n events are recorded, or ctx ends (its error is returned).
func (s *Server) WaitFor(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		if s.count >= n {
			s.mu.Unlock()
			return nil
		}
		if s.notify == nil {
			s.notify = make(chan struct{})
		}
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d events (have %d): %w", n, s.Count(), ctx.Err())
		}
	}
}

// record stores one event, whose message has msgLen bytes (e.Msg may be left empty when only
// counts are kept), and reports whether the connection must be reset right after it.
func (s *Server) record(e Received, msgLen int) (reset bool) {
	if s.opts.OnReceive != nil {
		s.opts.OnReceive(e)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	s.msgBytes += int64(msgLen)
	if s.lastCount == nil || s.lastTag != e.Tag {
		n := s.countByTag[e.Tag]
		if n == nil {
			n = new(int)
			s.countByTag[e.Tag] = n
		}
		s.lastTag, s.lastCount = e.Tag, n
	}
	*s.lastCount++
	if !s.opts.CountOnly {
		s.events = append(s.events, e)
	}
	if s.opts.Dir != "" {
		s.writeFileLocked(e)
	}
	if s.notify != nil {
		close(s.notify)
		s.notify = nil
	}
	if s.resetLeft > 0 {
		s.resetLeft--
		if s.resetLeft == 0 {
			s.resetLeft = s.resetEvery
			s.resets++
			if s.resetTimes > 0 {
				if s.resetTimes--; s.resetTimes == 0 {
					s.resetLeft, s.resetEvery = 0, 0
				}
			}
			return true
		}
	}
	return false
}

// recordMalformed keeps the start of a frame that did not parse.
func (s *Server) recordMalformed(frame []byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.malformedN++
	if len(s.malformed) < maxMalformedKept {
		s.malformed = append(s.malformed, string(frame[:min(len(frame), 256)]))
	}
	s.logger.Debug("malformed frame", "error", err)
}

// writeFileLocked appends e's message to Dir/<tag>.log.
func (s *Server) writeFileLocked(e Received) {
	name := fileName(e.Tag)
	w, ok := s.files[name]
	if !ok {
		f, err := os.OpenFile(filepath.Join(s.opts.Dir, name), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			if s.fileErr == nil {
				s.fileErr = fmt.Errorf("opening the file of %s: %w", e.Tag, err)
				s.logger.Error("cannot write events to a file", "tag", e.Tag, "error", err)
			}
			return
		}
		w = bufio.NewWriterSize(f, 64<<10)
		s.files[name], s.osFiles[name] = w, f
	}
	_, _ = w.WriteString(strings.ReplaceAll(e.Msg, "\n", `\n`))
	if err := w.WriteByte('\n'); err != nil && s.fileErr == nil {
		s.fileErr = fmt.Errorf("writing the file of %s: %w", e.Tag, err)
		s.logger.Error("cannot write events to a file", "tag", e.Tag, "error", err)
	}
}

// flushFiles writes buffered file lines out.
func (s *Server) flushFiles() {
	if s.opts.Dir == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushFilesLocked()
}

func (s *Server) flushFilesLocked() {
	for name, w := range s.files {
		if err := w.Flush(); err != nil && s.fileErr == nil {
			s.fileErr = fmt.Errorf("writing %s: %w", name, err)
			s.logger.Error("cannot write events to a file", "file", name, "error", err)
		}
	}
}

// fileName maps a tag to a safe file name: <tag>.log with anything but [A-Za-z0-9._-] as '_'.
func fileName(tag string) string {
	b := []byte(tag)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || strings.Trim(string(b), ".") == "" {
		return "_" + string(b) + ".log"
	}
	return string(b) + ".log"
}

// waitStall blocks while the server is stalled; it returns false when the server closes.
func (s *Server) waitStall() bool {
	for {
		till := s.stallTill.Load()
		if till == 0 {
			return true
		}
		wait := time.Until(time.Unix(0, till))
		if wait <= 0 {
			return true
		}
		s.mu.Lock()
		wake := s.stallWake
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-wake:
		case <-s.done:
			t.Stop()
			return false
		}
		t.Stop()
	}
}

// track registers a live connection so that Close can end it; it returns false after Close.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}
