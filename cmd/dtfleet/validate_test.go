package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateValidate = flag.Bool("update-validate", false, "rewrite testdata/validate/*.golden")

// runValidate runs `dtfleet <args...>` in process and returns stdout, stderr and the exit status
// run() would return.
func runValidate(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	switch {
	case err == nil:
		code = 0
	default:
		code = 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

// writeConfig writes a configuration file into a fresh directory and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const validateGood = `globals: {id: fleet-1}
outputs:
  devo_1: {type: devo_platform, config: {address: us, chain: certs/chain.crt, cert: certs/d.crt, key: certs/d.key}}
  relay_1: {type: relay, enabled: false, config: {address: 10.0.0.2}}
  http_1: {type: http, config: {address: ap, domain: acme, token: tok}}
inputs:
  darktrace:
    credentials: {public_token: pub, private_token: priv, base_url: dt.example.com}
    services:
      antigena: {enabled: false}
      modelbreaches: {start_time_in_utc_format: "2024-05-01T00:00:00Z", look_back_in_minutes: 90, override_devo_tag: my.app.dt.breach}
      status: {flatten: false, request_period_in_seconds: 300}
`

func TestValidateOK(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, validateGood)
	stdout, stderr, code := runValidate(t, "validate", "-c", path)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	got := strings.ReplaceAll(stdout, filepath.Dir(path), "$DIR")
	golden := filepath.Join("testdata", "validate", "ok.golden")
	if *updateValidate {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("reading golden file (run with -update-validate): %v", err)
	}
	if got != string(want) {
		t.Errorf("summary differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
	}
	if strings.Contains(stdout, "priv") {
		t.Error("the summary shows the private token")
	}
}

func TestValidateErrors(t *testing.T) {
	t.Parallel()
	defsDir := filepath.Join("..", "..", "internal", "config", "testdata", "definitions")
	tests := []struct {
		name      string
		config    string
		extraArgs []string
		wantLines []string
	}{
		{
			name: "every problem, one per line",
			config: `globals: {idd: x}
outputs:
  relay_1: {type: relay, config: {port: 0}}
inputs:
  darktrace:
    credentials: {public_token: 5}
    services:
      status: 7
`,
			wantLines: []string{
				`ConfigError: globals.idd: unknown key (did you mean "id"?); valid keys here: debug, id, memory_limit_in_mb, name`,
				"ConfigError: outputs.relay_1.config.port: must be a TCP port from 1 to 65535, found 0",
				"ConfigError: outputs.relay_1.config.address: mandatory property is missing or empty; expected the relay's host name or IP address",
				"InitVariablesError(25): inputs.darktrace.credentials.public_token property must be a string (found an integer)",
				"InitVariablesError(26): inputs.darktrace.credentials.private_token mandatory property is missing or empty",
				"InitVariablesError(28): inputs.darktrace.credentials.instance mandatory property is missing or empty",
				"InitVariablesError(31): inputs.darktrace.services.status property must be a dictionary (found an integer)",
			},
		},
		{
			name:      "no inputs",
			config:    "outputs:\n  console_1: {type: console}\n",
			wantLines: []string{"InitVariablesError(20): inputs.darktrace mandatory property is missing or empty"},
		},
		{
			name:      "bad definitions file",
			config:    validateGood,
			extraArgs: []string{"--definitions", filepath.Join(defsDir, "17_persistence_version_missing.bad.yaml")},
			wantLines: []string{`InitVariablesError(17): "module_properties.services.antigena.persistence_version" mandatory property is missing or empty`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, tc.config)
			stdout, stderr, code := runValidate(t, append([]string{"validate", "-c", path}, tc.extraArgs...)...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(tc.wantLines, "\n") {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, strings.Join(tc.wantLines, "\n"))
			}
			if !strings.Contains(stderr, "is invalid") {
				t.Errorf("stderr %q should say the file is invalid", stderr)
			}
		})
	}
}

func TestValidateUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		args        []string
		errContains string
	}{
		{"no -c", []string{"validate"}, `required flag(s) "config" not set`},
		{"missing file", []string{"validate", "-c", filepath.Join(t.TempDir(), "nope.yaml")}, "no such file"},
	}
	for _, tc := range tests {
		stdout, stderr, code := runValidate(t, tc.args...)
		if code == 0 || stdout != "" || !strings.Contains(stderr, tc.errContains) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want a failure mentioning %q", tc.name, code, stdout, stderr, tc.errContains)
		}
	}
}

func TestLoadConfigWrapsErrors(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "outputs:\n  console_1: {type: console}\n")
	cmd := newValidateCmd(&globalFlags{})
	_, err := loadConfig(cmd, path, "")
	if err == nil || !strings.HasPrefix(err.Error(), "invalid configuration "+path+" (1 problem):\nInitVariablesError(20)") {
		t.Errorf("loadConfig error = %v", err)
	}
	if _, err := loadConfig(cmd, "", ""); err == nil || !strings.Contains(err.Error(), "pass -c FILE") {
		t.Errorf("loadConfig without a path: %v", err)
	}
	good := writeConfig(t, validateGood)
	cfg, err := loadConfig(cmd, good, "")
	if err != nil || cfg.Source != good {
		t.Errorf("loadConfig(good) = %v, %v", cfg, err)
	}
}

// TestDefinitionsCommand checks that `dtfleet definitions` prints definitions that validate as
// a --definitions file and give the same result as the embedded ones.
func TestDefinitionsCommand(t *testing.T) {
	t.Parallel()
	stdout, stderr, code := runValidate(t, "definitions")
	if code != 0 || !strings.Contains(stdout, "module_properties:") {
		t.Fatalf("exit %d, stderr %q, stdout %.200q", code, stderr, stdout)
	}
	defs := filepath.Join(t.TempDir(), "definitions.yaml")
	if err := os.WriteFile(defs, []byte(stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, validateGood)
	embedded, _, code1 := runValidate(t, "validate", "-c", path)
	printed, stderr, code2 := runValidate(t, "validate", "-c", path, "--definitions", defs)
	if code1 != 0 || code2 != 0 || embedded != printed {
		t.Fatalf("validate with the printed definitions: exit %d/%d %s\n%s\n%s", code1, code2, stderr, embedded, printed)
	}
}
