package fleet

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

func TestExitCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"config error", &ConfigError{Err: errors.New("no such file")}, ExitConfig},
		{"config.Errors wrapped", fmt.Errorf("loading: %w", config.Errors{&config.Error{}}), ExitConfig},
		{"refused signature", fmt.Errorf("checking: %w", &darktrace.Error{Kind: darktrace.KindSignature, Class: darktrace.Transient}), ExitAuth},
		{"clock off", &darktrace.Error{Kind: darktrace.KindDate}, ExitAuth},
		{"401", &darktrace.Error{Kind: darktrace.KindAuth}, ExitAuth},
		{"403", &darktrace.Error{Kind: darktrace.KindPermission}, ExitAuth},
		{"appliance down", &darktrace.Error{Kind: darktrace.KindNetwork}, ExitFailure},
		{"other", errors.New("boom"), ExitFailure},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("%s: ExitCode(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}
