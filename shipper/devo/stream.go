package devo

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// ErrNoEOF is wrapped when the server did not close its side in time after a half-close, so the
// delivery of the batch is unconfirmed.
var ErrNoEOF = errors.New("no EOF from the server after the half-close")

// ErrClosedEarly is wrapped when the server ended its side of the connection before it had the
// whole batch: its EOF arrived before the client half-closed, or (on Linux) after it but without
// acknowledging the client's FIN, or the server reset the connection after its EOF. The server
// stopped reading at some point of the batch, so its EOF confirms nothing and the batch is sent
// again.
var ErrClosedEarly = errors.New("the server closed the connection before the whole batch was sent")

const (
	// writeBufferSize is the write buffer between the lines and the connection, so that big
	// batches go out in few syscalls and full TLS records.
	writeBufferSize = 64 << 10
	// gzipMemberSize is the uncompressed size after which a gzip member is closed and a new
	// one started. Each member holds whole lines.
	gzipMemberSize = 64 << 10
	// gzipLevel is the Devo collector SDK's default compression level.
	gzipLevel = gzip.DefaultCompression
	// maxScratch is the largest line buffer kept between lines.
	maxScratch = 4 << 20
	// earlyEOFProbe is how long the check for an early EOF waits for something to read: the EOF
	// or alert it looks for is already queued on the socket when it matters, so it only needs a
	// read system call.
	earlyEOFProbe = time.Millisecond
)

// streamSender writes batches as LF-framed syslog lines on a TCP or TLS connection.
//
// Connection lifetime: each Send dials a new connection, writes the whole batch, half-closes and
// waits for the server's EOF, then closes. That EOF is the only delivery confirmation syslog
// offers, and it needs the connection to end; it also means a connection is never idle for 30 s
// or older than an hour, the limits Devo's senders reconnect on. TLS session resumption keeps the
// per-batch handshake cheap.
type streamSender struct {
	addr string
	dial func(ctx context.Context) (raw net.Conn, conn net.Conn, err error)
	// chain and cert are the files of a devo_platform output, named in TLS errors ("" for a relay).
	chain, cert string
	host        string
	gzip        bool
	timeout     time.Duration
	logger      *slog.Logger

	bw      *bufio.Writer
	gz      *gzip.Writer
	scratch []byte
}

// newTLSSender builds a devo_platform sender; it loads and checks the certificates.
func newTLSSender(c config.OutputConfig, host string, opts Options, logger *slog.Logger) (*streamSender, error) {
	if c.Address == "" {
		return nil, fmt.Errorf("%w: address is required for a devo_platform output", ErrBadConfig)
	}
	if c.Port <= 0 || c.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d is not a TCP port", ErrBadConfig, c.Port)
	}
	cr, err := loadCredentials(c.Chain, c.Cert, c.Key, opts.Now())
	if err != nil {
		return nil, err
	}
	verifyHostname := c.VerifyHostname == nil || *c.VerifyHostname
	tlsConf := clientTLSConfig(cr, c.Address, verifyHostname)
	addr := net.JoinHostPort(c.Address, strconv.Itoa(c.Port))
	s := newStreamSender(addr, host, c.Gzip, opts.Timeout, logger)
	s.chain, s.cert = c.Chain, c.Cert
	nd := &net.Dialer{Timeout: opts.Timeout, KeepAlive: 15 * time.Second}
	s.dial = func(ctx context.Context) (net.Conn, net.Conn, error) {
		raw, err := nd.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		hctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
		tc := tls.Client(raw, tlsConf)
		if err := tc.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return raw, tc, nil
	}
	if !verifyHostname {
		logger.Warn("verify_hostname is false: the server's host name is not checked (its certificate is still verified against the chain file)",
			"address", c.Address, "chain", c.Chain)
	}
	logger.Debug("devo_platform output ready", "address", addr, "verify_hostname", verifyHostname, "gzip", c.Gzip)
	return s, nil
}

// newRelaySender builds a relay sender: plain TCP, LF framing, never gzip.
func newRelaySender(c config.OutputConfig, host string, opts Options, logger *slog.Logger) (*streamSender, error) {
	if c.Address == "" {
		return nil, fmt.Errorf("%w: address is required for a relay output", ErrBadConfig)
	}
	if c.Port <= 0 || c.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d is not a TCP port", ErrBadConfig, c.Port)
	}
	if c.Gzip {
		return nil, fmt.Errorf("%w: gzip is not supported towards a relay", ErrBadConfig)
	}
	addr := net.JoinHostPort(c.Address, strconv.Itoa(c.Port))
	s := newStreamSender(addr, host, false, opts.Timeout, logger)
	nd := &net.Dialer{Timeout: opts.Timeout, KeepAlive: 15 * time.Second}
	s.dial = func(ctx context.Context) (net.Conn, net.Conn, error) {
		raw, err := nd.DialContext(ctx, "tcp", addr)
		return raw, raw, err
	}
	logger.Debug("relay output ready", "address", addr)
	return s, nil
}

func newStreamSender(addr, host string, gz bool, timeout time.Duration, logger *slog.Logger) *streamSender {
	s := &streamSender{addr: addr, host: host, gzip: gz, timeout: timeout, logger: logger,
		bw: bufio.NewWriterSize(nil, writeBufferSize)}
	if gz {
		s.gz, _ = gzip.NewWriterLevel(nil, gzipLevel) // the level is a valid constant
	}
	return s
}

// deadlineWriter sets a fresh write deadline before each write, so a stalled server fails the
// Send after timeout without bounding the whole batch.
type deadlineWriter struct {
	raw     net.Conn
	conn    io.Writer
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	if err := w.raw.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return 0, err
	}
	return w.conn.Write(p)
}

// closeWriter is a connection whose write side can be shut down alone.
type closeWriter interface{ CloseWrite() error }

func (s *streamSender) send(ctx context.Context, b *Batch) error {
	raw, conn, err := s.dial(ctx)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", s.addr, ctxErr(ctx, s.explain(err)))
	}
	defer raw.Close()
	// Cancelling ctx closes the raw connection, which fails any blocked write or read, and never
	// sends a TLS close_notify that could look like the end of a batch.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	s.bw.Reset(deadlineWriter{raw: raw, conn: conn, timeout: s.timeout})
	if s.gzip {
		err = s.writeGzip(b)
	} else {
		err = s.writePlain(b)
	}
	if err == nil {
		err = s.bw.Flush()
	}
	s.bw.Reset(nil)
	if err != nil {
		return fmt.Errorf("writing to %s: %w", s.addr, ctxErr(ctx, s.explain(s.pendingAlert(ctx, raw, conn, err))))
	}
	// The EOF confirms the batch only if the server sent it after it read our half-close: one that
	// is already here came from a server that stopped reading somewhere in the batch, however
	// cleanly it closed, and the lines after that point are lost.
	if err := s.checkNotClosed(raw, conn); err != nil {
		return fmt.Errorf("before half-closing the connection to %s: %w", s.addr, ctxErr(ctx, s.explain(err)))
	}
	if err := halfClose(raw, conn); err != nil {
		return fmt.Errorf("half-closing the connection to %s: %w", s.addr, ctxErr(ctx, s.explain(s.pendingAlert(ctx, raw, conn, err))))
	}
	if err := s.waitEOF(raw, conn); err != nil {
		return fmt.Errorf("waiting for %s to close: %w", s.addr, ctxErr(ctx, s.explain(err)))
	}
	// An EOF that arrived after the half-close still confirms nothing if the server sent it
	// before our FIN reached it: it closed somewhere in the batch, only later than the probe.
	if err := closedAfterUs(raw, s.timeout); err != nil {
		return fmt.Errorf("after %s closed: %w", s.addr, ctxErr(ctx, err))
	}
	return nil
}

// writePlain writes one LF-framed line per event.
func (s *streamSender) writePlain(b *Batch) error {
	for i := range b.Events {
		ev := &b.Events[i]
		if err := s.writeLine(s.bw, b.Tag, ev); err != nil {
			return err
		}
	}
	return nil
}

// writeLine encodes ev straight into the write buffer when it fits, or through scratch.
func (s *streamSender) writeLine(w io.Writer, tag string, ev *Event) error {
	need := len(ev.Msg) + len(s.host) + len(tag) + 64
	if bw, ok := w.(*bufio.Writer); ok && bw.Available() >= need {
		// bufio.Writer.Write copies nothing when p is its own available buffer.
		_, err := w.Write(AppendLine(bw.AvailableBuffer(), ev.Time, s.host, tag, ev.Msg))
		return err
	}
	line := AppendLine(s.scratch[:0], ev.Time, s.host, tag, ev.Msg)
	s.keepScratch(line)
	_, err := w.Write(line)
	return err
}

// keepScratch keeps a grown scratch buffer for the next lines, unless it is huge.
func (s *streamSender) keepScratch(line []byte) {
	if cap(line) > cap(s.scratch) && cap(line) <= maxScratch {
		s.scratch = line[:0]
	}
}

// writeGzip writes the batch as whole gzip members of about gzipMemberSize uncompressed bytes.
func (s *streamSender) writeGzip(b *Batch) error {
	open, size := false, 0
	for i := range b.Events {
		if !open {
			s.gz.Reset(s.bw)
			open, size = true, 0
		}
		ev := &b.Events[i]
		line := AppendLine(s.scratch[:0], ev.Time, s.host, b.Tag, ev.Msg)
		s.keepScratch(line)
		if _, err := s.gz.Write(line); err != nil {
			return err
		}
		size += len(line)
		if size >= gzipMemberSize {
			if err := s.gz.Close(); err != nil {
				return err
			}
			open = false
		}
	}
	if open {
		return s.gz.Close()
	}
	return nil
}

// halfClose shuts down the write side: a TLS close_notify first when conn is TLS, then the TCP
// FIN (Devo's Python SDK sends a bare FIN; a TLS server may wait for either).
func halfClose(raw, conn net.Conn) error {
	if tc, ok := conn.(*tls.Conn); ok {
		if err := tc.CloseWrite(); err != nil {
			return err
		}
	}
	cw, ok := raw.(closeWriter)
	if !ok {
		return fmt.Errorf("a %T cannot half-close", raw)
	}
	return cw.CloseWrite()
}

// checkNotClosed reads what the server sent before the half-close, without waiting for more than
// earlyEOFProbe. Devo sends no application data: an EOF (a TLS close_notify or a TCP FIN) is
// ErrClosedEarly, and a read error (a reset, a TLS alert) is returned as it is; data is discarded.
// Nothing to read is the normal case and returns nil.
func (s *streamSender) checkNotClosed(raw, conn net.Conn) error {
	if err := raw.SetReadDeadline(time.Now().Add(earlyEOFProbe)); err != nil {
		return err
	}
	var buf [512]byte
	for {
		_, err := conn.Read(buf[:])
		switch {
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: its EOF arrived before the half-close", ErrClosedEarly)
		default:
			return err
		}
	}
}

// waitEOF reads until the server's EOF, discarding anything it sends (Devo sends nothing), within
// the timeout.
func (s *streamSender) waitEOF(raw, conn net.Conn) error {
	if err := raw.SetReadDeadline(time.Now().Add(s.timeout)); err != nil {
		return err
	}
	var buf [512]byte
	extra := 0
	for {
		n, err := conn.Read(buf[:])
		extra += n
		if errors.Is(err, io.EOF) {
			if extra > 0 {
				s.logger.Debug("the server sent data before closing; it was discarded", "bytes", extra)
			}
			return nil
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("%w within %s: %w", ErrNoEOF, s.timeout, err)
			}
			return err
		}
	}
}

func (s *streamSender) close() error { return nil }

// pendingAlert looks for the TLS alert that explains a failed write. A TLS 1.3 server checks the
// client certificate after the client's handshake is over, then sends an alert and closes; the
// client learns it only by reading, and its next write often fails first with a bare "broken
// pipe" or "connection reset". The alert is usually still queued on the socket: when a short read
// finds it, it is returned (with the write error), so that explain can name the cert file.
func (s *streamSender) pendingAlert(ctx context.Context, raw, conn net.Conn, werr error) error {
	if _, ok := conn.(*tls.Conn); !ok || ctx.Err() != nil {
		return werr
	}
	if err := raw.SetReadDeadline(time.Now().Add(min(s.timeout, 2*time.Second))); err != nil {
		return werr
	}
	var buf [512]byte
	for {
		_, err := conn.Read(buf[:])
		var opErr *net.OpError
		switch {
		case err == nil:
			continue // Devo sends no data; whatever this is, keep looking for the alert
		case errors.As(err, &opErr) && opErr.Op == "remote error":
			return fmt.Errorf("%w (the write had failed: %v)", err, werr)
		default:
			return werr
		}
	}
}

// ErrServerUntrusted is wrapped when the server's certificate does not verify against the chain
// file, and ErrClientCertRejected when the server refused the client certificate: errors that
// retrying cannot fix until the named file is.
var (
	ErrServerUntrusted    = errors.New("the server's certificate does not verify against the chain file")
	ErrClientCertRejected = errors.New("the server rejected the client certificate")
)

// explain names the file to fix when a TLS error is about certificates: the chain file when the
// server's certificate does not verify (or is not valid for the host name), the cert file when
// the server refused ours. TLS 1.3 servers report a refused client certificate only after the
// handshake, so this applies to every step of a Send. Other errors are returned unchanged.
func (s *streamSender) explain(err error) error {
	if s.chain == "" || err == nil {
		return err
	}
	var (
		hostErr   x509.HostnameError
		verifyErr *tls.CertificateVerificationError
		opErr     *net.OpError
	)
	switch {
	case errors.As(err, &hostErr):
		return fmt.Errorf("the server's certificate is not valid for the host name %s (verify_hostname: false checks only the chain file %s): %w",
			hostErr.Host, s.chain, err)
	case errors.As(err, &verifyErr), errors.Is(err, errChainMismatch):
		return fmt.Errorf("%w %s: %w", ErrServerUntrusted, s.chain, err)
	case errors.As(err, &opErr) && opErr.Op == "remote error" && strings.Contains(opErr.Err.Error(), "certificate"):
		return fmt.Errorf("%w in cert file %s (is it the domain certificate Devo issued?): %w", ErrClientCertRejected, s.cert, err)
	}
	return err
}

// ctxErr prefers the context's error when ctx ended, since it explains a closed connection.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}
