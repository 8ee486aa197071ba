package bus

import "testing"

// TestLocalURLs pins the rule that keeps the store's generated credentials on this machine: they
// are presented, unasked, only when every server of nats.url is local.
func TestLocalURLs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		urls string
		want bool
	}{
		{"nats://127.0.0.1:4222", true},
		{"nats://localhost:4222", true},
		{"nats://[::1]:4222", true},
		{"nats://0.0.0.0:4222", true},
		{"nats://127.0.0.1:4222, nats://127.0.0.2:4223", true},
		{"nats://10.0.0.5:4222", false},
		{"nats://nats.example.com:4222", false},
		{"nats://127.0.0.1:4222,nats://10.0.0.5:4222", false},
		{"tls://localhost.example.com:4222", false},
	} {
		if got := localURLs(tc.urls); got != tc.want {
			t.Errorf("localURLs(%q) = %v, want %v", tc.urls, got, tc.want)
		}
	}
}
