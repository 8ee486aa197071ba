//go:build linux

package devo

import (
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// closePoll is how often closedAfterUs looks again at a connection whose close is still settling.
const closePoll = time.Millisecond

// closedAfterUs checks, once the server's EOF has been read after the half-close, that the server
// had everything we sent when it closed: its EOF confirms the batch only then.
//
// How it tells, on Linux, from the socket's TCP state and pending error:
//   - A server that closes after reading our EOF has received our FIN, so its FIN acknowledges
//     ours and our socket goes straight to TIME_WAIT (reported as CLOSE).
//   - A server that closed early, after line n of the batch while the rest was still on its way,
//     sent a FIN that does not acknowledge ours: our socket is in CLOSING (its FIN came after our
//     half-close) or LAST_ACK (it came between the early-EOF probe and the half-close). What we
//     sent after its close then meets a closed socket, which answers with a reset.
//   - A TLS server closes on our close_notify, which may be before our FIN reaches it: the same
//     two states, but briefly, until its kernel acknowledges our FIN.
//
// So a socket in CLOSING or LAST_ACK is watched until it settles, within timeout: acknowledged,
// the server had everything (confirmed); reset, it did not (ErrClosedEarly); neither, nothing
// is confirmed (ErrNoEOF).
//
// What no client can see: a server that had our whole batch and our FIN in its buffers, closed
// after line n anyway and then discarded the rest (a lingering close). Its FIN acknowledges ours
// like any other. The reference's EOF handshake holds that a server does not do this.
func closedAfterUs(raw net.Conn, timeout time.Duration) error {
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return nil // not a socket (a test pipe): nothing to check
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	end := time.Now().Add(timeout)
	for {
		state, err := closeState(rc)
		if err != nil {
			return err
		}
		switch state {
		case unix.BPF_TCP_CLOSING, unix.BPF_TCP_LAST_ACK:
		default:
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("%w within %s: the server's EOF did not acknowledge ours, and it acknowledged nothing after (TCP state %s)",
				ErrNoEOF, timeout, tcpStateName(state))
		}
		time.Sleep(closePoll)
	}
}

// closeState reads the socket's pending error, then its TCP state. A pending error (the server's
// reset) is returned wrapped in ErrClosedEarly.
func closeState(rc syscall.RawConn) (uint8, error) {
	var (
		info  *unix.TCPInfo
		soErr int
		err   error
	)
	if cerr := rc.Control(func(fd uintptr) {
		soErr, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soErr == 0 {
			info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		}
	}); cerr != nil {
		return 0, fmt.Errorf("reading the connection's state after its EOF: %w", cerr)
	}
	if err != nil {
		return 0, fmt.Errorf("reading the connection's state after its EOF: %w", err)
	}
	if soErr != 0 {
		return 0, fmt.Errorf("%w: the server reset the connection after its EOF: %w", ErrClosedEarly, syscall.Errno(soErr))
	}
	return info.State, nil
}

// tcpStateName names the Linux TCP states closedAfterUs waits on.
func tcpStateName(s uint8) string {
	switch s {
	case unix.BPF_TCP_CLOSING:
		return "CLOSING"
	case unix.BPF_TCP_LAST_ACK:
		return "LAST_ACK"
	}
	return fmt.Sprint(s)
}
