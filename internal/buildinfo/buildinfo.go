// Package buildinfo says which build of dtfleet is running: its version, commit and build date,
// from -ldflags when the release build sets them, else from the module and VCS information the
// Go toolchain embeds (runtime/debug.ReadBuildInfo).
package buildinfo

import (
	"cmp"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by release builds, for example:
//
//	go build -ldflags "-X github.com/dtfleet/dtfleet/internal/buildinfo.version=1.2.0
//	  -X github.com/dtfleet/dtfleet/internal/buildinfo.commit=$(git rev-parse --short HEAD)
//	  -X github.com/dtfleet/dtfleet/internal/buildinfo.date=$(date -u +%FT%TZ)" ./cmd/dtfleet
//
// They are package variables only because -X can set nothing else; nothing writes them at run
// time.
var version, commit, date string

// Info describes a build.
type Info struct {
	Version   string `json:"version"`    // "devel" when neither -ldflags nor the module says
	Commit    string `json:"commit"`     // VCS revision, "+dirty" when built from a modified tree; "unknown" without VCS
	Date      string `json:"build_date"` // commit or build time, RFC 3339; "unknown" without
	GoVersion string `json:"go"`
	OS        string `json:"os"` // GOOS/GOARCH
}

// Read returns this binary's build information.
func Read() Info {
	in := Info{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, at, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			rev += dirty
		}
		mv := bi.Main.Version
		if mv == "(devel)" {
			mv = ""
		}
		in.Version = cmp.Or(in.Version, mv)
		in.Commit = cmp.Or(in.Commit, rev)
		in.Date = cmp.Or(in.Date, at)
	}
	in.Version = cmp.Or(in.Version, "devel")
	in.Commit = cmp.Or(in.Commit, "unknown")
	in.Date = cmp.Or(in.Date, "unknown")
	return in
}

// String is the one-line form `dtfleet version` prints.
func (i Info) String() string {
	return fmt.Sprintf("dtfleet %s (commit %s, built %s, %s, %s)", i.Version, i.Commit, i.Date, i.GoVersion, i.OS)
}

// StartupLine is the first line a long-running process logs, as Devo's collector opens its log
// with its version, build and OS.
func (i Info) StartupLine() string {
	return fmt.Sprintf("dtfleet version: %s, build: %s (%s), go: %s, OS: %s", i.Version, i.Commit, i.Date, i.GoVersion, i.OS)
}
