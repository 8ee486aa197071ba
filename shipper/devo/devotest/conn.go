package devotest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// acceptLoop accepts syslog connections on ln until the server closes.
func (s *Server) acceptLoop(ln net.Listener, listener string) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logger.Warn("accepting a connection failed", "listener", listener, "error", err)
			t := time.NewTimer(10 * time.Millisecond)
			select {
			case <-s.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		s.accepted.Add(1)
		if s.refuse.Load() {
			reset(c)
			continue
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(c, listener)
		}()
	}
}

// reset aborts a connection with a TCP RST: linger 0, then close.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// stallReader is the raw connection as the server reads it: each read waits out a stall and
// carries the current idle timeout as its deadline.
type stallReader struct {
	net.Conn
	s *Server
}

func (r stallReader) Read(p []byte) (int, error) {
	if !r.s.waitStall() {
		return 0, net.ErrClosed
	}
	if idle := time.Duration(r.s.idle.Load()); idle > 0 {
		_ = r.Conn.SetReadDeadline(time.Now().Add(idle))
	} else {
		_ = r.Conn.SetReadDeadline(time.Time{})
	}
	return r.Conn.Read(p)
}

// flushingReader flushes the server's files whenever the frame reader is about to block on the
// network, so the files are current whenever a client pauses.
type flushingReader struct {
	stallReader
}

func (r flushingReader) Read(p []byte) (int, error) {
	r.s.flushFiles()
	return r.stallReader.Read(p)
}

// serveConn reads one syslog connection until EOF, an error or a reset.
func (s *Server) serveConn(raw net.Conn, listener string) {
	id := s.connSeq.Add(1)
	logger := s.logger.With("listener", listener, "conn", id, "remote", raw.RemoteAddr().String())
	var conn net.Conn = stallReader{Conn: raw, s: s}
	if listener == "tls" {
		tc := tls.Server(conn, s.tlsCfg)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			logger.Debug("TLS handshake failed", "error", err)
			raw.Close()
			return
		}
		if tc.ConnectionState().DidResume {
			s.resumed.Add(1)
		}
		conn = tc
	}
	var r interface{ Read([]byte) (int, error) } = conn
	if s.opts.Dir != "" {
		if listener != "tls" {
			r = flushingReader{stallReader{Conn: raw, s: s}}
		} else {
			r = flushingTLS{conn: conn, s: s}
		}
	}
	fr := newFrameReader(r, s.opts.MaxLine)
	didReset, didClose, linger, unread := false, false, false, 0
	// Counting only, nothing needs the event's timestamp, host or message as strings: each line
	// is parsed and checked all the same, but only its tag (the same string while it repeats) and
	// its message's length are kept.
	full := !s.opts.CountOnly || s.opts.OnReceive != nil || s.opts.Dir != ""
	var tags, hosts interned
	err := fr.run(func(framing string, line []byte) bool {
		f, perr := parseFields(line)
		if perr != nil {
			s.recordMalformed(line, perr)
			return true
		}
		e := Received{Listener: listener, Framing: framing, Conn: id, Priority: f.pri, Tag: tags.get(f.tag)}
		if full {
			e.Timestamp, e.Host, e.Msg = string(f.ts), hosts.get(f.host), string(f.msg)
		}
		if s.record(e, len(f.msg)) {
			didReset = true
			return false
		}
		if didClose, linger = s.closeDue(); didClose {
			unread = fr.buffered()
			return false
		}
		return true
	})
	s.flushFiles()
	switch {
	case didReset:
		logger.Debug("resetting the connection (fault injection)")
		reset(raw)
	case didClose && linger:
		logger.Debug("closing the connection early, lingering (fault injection)")
		closeLingering(raw, conn)
	case didClose && unread > 0:
		// A server that stops with bytes of the client received but unprocessed aborts, as the
		// kernel does when a socket is closed with data unread.
		logger.Debug("closing the connection early with lines unread: reset (fault injection)", "unread_bytes", unread)
		reset(raw)
	case didClose:
		// Nothing unread here; the kernel still resets if unread bytes wait in its buffer, and
		// answers what the client sends from now on with a reset.
		logger.Debug("closing the connection early (fault injection)")
		conn.Close()
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			logger.Debug("closing an idle connection")
		} else {
			logger.Debug("connection ended with an error", "error", err)
		}
		raw.Close()
	default:
		// The client half-closed and everything it sent was read: close, so its wait for EOF ends.
		conn.Close()
	}
}

// closeLingering ends the server's side of a connection the client is still writing to without a
// reset: a TLS close_notify (conn is TLS) then a TCP FIN; it then discards whatever the client
// still sends (draining, so that closing never resets) until the client's EOF, an error or the
// server's Close, and closes.
func closeLingering(raw, conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		_ = tc.CloseWrite()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, raw)
	raw.Close()
}

// flushingTLS flushes the server's files before each read of a TLS connection.
type flushingTLS struct {
	conn net.Conn
	s    *Server
}

func (r flushingTLS) Read(p []byte) (int, error) {
	r.s.flushFiles()
	return r.conn.Read(p)
}
