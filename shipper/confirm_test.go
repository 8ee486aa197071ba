package shipper

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestReadConfirmedAsksTheLeader: a chunk a direct get does not find (a replica behind its
// leader) is read from the leader; only the leader's "not found" reaches the lane as not found,
// which it takes for an expired or purged result and fails the slot for.
func TestReadConfirmedAsksTheLeader(t *testing.T) {
	t.Parallel()
	found := func(context.Context) ([]byte, string, error) { return []byte("chunk"), "s2", nil }
	missing := func(context.Context) ([]byte, string, error) { return nil, "", jetstream.ErrMsgNotFound }
	broken := func(context.Context) ([]byte, string, error) { return nil, "", errors.New("no responders") }
	tests := []struct {
		name          string
		direct        func(context.Context) ([]byte, string, error)
		leader        func(context.Context) ([]byte, string, error)
		want          string
		wantNotFound  bool
		wantOtherFail bool
	}{
		{"a replica has it", found, nil, "chunk", false, false},
		{"a replica behind its leader", missing, found, "chunk", false, false},
		{"gone on the leader too", missing, missing, "", true, false},
		{"the leader cannot answer", missing, broken, "", false, true},
		{"no leader to ask", missing, nil, "", true, false},
		{"the direct get fails otherwise", broken, found, "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data, _, err := readConfirmed(context.Background(), tc.direct, tc.leader)
			switch {
			case tc.wantNotFound:
				if !errors.Is(err, jetstream.ErrMsgNotFound) {
					t.Fatalf("err = %v, want not found", err)
				}
			case tc.wantOtherFail:
				if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
					t.Fatalf("err = %v, want an error that is not a not-found", err)
				}
			default:
				if err != nil || string(data) != tc.want {
					t.Fatalf("got %q, %v; want %q", data, err, tc.want)
				}
			}
		})
	}
}
