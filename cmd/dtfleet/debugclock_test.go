package main

import (
	"strings"
	"testing"
	"time"
)

// TestDebugClock: the hidden clock knob shifts Now, Since and Until by its offset, leaves the
// roles on their default clock when unset or zero, and refuses an unparsable value or one beyond
// a day.
func TestDebugClock(t *testing.T) {
	for _, tc := range []struct {
		value   string
		offset  time.Duration
		wantErr string
	}{
		{value: "", offset: 0},
		{value: "0s", offset: 0},
		{value: "1h", offset: time.Hour},
		{value: "-10m", offset: -10 * time.Minute},
		{value: "24h", offset: 24 * time.Hour},
		{value: "25h", wantErr: "within ±24h"},
		{value: "-100000h", wantErr: "within ±24h"},
		{value: "soon", wantErr: "want a duration"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			clk, off, err := debugClock(func(k string) string {
				if k == debugClockEnv {
					return tc.value
				}
				return ""
			})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), debugClockEnv) {
					t.Fatalf("err = %v; want one naming %s and saying %q", err, debugClockEnv, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if off != tc.offset {
				t.Fatalf("offset %v; want %v", off, tc.offset)
			}
			if tc.offset == 0 {
				if clk != nil {
					t.Fatal("a clock for no offset; want nil (the roles' real clock)")
				}
				return
			}
			before := time.Now()
			got := clk.Now()
			after := time.Now()
			if got.Before(before.Add(tc.offset)) || got.After(after.Add(tc.offset)) {
				t.Fatalf("Now = %v; want between %v and %v", got, before.Add(tc.offset), after.Add(tc.offset))
			}
			if s := clk.Since(before.Add(tc.offset)); s < 0 || s > time.Minute {
				t.Fatalf("Since(a shifted instant just past) = %v; want a small positive duration", s)
			}
			if u := clk.Until(time.Now()); tc.offset > 0 && u > 0 || tc.offset < 0 && u < 0 {
				t.Fatalf("Until(host now) = %v with offset %v; want the offset's opposite sign", u, tc.offset)
			}
		})
	}
}
