package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// TestExitCodes runs the binary and checks the exit statuses systemd relies on
// (RestartPreventExitStatus=2 3): 2 for a configuration error, 3 for tokens the appliance
// refuses at the start-up check (after its short retry), 1 for other failures.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	bin := dtfleetBinary(t)
	dir := t.TempDir()
	now := time.Now().UTC().Truncate(time.Minute)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 3, Start: now.Add(-2 * time.Hour), End: now.Add(-time.Hour),
		Now: func() time.Time { return now }})
	t.Cleanup(fake.Close)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withToken := func(name, private string) string {
		return write(name, fmt.Sprintf(`nats: {listen: none, store_dir: %s}
outputs:
  file_1: {type: file, config: {path: %s}}
inputs:
  darktrace:
    credentials: {public_token: %s, private_token: %s, instance: %s}
    services:
      modelbreaches: {look_back_in_minutes: 30}
`, filepath.Join(dir, name+".store"), filepath.Join(dir, name+".out"), darktracetest.DefaultPublicToken, private, fake.URL))
	}
	invalid := write("invalid.yaml", "outputs:\n  console_1: {type: console}\n")
	badToken := withToken("bad-token.yaml", "not-the-private-token")
	good := withToken("good.yaml", darktracetest.DefaultPrivateToken)
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"missing file", []string{"run", "-c", filepath.Join(dir, "nope.yaml")}, 2, "nope.yaml"},
		{"invalid config", []string{"run", "-c", invalid}, 2, "invalid configuration"},
		{"invalid config, status", []string{"status", "-c", invalid}, 2, "invalid configuration"},
		{"refused tokens", []string{"run", "-c", badToken}, 3, "API SIGNATURE ERROR"},
		{"other failure", []string{"replay", "-c", good, "--service", "modelbreaches", "--from", "yesterday", "--to", "today"}, 1, "not an RFC 3339 time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(bin, tt.args...)
			cmd.Dir = dir
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("dtfleet %s: exit %d, want %d; stderr:\n%s", strings.Join(tt.args, " "), code, tt.code, stderr.String())
			}
			if strings.Contains(stderr.String(), "not-the-private-token") {
				t.Errorf("the private token reached stderr:\n%s", stderr.String())
			}
		})
	}
}

// TestVersionCommand runs the binary built with -ldflags like a release and checks that
// `dtfleet version` prints what they set.
func TestVersionCommand(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build with -ldflags")
	}
	bin := filepath.Join(t.TempDir(), "dtfleet")
	const pkg = "github.com/dtfleet/dtfleet/internal/buildinfo"
	ld := "-X " + pkg + ".version=9.8.7 -X " + pkg + ".commit=cafe123 -X " + pkg + ".date=2026-01-02T03:04:05Z"
	if out, err := exec.Command(goBin, "build", "-ldflags", ld, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "dtfleet 9.8.7 (commit cafe123, built 2026-01-02T03:04:05Z, go1.") {
		t.Fatalf("dtfleet version: %v, %q", err, out)
	}
}
