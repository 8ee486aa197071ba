package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// addSeeds adds every file matching the globs to the fuzz corpus.
func addSeeds(f *testing.F, globs ...string) {
	f.Helper()
	n := 0
	for _, g := range globs {
		files, err := filepath.Glob(g)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
			n++
		}
	}
	if n == 0 {
		f.Fatalf("no seeds in %v", globs)
	}
}

// FuzzParse checks that no input makes Parse panic, that it returns either a configuration or
// config Errors, that a returned configuration keeps the invariants its users rely on, and that
// errors never carry the private token.
func FuzzParse(f *testing.F) {
	addSeeds(f, "testdata/*.yaml", "../../deployments/config.example.yaml")
	const secret = "fuzz-private-token-0123456789"
	env := map[string]string{"DT_PRIVATE_TOKEN": secret, "DT_PUBLIC_TOKEN": "fuzz-public", "RELAY_PORT": "13001"}
	opts := LoadOptions{LookupEnv: envOf(env), Now: func() time.Time { return fixedNow }, BaseDir: "/etc/dtfleet"}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, opts)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse returned cfg=%v err=%v; want exactly one", cfg != nil, err)
		}
		if err != nil {
			es := AsErrors(err)
			if len(es) == 0 {
				t.Fatalf("Parse error is not config Errors: %v", err)
			}
			for _, e := range es {
				if e.Msg == "" || e.Error() == "" {
					t.Fatalf("empty problem: %#v", e)
				}
			}
			if !bytes.Contains(data, []byte(secret)) && strings.Contains(err.Error(), secret) {
				t.Fatalf("error reveals the private token: %v", err)
			}
			return
		}
		if len(cfg.EnabledInputs()) == 0 || len(cfg.EnabledOutputs()) == 0 {
			t.Fatalf("valid configuration without an enabled input or output")
		}
		for name, in := range cfg.Inputs {
			if len(in.Services) != len(Services) {
				t.Fatalf("input %s resolved %d services", name, len(in.Services))
			}
			if in.Credentials.PublicToken == "" || in.Credentials.PrivateToken == "" || in.Credentials.Instance == "" {
				t.Fatalf("input %s has empty credentials", name)
			}
			for svc, s := range in.Services {
				if checkTag(s.Tag) != nil || s.Period <= 0 || s.Endpoint == "" || s.Enabled == nil {
					t.Fatalf("%s.%s resolved badly: %+v", name, svc, s)
				}
				if s.Snapshot != (s.Window == 0) {
					t.Fatalf("%s.%s: snapshot %v with window %v", name, svc, s.Snapshot, s.Window)
				}
				if s.StartTime.After(fixedNow) {
					t.Fatalf("%s.%s starts in the future", name, svc)
				}
			}
		}
		for name, o := range cfg.Outputs {
			if o.Enabled == nil {
				t.Fatalf("output %s has no enabled flag", name)
			}
			switch o.Type {
			case OutputDevoPlatform, OutputRelay:
				if o.Config.Address == "" || o.Config.Port < 1 || o.Config.Port > 65535 {
					t.Fatalf("output %s: %+v", name, o.Config)
				}
			case OutputHTTP:
				if o.Config.URL == "" {
					t.Fatalf("output %s has no URL", name)
				}
			}
		}
	})
}

// FuzzParseDefinitions checks that no definitions file makes ParseDefinitions panic and that
// accepted definitions are complete.
func FuzzParseDefinitions(f *testing.F) {
	addSeeds(f, "testdata/definitions/*.yaml", "definitions.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseDefinitions(data)
		if (d == nil) == (err == nil) {
			t.Fatalf("ParseDefinitions returned d=%v err=%v; want exactly one", d != nil, err)
		}
		if err != nil {
			if len(AsErrors(err)) == 0 {
				t.Fatalf("error is not config Errors: %v", err)
			}
			return
		}
		if _, err := goLayout(d.Layout); err != nil {
			t.Fatalf("accepted layout %q: %v", d.Layout, err)
		}
		for _, name := range Services {
			sd, ok := d.Services[name]
			if !ok || sd.Endpoint == "" || checkTag(sd.DevoTag) != nil || sd.PersistenceVersion < 0 {
				t.Fatalf("service %s accepted as %+v", name, sd)
			}
		}
	})
}

// FuzzExpandEnv checks that expansion never panics and leaves text without "$" alone.
func FuzzExpandEnv(f *testing.F) {
	for _, s := range []string{"", "plain", "${A}", "x${A:-d}y", "$${A}", "${", "${A", "$$", "${A:-${B}}"} {
		f.Add(s)
	}
	lookup := envOf(map[string]string{"A": "1", "B": "2"})
	f.Fuzz(func(t *testing.T, s string) {
		out, changed, err := expandEnv(s, lookup)
		if err != nil {
			return
		}
		if !strings.Contains(s, "$") && (changed || out != s) {
			t.Fatalf("expandEnv(%q) = %q, changed=%v", s, out, changed)
		}
		if !changed && out != s {
			t.Fatalf("expandEnv(%q) = %q without reporting a change", s, out)
		}
	})
}
