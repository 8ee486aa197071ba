package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const testPrivateToken = "7chbwad4hl4n5ok69e2edrs2ogpiqy8ldd5oozdb"

// mustParse parses doc and fails the test on any problem.
func mustParse(t *testing.T, doc string, opts LoadOptions) *Config {
	t.Helper()
	cfg, err := Parse([]byte(doc), opts)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

// minimalWith returns a valid configuration with extra lines appended under the darktrace input.
func minimalWith(inputExtra string) string {
	return `outputs:
  console_1: {type: console}
inputs:
  darktrace:
    credentials:
      public_token: pub-token
      private_token: priv-token
      instance: https://dt.example.com
` + inputExtra
}

func TestFullConfig(t *testing.T) {
	t.Parallel()
	opts := testOptions(map[string]string{"DT_PRIVATE_TOKEN": testPrivateToken})
	cfg, err := Load("testdata/full.good.yaml", opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Source != "testdata/full.good.yaml" {
		t.Errorf("Source = %q", cfg.Source)
	}
	in := cfg.Inputs["darktrace"]
	if got := in.Credentials.PrivateToken.Reveal(); got != testPrivateToken {
		t.Errorf("private token = %q, want the environment's value", got)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"globals.id", cfg.Globals.ID, "fleet-1"},
		{"nats.url", cfg.NATS.URLs(), []string{"nats://n1:4222", "nats://n2:4222", "nats://n3:4222"}},
		{"nats.replicas", cfg.NATS.Replicas, 3},
		{"metrics.listen", cfg.Metrics.Listen, "0.0.0.0:9464"},
		{"nats.store_dir", cfg.NATS.StoreDir, "/etc/dtfleet/data"},
		{"nats.creds_file", cfg.NATS.CredsFile, "/etc/dtfleet/secrets/fleet.creds"},
		{"outputs", cfg.EnabledOutputs(), []string{"console_1", "devo_1", "file_1", "relay_1"}},
		{"devo_1.address", cfg.Outputs["devo_1"].Config.Address, "collector-eu.devo.io"},
		{"devo_1.port", cfg.Outputs["devo_1"].Config.Port, 443},
		{"devo_1.chain", cfg.Outputs["devo_1"].Config.Chain, "/etc/dtfleet/certs/chain.crt"},
		{"devo_1.verify_hostname", *cfg.Outputs["devo_1"].Config.VerifyHostname, true},
		{"relay_1", cfg.Outputs["relay_1"].Config.Address + fmt.Sprint(":", cfg.Outputs["relay_1"].Config.Port), "127.0.0.1:13000"},
		{"file_1.path", cfg.Outputs["file_1"].Config.Path, "/etc/dtfleet/out/devo.log"},
		{"instance", in.Credentials.Instance, "https://euw1-1234-01.cloud.darktrace.com"},
		{"tls.ca_file", in.TLS.CAFile, "/etc/dtfleet/certs/appliance-ca.pem"},
		{"services", in.EnabledServices(), []string{ServiceStatus, ServiceModelBreaches}},
		{"modelbreaches.tag", in.Services[ServiceModelBreaches].Tag, "my.app.dt.breach"},
		{"modelbreaches.window", in.Services[ServiceModelBreaches].Window, time.Hour},
		{"modelbreaches.period", in.Services[ServiceModelBreaches].Period, time.Minute},
		{"modelbreaches.lookback", in.Services[ServiceModelBreaches].LookBack, DefaultLookBackInMinutes * time.Minute},
		{"modelbreaches.start", in.Services[ServiceModelBreaches].StartTime, time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)},
		{"status.flatten", in.Services[ServiceStatus].FlattenStatus(), true},
		{"status.snapshot", in.Services[ServiceStatus].Snapshot, true},
		{"status.window", in.Services[ServiceStatus].Window, time.Duration(0)},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	got, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(got, []byte(testPrivateToken)) {
		t.Fatal("the JSON form of the configuration reveals the private token")
	}
	golden := filepath.Join("testdata", "full.good.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("reading golden file (run go test -run TestFullConfig -update): %v", err)
	}
	if !bytes.Equal(append(got, '\n'), want) {
		t.Errorf("resolved configuration differs from %s (run with -update after checking):\n%s", golden, got)
	}
}

func TestMinimalDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Load("testdata/minimal.good.yaml", LoadOptions{LookupEnv: envOf(nil)})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	absDir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Inputs["darktrace"]
	checks := []struct {
		name      string
		got, want any
	}{
		{"globals.name", cfg.Globals.Name, "darktrace_collector"},
		{"globals.memory_limit_in_mb", cfg.Globals.MemoryLimitInMB, 170},
		{"nats.embedded", cfg.NATS.Embedded(), true},
		{"nats.store_dir (default resolved against the file's directory)", cfg.NATS.StoreDir, filepath.Join(absDir, "data")},
		{"nats.listen", cfg.NATS.Listen, "127.0.0.1:4222"},
		{"nats.replicas", cfg.NATS.Replicas, 1},
		{"workers.concurrency", cfg.Workers.Concurrency, 64},
		{"workers.min_concurrency", cfg.Workers.MinConcurrency, 1},
		{"coordinator", cfg.Coordinator, Coordinator{SafetyLagInSeconds: 5, MaxSlotsAhead: 1000, MaxBacklogInMB: 64, LeaseTTLInSeconds: 10, RetryFailedBaseInSeconds: 60, RetryFailedMaxInSeconds: 3600}},
		{"shipper", cfg.Shipper, Shipper{DedupeTTLInHours: 168, SenderStatsPeriodInSeconds: 300, LeaseTTLInSeconds: 10}},
		{"inputs", cfg.EnabledInputs(), []string{"darktrace"}},
		{"input.id", in.ID, "darktrace"},
		{"input.requests_per_second", in.RequestsPerSecond, 10.0},
		{"instance (bare host through base_url)", in.Credentials.Instance, "https://euw1-1234-01.cloud.darktrace.com"},
		{"services", in.EnabledServices(), Services},
		{"outputs", cfg.EnabledOutputs(), []string{"console_1"}},
		{"definitions", cfg.Definitions != nil, true},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	wantServices := map[string]struct {
		endpoint, tag  string
		window, period time.Duration
		snapshot       bool
		lookBack       time.Duration
	}{
		ServiceAntigena:       {"/antigena", "edr.darktrace.respond.antigena", time.Hour, time.Minute, false, DefaultAntigenaLookBackInMinutes * time.Minute},
		ServiceIncidentEvents: {"/aianalyst/incidentevents", "edr.darktrace.respond.incident_event", time.Hour, time.Minute, false, DefaultIncidentLookBackInMinutes * time.Minute},
		ServiceSummary:        {"/summarystatistics", "edr.darktrace.respond.summary", 0, time.Minute, true, 0},
		ServiceStatus:         {"/status", "edr.darktrace.respond.status", 0, time.Minute, true, 0},
		ServiceModelBreaches:  {"/modelbreaches", "edr.darktrace.respond.model_breach", time.Hour, time.Minute, false, DefaultLookBackInMinutes * time.Minute},
	}
	for name, w := range wantServices {
		s := in.Services[name]
		if s.Endpoint != w.endpoint || s.Tag != w.tag || s.Window != w.window || s.Period != w.period ||
			s.Snapshot != w.snapshot || s.LookBack != w.lookBack || s.PersistenceVersion != 1 || !s.StartTime.IsZero() || !s.IsEnabled() {
			t.Errorf("%s resolved to %+v, want %+v", name, s, w)
		}
	}
	if !in.Services[ServiceStatus].FlattenStatus() || in.Services[ServiceStatus].Flatten == nil {
		t.Error("status.flatten should default to true")
	}
}

func TestExampleConfig(t *testing.T) {
	t.Parallel()
	const example = "../../deployments/config.example.yaml"
	env := map[string]string{"DT_PUBLIC_TOKEN": "118v8jecrbrtkucou5a34hsbzounohx6jce61dwy", "DT_PRIVATE_TOKEN": testPrivateToken}
	cfg, err := Load(example, LoadOptions{LookupEnv: envOf(env)})
	if err != nil {
		t.Fatalf("the example configuration does not validate: %v", err)
	}
	if got := cfg.EnabledOutputs(); !reflect.DeepEqual(got, []string{"devo_1"}) {
		t.Errorf("enabled outputs = %v", got)
	}
	if got := cfg.Outputs["http_1"].Config.URL; got != "https://http-eu.devo.io" {
		t.Errorf("http_1 url = %q", got)
	}
	// The HTTP ingestion token is a secret like the private token: only Reveal shows it.
	const httpToken = "t0k3nHTTPingestion0123456789abcd"
	env["DEVO_HTTP_TOKEN"] = httpToken
	withToken, err := Load(example, LoadOptions{LookupEnv: envOf(env)})
	if err != nil {
		t.Fatal(err)
	}
	delete(env, "DEVO_HTTP_TOKEN")
	if got := withToken.Outputs["http_1"].Config.Token.Reveal(); got != httpToken {
		t.Errorf("http_1 token = %q", got)
	}
	js, _ := json.Marshal(withToken)
	if printed := fmt.Sprintf("%v %+v %#v %s", withToken.Outputs, withToken.Outputs, withToken.Outputs, js); strings.Contains(printed, httpToken) {
		t.Error("printing the configuration reveals the http token")
	}
	mb := cfg.Inputs["darktrace"].Services[ServiceModelBreaches]
	if mb.Obfuscation == nil || mb.Obfuscation.Salt.Reveal() != "change-me" || len(mb.Obfuscation.Hash) != 2 {
		t.Errorf("modelbreaches obfuscation = %+v", mb.Obfuscation)
	}
	delete(env, "DT_PRIVATE_TOKEN")
	_, err = Load(example, LoadOptions{LookupEnv: envOf(env)})
	if es := AsErrors(err); len(es) != 1 || !strings.Contains(es[0].Error(), "DT_PRIVATE_TOKEN is not set") ||
		es[0].Path != "inputs.darktrace.credentials.private_token" {
		t.Errorf("without DT_PRIVATE_TOKEN: %v", err)
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"RELAY_PORT": "13001",
		"DIGITS":     "12345",
		"SUFFIX":     "abc",
		"OFF":        "false",
		"EMPTY":      "",
		"HOST":       "relay.example.com",
	}
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, cfg *Config)
	}{
		{
			name: "integer from the environment, unquoted in a flow mapping",
			doc:  strings.Replace(minimalWith(""), "console_1: {type: console}", "relay_1: {type: relay, config: {address: ${HOST}, port: ${RELAY_PORT}}}", 1),
			check: func(t *testing.T, cfg *Config) {
				if c := cfg.Outputs["relay_1"].Config; c.Port != 13001 || c.Address != "relay.example.com" {
					t.Errorf("relay = %s:%d", c.Address, c.Port)
				}
			},
		},
		{
			name: "default when unset, and when set but empty",
			doc:  strings.Replace(minimalWith(""), "console_1: {type: console}", `relay_1: {type: relay, config: {address: "${NOPE:-10.0.0.1}", port: ${EMPTY:-13002}}}`, 1),
			check: func(t *testing.T, cfg *Config) {
				if c := cfg.Outputs["relay_1"].Config; c.Port != 13002 || c.Address != "10.0.0.1" {
					t.Errorf("relay = %s:%d", c.Address, c.Port)
				}
			},
		},
		{
			name: "an all-digit token from the environment stays a string",
			doc:  strings.Replace(minimalWith(""), "public_token: pub-token", "public_token: ${DIGITS}", 1),
			check: func(t *testing.T, cfg *Config) {
				if got := cfg.Inputs["darktrace"].Credentials.PublicToken; got != "12345" {
					t.Errorf("public_token = %q", got)
				}
			},
		},
		{
			name: "expansion inside a longer value, and a literal $${",
			doc:  strings.Replace(minimalWith("    id: dt-${SUFFIX}\n"), "private_token: priv-token", "private_token: \"p$${SUFFIX}\"", 1),
			check: func(t *testing.T, cfg *Config) {
				in := cfg.Inputs["darktrace"]
				if in.ID != "dt-abc" || in.Credentials.PrivateToken.Reveal() != "p${SUFFIX}" {
					t.Errorf("id = %q, private token = %q", in.ID, in.Credentials.PrivateToken.Reveal())
				}
			},
		},
		{
			name: "a boolean from the environment",
			doc:  minimalWith("    services:\n      antigena: {enabled: ${OFF}}\n      status: {}\n"),
			check: func(t *testing.T, cfg *Config) {
				if cfg.Inputs["darktrace"].Services[ServiceAntigena].IsEnabled() {
					t.Error("antigena should be disabled")
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.check(t, mustParse(t, tc.doc, testOptions(env)))
		})
	}

	t.Run("a set-but-empty variable without default counts as missing", func(t *testing.T) {
		t.Parallel()
		doc := strings.Replace(minimalWith(""), "private_token: priv-token", "private_token: ${EMPTY}", 1)
		_, err := Parse([]byte(doc), testOptions(env))
		checkOneError(t, err, badCase{"inline", 26, "inputs.darktrace.credentials.private_token", "mandatory property is missing or empty"})
	})
}

func TestExpandEnv(t *testing.T) {
	t.Parallel()
	env := envOf(map[string]string{"A": "1", "B": "two", "E": ""})
	tests := []struct {
		in, want    string
		changed     bool
		errContains string
	}{
		{in: "plain", want: "plain"},
		{in: "cost $5", want: "cost $5"},
		{in: "${A}", want: "1", changed: true},
		{in: "x${A}y${B}z", want: "x1ytwoz", changed: true},
		{in: "${U:-dflt}", want: "dflt", changed: true},
		{in: "${E:-dflt}", want: "dflt", changed: true},
		{in: "${E}", want: "", changed: true},
		{in: "${U:-}", want: "", changed: true},
		{in: "$${A}", want: "${A}", changed: true},
		{in: "${U}", errContains: "environment variable U is not set"},
		{in: "${A", errContains: "unterminated"},
		{in: "${1A}", errContains: "invalid environment variable name"},
		{in: "${}", errContains: "invalid environment variable name"},
	}
	for _, tc := range tests {
		got, changed, err := expandEnv(tc.in, env)
		if tc.errContains != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errContains) {
				t.Errorf("expandEnv(%q) error = %v, want %q", tc.in, err, tc.errContains)
			}
			continue
		}
		if err != nil || got != tc.want || changed != tc.changed {
			t.Errorf("expandEnv(%q) = %q, %v, %v; want %q, %v", tc.in, got, changed, err, tc.want, tc.changed)
		}
	}
}

// TestMemoryLimit checks globals.memory_limit_in_mb: its default, 0 (no limit) and the bounds
// that are accepted.
func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		globals string
		want    int
	}{
		{"", DefaultMemoryLimitInMB},
		{"globals: {memory_limit_in_mb: 0}\n", 0},
		{"globals: {memory_limit_in_mb: 64}\n", 64},
		{"globals: {memory_limit_in_mb: 1024}\n", 1024},
	}
	for _, tc := range tests {
		cfg := mustParse(t, tc.globals+minimalWith(""), testOptions(nil))
		if got := cfg.Globals.MemoryLimitInMB; got != tc.want {
			t.Errorf("%q: MemoryLimitInMB = %d, want %d", tc.globals, got, tc.want)
		}
	}
}

func TestBaseURLAlias(t *testing.T) {
	t.Parallel()
	tests := []struct{ key, value, want string }{
		{"instance", "https://dt.example.com", "https://dt.example.com"},
		{"base_url", "https://dt.example.com", "https://dt.example.com"},
		{"base_url", "https://dt.example.com:8443/", "https://dt.example.com:8443"},
		{"instance", "dt.example.com", "https://dt.example.com"},
		{"instance", "http://10.1.2.3", "http://10.1.2.3"},
	}
	for _, tc := range tests {
		doc := strings.Replace(minimalWith(""), "instance: https://dt.example.com", tc.key+": "+tc.value, 1)
		cfg := mustParse(t, doc, testOptions(nil))
		if got := cfg.Inputs["darktrace"].Credentials.Instance; got != tc.want {
			t.Errorf("%s: %s → Instance %q, want %q", tc.key, tc.value, got, tc.want)
		}
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	t.Parallel()
	const salt = "pepper-0a1b2c3d4e5f"
	doc := minimalWith(`    services:
      modelbreaches:
        obfuscation: {salt: ${SALT}, hash: [device.ip]}
`)
	doc = strings.Replace(doc, "private_token: priv-token", "private_token: ${DT_PRIVATE_TOKEN}", 1)
	cfg := mustParse(t, doc, testOptions(map[string]string{"DT_PRIVATE_TOKEN": testPrivateToken, "SALT": salt}))
	in := cfg.Inputs["darktrace"]
	if in.Credentials.PrivateToken.Reveal() != testPrivateToken || in.Services[ServiceModelBreaches].Obfuscation.Salt.Reveal() != salt {
		t.Fatal("secrets not loaded")
	}

	// Pointers nested in another value are printed by fmt's "bad verb" path for %s, %d and
	// friends, which ignores String methods: the types holding secrets must survive it too.
	type holder struct {
		C *Config
		I *Input
		K *Credentials
		O *Obfuscation
		S *Secret
	}
	creds, token := in.Credentials, in.Credentials.PrivateToken
	nested := holder{cfg, &in, &creds, in.Services[ServiceModelBreaches].Obfuscation, &token}
	var outputs []string
	for _, v := range []any{cfg, *cfg, in, in.Credentials, in.Credentials.PrivateToken, in.Services[ServiceModelBreaches].Obfuscation, nested, &nested} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%10.3s"} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	var text, js bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&text, nil), slog.NewJSONHandler(&js, nil)} {
		l := slog.New(h)
		l.Info("config", "cfg", cfg, "input", in, "token", in.Credentials.PrivateToken, "creds", in.Credentials)
		l.Info("salt", slog.Any("obfuscation", in.Services[ServiceModelBreaches].Obfuscation))
	}
	outputs = append(outputs, text.String(), js.String())
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(b))

	// A configuration with a problem elsewhere: the error must not carry the secrets either.
	_, err = Parse([]byte(doc+"    bogus: 1\n"), testOptions(map[string]string{"DT_PRIVATE_TOKEN": testPrivateToken, "SALT": salt}))
	if err == nil {
		t.Fatal("bogus key accepted")
	}
	outputs = append(outputs, err.Error(), fmt.Sprintf("%+v", err))

	for i, out := range outputs {
		if strings.Contains(out, testPrivateToken) || strings.Contains(out, salt) {
			t.Errorf("output %d reveals a secret: %s", i, out)
		}
	}
	if !strings.Contains(text.String(), "[REDACTED]") || !strings.Contains(js.String(), "[REDACTED]") {
		t.Errorf("logs should show [REDACTED] in place of the secrets:\n%s\n%s", text.String(), js.String())
	}
	if got := fmt.Sprint(Secret("")); got != "" {
		t.Errorf("empty secret prints %q", got)
	}
}

func TestOutputRegions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		output               string
		wantAddress, wantURL string
	}{
		{"{type: devo_platform, config: {address: eu, chain: c, cert: d, key: k}}", "collector-eu.devo.io", ""},
		{"{type: devo_platform, config: {address: US, chain: c, cert: d, key: k}}", "collector-us.devo.io", ""},
		{"{type: devo_platform, config: {address: ca, chain: c, cert: d, key: k}}", "collector-ca.devo.io", ""},
		{"{type: devo_platform, config: {address: ap, chain: c, cert: d, key: k}}", "collector-ap.devo.io", ""},
		{"{type: devo_platform, config: {address: 10.0.0.7, chain: c, cert: d, key: k}}", "10.0.0.7", ""},
		{"{type: http, config: {address: eu, domain: d, token: t}}", "eu", "https://http-eu.devo.io"},
		{"{type: http, config: {address: us, domain: d, token: t}}", "us", "https://http-us.devo.io"},
		{"{type: http, config: {address: ca, domain: d, token: t}}", "ca", "https://http-ca.devo.io"},
		{"{type: http, config: {address: ap, domain: d, token: t}}", "ap", "https://collector-ap.devo.io:8443"},
		{"{type: http, config: {address: devo.internal, domain: d, token: t}}", "devo.internal", "https://devo.internal"},
		{"{type: http, config: {url: \"http://127.0.0.1:8080/\", domain: d, token: t}}", "", "http://127.0.0.1:8080"},
		{"{type: http, config: {address: \"http://127.0.0.1:8080\", domain: d, token: t}}", "http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"{type: http, config: {address: devo.internal, port: 8443, domain: d, token: t}}", "devo.internal", "https://devo.internal:8443"},
	}
	for _, tc := range tests {
		doc := strings.Replace(minimalWith(""), "console_1: {type: console}", "out_1: "+tc.output, 1)
		cfg := mustParse(t, doc, testOptions(nil))
		c := cfg.Outputs["out_1"].Config
		if c.Address != tc.wantAddress || c.URL != tc.wantURL {
			t.Errorf("%s → address %q url %q, want %q %q", tc.output, c.Address, c.URL, tc.wantAddress, tc.wantURL)
		}
	}
}

func TestServicesSelection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		extra  string
		enable []string
	}{
		{"no services key: every service", "", Services},
		{"null services: every service", "    services:\n", Services},
		{"empty services mapping: every service", "    services: {}\n", Services},
		{"listing some services runs only those", "    services:\n      modelbreaches: {request_period_in_seconds: 30}\n      status: {flatten: true}\n",
			[]string{ServiceStatus, ServiceModelBreaches}},
		{"an empty mapping is the defaults", "    services:\n      antigena: {}\n", []string{ServiceAntigena}},
		{"enabled: false disables a listed one", "    services:\n      status: {enabled: false}\n      antigena: {}\n",
			[]string{ServiceAntigena}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := mustParse(t, minimalWith(tc.extra), testOptions(nil))
			in := cfg.Inputs["darktrace"]
			if got := in.EnabledServices(); !reflect.DeepEqual(got, tc.enable) {
				t.Errorf("enabled services = %v, want %v", got, tc.enable)
			}
			if len(in.Services) != len(Services) {
				t.Errorf("%d services resolved, want all %d", len(in.Services), len(Services))
			}
		})
	}
}

func TestDisabledInputAndOutput(t *testing.T) {
	t.Parallel()
	doc := `outputs:
  console_1: {type: console}
  relay_1: {type: relay, enabled: false, config: {address: 127.0.0.1}}
inputs:
  darktrace:
    credentials: {public_token: a, private_token: b, instance: https://dt1.example.com}
  spare:
    enabled: false
    credentials: {public_token: a, private_token: b, instance: https://dt2.example.com}
`
	cfg := mustParse(t, doc, testOptions(nil))
	if got := cfg.EnabledInputs(); !reflect.DeepEqual(got, []string{"darktrace"}) {
		t.Errorf("enabled inputs = %v", got)
	}
	if got := cfg.EnabledOutputs(); !reflect.DeepEqual(got, []string{"console_1"}) {
		t.Errorf("enabled outputs = %v", got)
	}
	if cfg.Outputs["relay_1"].Config.Port != DefaultRelayPort {
		t.Errorf("relay port default = %d", cfg.Outputs["relay_1"].Config.Port)
	}
}

func TestStrftimeDefinitions(t *testing.T) {
	t.Parallel()
	opts := testOptions(nil)
	opts.DefinitionsPath = "testdata/definitions/strftime.good.yaml"
	cfg := mustParse(t, minimalWith("    services:\n      antigena: {start_time_in_utc_format: \"2024-03-10T08:30:00Z\"}\n"), opts)
	in := cfg.Inputs["darktrace"]
	if got, want := in.Services[ServiceAntigena].StartTime, time.Date(2024, 3, 10, 8, 30, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("start = %v, want %v", got, want)
	}
	if got := in.Credentials.Instance; got != "https://dt.example.com/api" {
		t.Errorf("instance through base_url template = %q", got)
	}
	_, err := Parse([]byte(minimalWith("    services:\n      antigena: {start_time_in_utc_format: \"2024-03-10\"}\n")), opts)
	checkOneError(t, err, badCase{"inline", 34, "inputs.darktrace.services.antigena.start_time_in_utc_format", "does not match the format %Y-%m-%dT%H:%M:%SZ"})
}

func TestStartTimeUnquoted(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, minimalWith("    services:\n      modelbreaches: {start_time_in_utc_format: 2024-05-01T00:00:00Z}\n"), testOptions(nil))
	if got := cfg.Inputs["darktrace"].Services[ServiceModelBreaches].StartTime; !got.Equal(time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("start = %v", got)
	}
}

func TestPathResolution(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(minimalWith("    tls: {ca_file: /abs/ca.pem, cert_file: rel/c.crt, key_file: ../k.key}\n"),
		"console_1: {type: console}", "file_1: {type: file, config: {path: out/x.log}}", 1)
	tests := []struct {
		baseDir                       string
		wantCA, wantCert, wantKey, fp string
	}{
		{"/srv/dt", "/abs/ca.pem", "/srv/dt/rel/c.crt", "/srv/k.key", "/srv/dt/out/x.log"},
		{"", "/abs/ca.pem", "rel/c.crt", "../k.key", "out/x.log"},
	}
	for _, tc := range tests {
		opts := testOptions(nil)
		opts.BaseDir = tc.baseDir
		cfg := mustParse(t, doc, opts)
		tls := cfg.Inputs["darktrace"].TLS
		got := []string{tls.CAFile, tls.CertFile, tls.KeyFile, cfg.Outputs["file_1"].Config.Path}
		if want := []string{tc.wantCA, tc.wantCert, tc.wantKey, tc.fp}; !reflect.DeepEqual(got, want) {
			t.Errorf("base %q: paths %v, want %v", tc.baseDir, got, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), LoadOptions{})
	if !errors.Is(err, fs.ErrNotExist) || AsErrors(err) != nil {
		t.Errorf("Load(missing) = %v; want a wrapped fs.ErrNotExist, not config Errors", err)
	}
	_, err = Parse([]byte(minimalWith("")), LoadOptions{DefinitionsPath: filepath.Join(t.TempDir(), "nope.yaml")})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing definitions file: %v", err)
	}
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  *Error
		want string
	}{
		{seedErr(24, "inputs.darktrace.credentials.public_token", msgMissing("inputs.darktrace.credentials.public_token")),
			"InitVariablesError(24): inputs.darktrace.credentials.public_token mandatory property is missing or empty"},
		{cfgErr("inputs.darktrace.services.modelbreaches.foo", "unknown key"), "ConfigError: inputs.darktrace.services.modelbreaches.foo: unknown key"},
		{cfgErr("", "parsing YAML: bad"), "ConfigError: parsing YAML: bad"},
	}
	var es Errors
	var lines []string
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		es = append(es, tc.err)
		lines = append(lines, tc.want)
	}
	if got := es.Error(); got != strings.Join(lines, "\n") {
		t.Errorf("Errors.Error() = %q", got)
	}
	wrapped := fmt.Errorf("loading: %w", es)
	var e *Error
	if !errors.As(wrapped, &e) || e.ID != 24 {
		t.Errorf("errors.As through Errors: %v", e)
	}
	if got := AsErrors(wrapped); len(got) != 3 {
		t.Errorf("AsErrors = %v", got)
	}
}

func TestCheckTag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tag string
		ok  bool
	}{
		{"edr.darktrace.respond.model_breach", true},
		{"my.app", true},
		{"a.b.c.d.e.f", true},
		{"a.b.c.d.e.f.g", false},
		{"single", false},
		{"a..b", false},
		{".a.b", false},
		{"a.b.", false},
		{"a b.c", false},
		{"a.b\tc", false},
		{"a.b:c", false},
		{"my.app." + strings.Repeat("x", 1017), true},
		{"my.app." + strings.Repeat("x", 1018), false},
	}
	for _, tc := range tests {
		if err := checkTag(tc.tag); (err == nil) != tc.ok {
			t.Errorf("checkTag(%.40q) = %v, want ok=%v", tc.tag, err, tc.ok)
		}
	}
}

func TestCheckFieldPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		ok   bool
	}{
		{"device.ip", true},
		{"breachDevices[].ip", true},
		{"a[][].b", true},
		{"@fields.x-y", true},
		{"", false},
		{"a..b", false},
		{".a", false},
		{"a.", false},
		{"[].a", false},
		{"a[0].b", false},
		{"a[.b", false},
		{"a b", false},
	}
	for _, tc := range tests {
		if err := checkFieldPath(tc.path); (err == nil) != tc.ok {
			t.Errorf("checkFieldPath(%q) = %v, want ok=%v", tc.path, err, tc.ok)
		}
	}
}

func TestGoLayout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format, want string
		ok           bool
	}{
		{"2006-01-02T15:04:05Z", "2006-01-02T15:04:05Z", true},
		{"%Y-%m-%dT%H:%M:%SZ", "2006-01-02T15:04:05Z", true},
		{"%Y-%m-%d %H:%M:%S.%f", "2006-01-02 15:04:05.000000", true},
		{"%Y-%m-%dT%H:%M:%S%z", "2006-01-02T15:04:05-0700", true},
		{"%Y-%m-%d", "", false},
		{"%Y-%m-%dT%H:%M:%S%", "", false},
		{"%Y-%m-%dT%H:%M:%S %p", "", false},
		{"yesterday", "", false},
	}
	for _, tc := range tests {
		got, err := goLayout(tc.format)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("goLayout(%q) = %q, %v; want %q ok=%v", tc.format, got, err, tc.want, tc.ok)
		}
	}
}

func TestEmbeddedDefinitions(t *testing.T) {
	t.Parallel()
	d, err := LoadDefinitions("")
	if err != nil {
		t.Fatalf("embedded definitions: %v", err)
	}
	if d.RequestsPerSecond != 10 || d.RequestPeriodInSeconds != 60 || d.Layout != "2006-01-02T15:04:05Z" {
		t.Errorf("module globals/properties = %+v", d)
	}
	for _, name := range Services {
		if _, ok := d.Services[name]; !ok {
			t.Errorf("no definition for %s", name)
		}
	}
	// The exported copy is the file LoadDefinitions("") reads, and modifying it changes nothing.
	raw := EmbeddedDefinitions()
	d2, err := ParseDefinitions(raw)
	if err != nil || !reflect.DeepEqual(d, d2) {
		t.Errorf("EmbeddedDefinitions round trip: %v", err)
	}
	raw[0] = 'X'
	if again, _ := LoadDefinitions(""); !reflect.DeepEqual(d, again) {
		t.Error("EmbeddedDefinitions returned the package's own slice")
	}
}

// TestNATSAndDevoSecretsNeverPrinted proves that the NATS password and the Devo HTTP token are
// secrets like the Darktrace private token: loaded intact, and never printed by fmt (every verb,
// nested pointers included), slog, JSON or a configuration error.
func TestNATSAndDevoSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	const natsPassword, devoToken = "nats-pw-9f8e7d6c5b4a", "devo-token-1a2b3c4d5e6f"
	doc := strings.Replace(minimalWith(""), "console_1: {type: console}",
		"devo_1: {type: http, config: {address: eu, domain: d, token: ${DEVO_TOKEN}}}", 1) +
		"nats: {url: \"nats://n1.example.com:4222\", user: dtfleet, password: ${NATS_PASSWORD}}\n"
	env := map[string]string{"NATS_PASSWORD": natsPassword, "DEVO_TOKEN": devoToken}
	cfg := mustParse(t, doc, testOptions(env))
	out := cfg.Outputs["devo_1"]
	if cfg.NATS.Password.Reveal() != natsPassword || out.Config.Token.Reveal() != devoToken {
		t.Fatal("secrets not loaded")
	}
	type holder struct {
		C *Config
		N *NATS
		O *Output
		K *OutputConfig
	}
	nested := holder{cfg, &cfg.NATS, &out, &out.Config}
	var outputs []string
	for _, v := range []any{cfg, *cfg, cfg.NATS, &cfg.NATS, out, &out, out.Config, &out.Config, nested, &nested} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%10.3s"} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	var text, js bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&text, nil), slog.NewJSONHandler(&js, nil)} {
		slog.New(h).Info("config", "cfg", cfg, "nats", cfg.NATS, "output", out, "password", cfg.NATS.Password)
	}
	outputs = append(outputs, text.String(), js.String())
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(b))
	_, err = Parse([]byte(doc+"  bogus: 1\n"), testOptions(env))
	if err == nil {
		t.Fatal("bogus key accepted")
	}
	outputs = append(outputs, err.Error(), fmt.Sprintf("%+v", err))
	// A password in the URL's user info is as secret as nats.password.
	inURL := cfg.NATS
	inURL.URL = "nats://dtfleet:" + natsPassword + "@n1.example.com:4222, nats://" + natsPassword + "@n2.example.com:4222"
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		outputs = append(outputs, fmt.Sprintf(verb, inURL), fmt.Sprintf(verb, &inURL))
	}
	for i, o := range outputs {
		if strings.Contains(o, natsPassword) || strings.Contains(o, devoToken) {
			t.Errorf("output %d reveals a secret: %s", i, o)
		}
	}
}
