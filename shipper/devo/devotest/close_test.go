package devotest

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// tenLines is one write of ten syslog lines, small enough that the server reads it in one go.
func tenLines() []byte {
	var data []byte
	for i := range 10 {
		data = fmt.Appendf(data, "<14>t h my.app.x: %d\n", i)
	}
	return data
}

// TestLingeringCloseAfterIsGraceful checks the LingeringCloseAfter mode: the connection that
// carries the n-th event ends without a reset (the client's writes, half-close and wait for EOF all
// succeed), only the first n events are recorded, and the mode is one-shot.
func TestLingeringCloseAfterIsGraceful(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	s.LingeringCloseAfter(3)
	data := tenLines()
	if err := sendRaw(t, dial(t, s.RelayAddr()), data); err != nil {
		t.Fatalf("the client saw %v; a lingering close must look like a successful send", err)
	}
	if got := s.Count(); got != 3 || s.EarlyCloses() != 1 || s.Resets() != 0 {
		t.Fatalf("Count %d, EarlyCloses %d, Resets %d; want 3, 1 and 0", got, s.EarlyCloses(), s.Resets())
	}
	if err := sendRaw(t, dial(t, s.RelayAddr()), data); err != nil {
		t.Fatal(err)
	}
	if got := s.Count(); got != 13 || s.EarlyCloses() != 1 {
		t.Fatalf("Count %d, EarlyCloses %d; want 13 and 1", got, s.EarlyCloses())
	}
}

// TestCloseAfterResetsWithLinesUnread checks that CloseAfter never hides unprocessed lines behind
// a FIN: the ten lines arrive in one read, the server stops after the third with seven unread, so
// the client's wait for the EOF ends in a reset, not an EOF. The mode is one-shot.
func TestCloseAfterResetsWithLinesUnread(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	s.CloseAfter(3)
	data := tenLines()
	err := sendRaw(t, dial(t, s.RelayAddr()), data)
	// The reset reaches the client's write, its half-close (the socket is no longer connected) or
	// its wait for the EOF, by timing.
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("the client saw %v; seven lines were dropped unread, so it must see a reset", err)
	}
	if got := s.Count(); got != 3 || s.EarlyCloses() != 1 {
		t.Fatalf("Count %d, EarlyCloses %d; want 3 and 1", got, s.EarlyCloses())
	}
	if err := sendRaw(t, dial(t, s.RelayAddr()), data); err != nil {
		t.Fatal(err)
	}
	if got := s.Count(); got != 13 || s.EarlyCloses() != 1 {
		t.Fatalf("Count %d, EarlyCloses %d; want 13 and 1", got, s.EarlyCloses())
	}
}
