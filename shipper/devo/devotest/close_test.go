package devotest

import (
	"fmt"
	"testing"
)

// TestCloseAfterIsGraceful checks the CloseAfter mode: the connection that carries the n-th event
// ends without a reset (the client's writes, half-close and wait for EOF all succeed), only the
// first n events are recorded, and the mode is one-shot.
func TestCloseAfterIsGraceful(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	s.CloseAfter(3)
	var data []byte
	for i := range 10 {
		data = fmt.Appendf(data, "<14>t h my.app.x: %d\n", i)
	}
	if err := sendRaw(t, dial(t, s.RelayAddr()), data); err != nil {
		t.Fatalf("the client saw %v; a graceful close must look like a successful send", err)
	}
	if got := s.Count(); got != 3 || s.GracefulCloses() != 1 || s.Resets() != 0 {
		t.Fatalf("Count %d, GracefulCloses %d, Resets %d; want 3, 1 and 0", got, s.GracefulCloses(), s.Resets())
	}
	if err := sendRaw(t, dial(t, s.RelayAddr()), data); err != nil {
		t.Fatal(err)
	}
	if got := s.Count(); got != 13 || s.GracefulCloses() != 1 {
		t.Fatalf("Count %d, GracefulCloses %d; want 13 and 1", got, s.GracefulCloses())
	}
}
