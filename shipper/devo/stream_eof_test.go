//go:build linux

package devo

import (
	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"

	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
)

// tcpCloseWait is Linux's TCP_CLOSE_WAIT state: the peer's FIN has arrived, ours is not sent.
const tcpCloseWait = 8

// tcpState returns the Linux TCP state of c (the first byte of its TCP_INFO).
func tcpState(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		v    int
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO)
	}); err != nil {
		return 0, err
	}
	return v & 0xff, gerr
}

// gatedConn is the client's TCP connection with one gate: once gateAt bytes are written, the next
// write waits until the gate function returns. It gives the test one exact interleaving: the
// server's EOF reaches the client while the client is still writing the batch.
type gatedConn struct {
	*net.TCPConn
	gateAt  int
	written int
	gate    func(*net.TCPConn) error
	gated   bool
}

func (g *gatedConn) Write(p []byte) (int, error) {
	if g.gate != nil && !g.gated && g.written >= g.gateAt {
		g.gated = true
		if err := g.gate(g.TCPConn); err != nil {
			return 0, fmt.Errorf("test gate: %w", err)
		}
	}
	n, err := g.TCPConn.Write(p)
	g.written += n
	return n, err
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(deadline time.Duration, cond func() (bool, error)) error {
	end := time.Now().Add(deadline)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(end) {
			return errors.New("condition not met in time")
		}
		<-tick.C
	}
}

// TestEarlyGracefulCloseIsNotConfirmation is row 6 of issue 9: a server that reads 300 of 1,000
// lines, then closes cleanly (close_notify and FIN, no reset) and discards the rest. The client's
// writes and half-close all succeed and it then reads an EOF; that EOF used to count as delivery,
// losing 700 lines. The EOF arrived before the half-close, so Send must fail (retryable), and the
// retry must deliver the whole batch.
func TestEarlyGracefulCloseIsNotConfirmation(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, kind := range []string{"tls", "relay"} {
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
			}
			out := newOut(t, "out_1", cfg, Options{Timeout: 10 * time.Second})
			const n, cut = 1000, 300
			b := makeBatch(testTag, kind, n, 150)
			gateAt := 0
			for _, e := range b.Events[:cut] {
				gateAt += len(AppendLine(nil, e.Time, testHost, testTag, e.Msg))
			}

			ss := out.(*output).s.(*streamSender)
			var tlsConf *tls.Config
			if kind == "tls" {
				cr, err := loadCredentials(p.CA, p.ClientCert, p.ClientKey, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				tlsConf = clientTLSConfig(cr, cfg.Config.Address, true)
			}
			dials := 0
			var first *gatedConn
			ss.dial = func(ctx context.Context) (net.Conn, net.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", ss.addr)
				if err != nil {
					return nil, nil, err
				}
				g := &gatedConn{TCPConn: c.(*net.TCPConn), gateAt: gateAt}
				if dials++; dials == 1 {
					first = g
					// Hold the rest of the batch until the server has closed and its EOF is
					// queued on the client's socket.
					g.gate = func(c *net.TCPConn) error {
						return waitUntil(10*time.Second, func() (bool, error) {
							if srv.EarlyCloses() == 0 {
								return false, nil
							}
							st, err := tcpState(c)
							return st == tcpCloseWait, err
						})
					}
				}
				if tlsConf == nil {
					return g, g, nil
				}
				tc := tls.Client(g, tlsConf)
				if err := tc.HandshakeContext(ctx); err != nil {
					g.Close()
					return nil, nil, err
				}
				return g, tc, nil
			}

			srv.LingeringCloseAfter(cut)
			err := out.Send(testCtx(t), b)
			if !first.gated {
				t.Fatalf("the test did not exercise the early close: the batch was written before the gate")
			}
			if err == nil {
				t.Fatalf("Send = nil after the server read only %d of %d lines (recorded %d); want an error", cut, n, srv.Count())
			}
			if !errors.Is(err, ErrClosedEarly) {
				t.Errorf("Send = %v; want an error wrapping ErrClosedEarly", err)
			}
			if errors.Is(err, ErrInvalidTag) {
				t.Errorf("Send = %v: a terminal error; the batch must be retried", err)
			}
			if got := srv.Count(); got != cut {
				t.Fatalf("the server recorded %d events; want %d", got, cut)
			}

			// The retry (the server no longer closes early) delivers the whole batch.
			bo := &backoff.ExponentialBackOff{InitialInterval: time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 10 * time.Millisecond}
			if err := RetryGrace(testCtx(t), 0, out, b, bo, clockwork.NewRealClock(), nil); err != nil {
				t.Fatalf("Retry: %v", err)
			}
			got, want := messages(srv.Events(testTag)), batchMessages(b)
			if len(got) != cut+n || !equalStrings(got[:cut], want[:cut]) || !equalStrings(got[cut:], want) {
				t.Fatalf("the server recorded %d events; want the %d read before the close, then the whole batch of %d", len(got), cut, n)
			}
		})
	}
}

// tcpClosing is Linux's TCP_CLOSING state: both sides sent a FIN, and the peer's did not
// acknowledge ours.
const tcpClosing = 11

// halfCloseHook is the client's TCP connection with a hook called once its half-close is done.
type halfCloseHook struct {
	*net.TCPConn
	after func()
}

func (h halfCloseHook) CloseWrite() error {
	err := h.TCPConn.CloseWrite()
	h.after()
	return err
}

// TestEarlyCloseAfterTheHalfCloseIsNotConfirmation is the early close the probe cannot see: the
// server is slow, so the client has written the whole batch and half-closed before the server
// reads the first 2,000 bytes of it and closes, the rest of the batch and the client's FIN still
// queued behind a small receive window. The client reads an EOF after its half-close, which used
// to count as delivery. That EOF does not acknowledge the client's FIN, and the server, a server
// that stops reading, then closes with the rest unread (a reset): Send must fail, retryably.
func TestEarlyCloseAfterTheHalfCloseIsNotConfirmation(t *testing.T) {
	t.Parallel()
	// A small receive buffer keeps most of the batch, and the client's FIN behind it, queued on
	// the client while the server does not read.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(testCtx(t), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	halfClosed := make(chan struct{})
	client := make(chan *net.TCPConn, 1)
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close() // with most of the batch unread: a reset
		cc := <-client
		select {
		case <-halfClosed:
		case <-time.After(10 * time.Second):
			served <- errors.New("the client never half-closed")
			return
		}
		if _, err := io.ReadFull(c, make([]byte, 2000)); err != nil {
			served <- err
			return
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			served <- err
			return
		}
		// Close (and reset) only once the client holds our FIN unacknowledged, so that it reads
		// the EOF first, as a client whose server resets a moment later does.
		served <- waitUntil(10*time.Second, func() (bool, error) {
			st, err := tcpState(cc)
			return st == tcpClosing, err
		})
	}()

	out := newOut(t, "out_1", relayConfig(t, ln.Addr().String()), Options{Timeout: 10 * time.Second})
	ss := out.(*output).s.(*streamSender)
	ss.dial = func(ctx context.Context) (net.Conn, net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ss.addr)
		if err != nil {
			return nil, nil, err
		}
		tc := c.(*net.TCPConn)
		if err := tc.SetWriteBuffer(1 << 20); err != nil { // the whole batch fits: writes complete
			tc.Close()
			return nil, nil, err
		}
		client <- tc
		h := halfCloseHook{TCPConn: tc, after: func() { close(halfClosed) }}
		return h, h, nil
	}
	err = out.Send(testCtx(t), makeBatch(testTag, "late-close", 500, 200))
	if serr := <-served; serr != nil {
		t.Fatalf("the test's server: %v", serr)
	}
	if err == nil {
		t.Fatal("Send = nil after the server read 2,000 bytes of a 100 KB batch and closed; want an error")
	}
	if !errors.Is(err, ErrClosedEarly) {
		t.Errorf("Send = %v; want an error wrapping ErrClosedEarly", err)
	}
	if errors.Is(err, ErrInvalidTag) {
		t.Errorf("Send = %v: a terminal error; the batch must be retried", err)
	}
}
