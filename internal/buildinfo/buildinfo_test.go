package buildinfo

import (
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReadFillsEveryField(t *testing.T) {
	in := Read()
	if in.Version == "" || in.Commit == "" || in.Date == "" || in.GoVersion != runtime.Version() || in.OS != runtime.GOOS+"/"+runtime.GOARCH {
		t.Fatalf("Read() = %+v", in)
	}
	if s := in.StartupLine(); !strings.Contains(s, "OS: "+in.OS) || !strings.Contains(s, in.Version) {
		t.Errorf("StartupLine() = %q", s)
	}
}

func TestLdflagsWin(t *testing.T) {
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "1.2.3", "abc123", "2026-01-02T03:04:05Z"
	if got, want := Read().String(), "dtfleet 1.2.3 (commit abc123, built 2026-01-02T03:04:05Z, "; !strings.HasPrefix(got, want) {
		t.Errorf("String() = %q, want prefix %q", got, want)
	}
}
