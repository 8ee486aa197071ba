package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixedNow is the clock of every test that parses start times.
var fixedNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// envOf returns a LookupEnv backed by m only (never the process environment).
func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// testOptions are hermetic load options: a fixed clock, base directory and environment.
func testOptions(env map[string]string) LoadOptions {
	return LoadOptions{LookupEnv: envOf(env), Now: func() time.Time { return fixedNow }, BaseDir: "/etc/dtfleet"}
}

type badCase struct {
	file        string
	wantID      int
	wantPath    string
	errContains string
}

// checkOneError asserts that err is an Errors holding exactly the problem tc describes.
func checkOneError(t *testing.T, err error, tc badCase) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: loaded without error", tc.file)
	}
	es := AsErrors(err)
	if len(es) != 1 {
		t.Fatalf("%s: want exactly 1 problem, got %d:\n%v", tc.file, len(es), err)
	}
	e := es[0]
	if e.ID != tc.wantID {
		t.Errorf("%s: ID = %d, want %d (%v)", tc.file, e.ID, tc.wantID, e)
	}
	if e.Path != tc.wantPath {
		t.Errorf("%s: Path = %q, want %q (%v)", tc.file, e.Path, tc.wantPath, e)
	}
	if !strings.Contains(e.Error(), tc.errContains) {
		t.Errorf("%s: error %q does not contain %q", tc.file, e.Error(), tc.errContains)
	}
	wantKind := KindConfig
	if tc.wantID > 0 {
		wantKind = KindInitVariables
	}
	if e.Kind != wantKind || !strings.HasPrefix(e.Error(), wantKind) {
		t.Errorf("%s: kind %q / %q, want %s", tc.file, e.Kind, e.Error(), wantKind)
	}
}

func TestBadConfigs(t *testing.T) {
	t.Parallel()
	const dt = "inputs.darktrace"
	tests := []badCase{
		{"20_inputs_missing.bad.yaml", 20, "inputs.darktrace", "InitVariablesError(20): inputs.darktrace mandatory property is missing or empty"},
		{"20_input_null.bad.yaml", 20, "inputs.darktrace", "inputs.darktrace mandatory property is missing or empty"},
		{"21_input_not_dict.bad.yaml", 21, dt, "InitVariablesError(21): inputs.darktrace property must be a dictionary"},
		{"22_credentials_missing.bad.yaml", 22, dt + ".credentials", "InitVariablesError(22): inputs.darktrace.credentials mandatory property is missing or empty"},
		{"23_credentials_not_dict.bad.yaml", 23, dt + ".credentials", "InitVariablesError(23): inputs.darktrace.credentials property must be a dictionary"},
		{"24_public_token_missing.bad.yaml", 24, "inputs.dt_paris.credentials.public_token", "InitVariablesError(24): inputs.dt_paris.credentials.public_token mandatory property is missing or empty"},
		{"24_public_token_empty.bad.yaml", 24, dt + ".credentials.public_token", "InitVariablesError(24): inputs.darktrace.credentials.public_token mandatory property is missing or empty"},
		{"25_public_token_not_string.bad.yaml", 25, dt + ".credentials.public_token", "InitVariablesError(25): inputs.darktrace.credentials.public_token property must be a string"},
		{"26_private_token_missing.bad.yaml", 26, dt + ".credentials.private_token", "InitVariablesError(26): inputs.darktrace.credentials.private_token mandatory property is missing or empty"},
		{"27_private_token_not_string.bad.yaml", 27, dt + ".credentials.private_token", "InitVariablesError(27): inputs.darktrace.credentials.private_token property must be a string"},
		{"28_instance_missing.bad.yaml", 28, dt + ".credentials.instance", "InitVariablesError(28): inputs.darktrace.credentials.instance mandatory property is missing or empty"},
		{"29_instance_not_string.bad.yaml", 29, dt + ".credentials.instance", "InitVariablesError(29): inputs.darktrace.credentials.instance property must be a string"},
		{"30_service_null.bad.yaml", 30, dt + ".services.modelbreaches", "InitVariablesError(30): inputs.darktrace.services.modelbreaches mandatory property is missing or empty"},
		{"31_service_not_dict.bad.yaml", 31, dt + ".services.status", "InitVariablesError(31): inputs.darktrace.services.status property must be a dictionary"},
		{"32_override_devo_tag_not_string.bad.yaml", 32, dt + ".services.antigena.override_devo_tag", "InitVariablesError(32): inputs.darktrace.services.antigena.override_devo_tag property must be a string"},
		{"33_start_time_not_string.bad.yaml", 33, dt + ".services.modelbreaches.start_time_in_utc_format", "InitVariablesError(33): inputs.darktrace.services.modelbreaches.start_time_in_utc_format property must be a string"},
		{"34_start_time_bad_format.bad.yaml", 34, dt + ".services.modelbreaches.start_time_in_utc_format", "InitVariablesError(34): inputs.darktrace.services.modelbreaches.start_time_in_utc_format does not match the format 2006-01-02T15:04:05Z"},
		{"35_override_window_not_int.bad.yaml", 35, dt + ".services.aianalyst_incidentevents.override_time_window_interval_in_minutes", "InitVariablesError(35): inputs.darktrace.services.aianalyst_incidentevents.override_time_window_interval_in_minutes property must be an int"},

		{"unknown_key.bad.yaml", 0, dt + ".services.modelbreaches.foo", "ConfigError: inputs.darktrace.services.modelbreaches.foo: unknown key"},
		{"unknown_top_key.bad.yaml", 0, "global", `did you mean "globals"?`},
		{"unknown_service.bad.yaml", 0, dt + ".services.breaches", "unknown service"},
		{"env_unset.bad.yaml", 0, dt + ".credentials.private_token", "environment variable DTFLEET_TEST_UNSET_TOKEN is not set"},
		{"env_unterminated.bad.yaml", 0, dt + ".credentials.private_token", `unterminated "${"`},
		{"base_url_and_instance.bad.yaml", 0, dt + ".credentials.base_url", "alias of instance"},
		{"instance_bad_url.bad.yaml", 0, dt + ".credentials.instance", "base URL"},
		{"private_token_whitespace.bad.yaml", 0, dt + ".credentials.private_token", "spaces or control characters"},
		{"input_name_bad.bad.yaml", 0, "inputs.dark.trace", "only letters, digits"},
		{"enabled_not_bool.bad.yaml", 0, dt + ".enabled", "must be true or false"},
		{"requests_per_second_zero.bad.yaml", 0, dt + ".requests_per_second", "above 0"},
		{"services_not_mapping.bad.yaml", 0, dt + ".services", "must be a mapping of service names"},
		{"all_inputs_disabled.bad.yaml", 0, "inputs", "every input is disabled"},
		{"all_services_disabled.bad.yaml", 0, dt + ".services", "every service is disabled"},
		{"tag_levels.bad.yaml", 0, dt + ".services.modelbreaches.override_devo_tag", "expected 2 to 6 levels"},
		{"tag_spaces.bad.yaml", 0, dt + ".services.modelbreaches.override_devo_tag", "must not contain spaces"},
		{"tag_seven_levels.bad.yaml", 0, dt + ".services.antigena.override_devo_tag", "has 7 dot-separated level(s)"},
		{"tag_empty_level.bad.yaml", 0, dt + ".services.antigena.override_devo_tag", "empty level"},
		{"tag_unicode_space.bad.yaml", 0, dt + ".services.modelbreaches.override_devo_tag", "must not contain spaces"},
		{"look_back_wrong_service.bad.yaml", 0, dt + ".services.status.look_back_in_minutes", "applies only to the windowed services"},
		{"look_back_negative.bad.yaml", 0, dt + ".services.modelbreaches.look_back_in_minutes", "from 0 to"},
		{"flatten_wrong_service.bad.yaml", 0, dt + ".services.summarystatistics.flatten", "applies only to the status service"},
		{"start_time_future.bad.yaml", 0, dt + ".services.modelbreaches.start_time_in_utc_format", "is in the future"},
		{"window_zero.bad.yaml", 0, dt + ".services.modelbreaches.override_time_window_interval_in_minutes", "from 1 to"},
		{"request_period_zero.bad.yaml", 0, dt + ".services.antigena.request_period_in_seconds", "from 1 to 86400, found 0"},
		{"obfuscation_no_salt.bad.yaml", 0, dt + ".services.modelbreaches.obfuscation.salt", "hash paths are given"},
		{"obfuscation_bad_path.bad.yaml", 0, dt + ".services.modelbreaches.obfuscation.mask[0]", "is not a field path"},
		{"obfuscation_hash_and_mask.bad.yaml", 0, dt + ".services.modelbreaches.obfuscation", "both hash and mask"},
		{"outputs_missing.bad.yaml", 0, "outputs", "mandatory property is missing or empty"},
		{"all_outputs_disabled.bad.yaml", 0, "outputs", "every output is disabled"},
		{"output_type_unknown.bad.yaml", 0, "outputs.relay_1.type", `unknown output type "syslog"`},
		{"output_type_missing.bad.yaml", 0, "outputs.relay_1.type", "mandatory property is missing or empty"},
		{"output_foreign_key.bad.yaml", 0, "outputs.relay_1.config.chain", "is a setting of devo_platform outputs, not of relay outputs"},
		{"output_name_bad.bad.yaml", 0, "outputs.my output", "only letters, digits"},
		{"devo_platform_missing_cert.bad.yaml", 0, "outputs.devo_1.config.cert", "mandatory property is missing or empty"},
		{"devo_platform_address_with_port.bad.yaml", 0, "outputs.devo_1.config.address", "includes a port"},
		{"devo_platform_type_tls.bad.yaml", 0, "outputs.devo_1.config.type", "always use TLS"},
		{"port_out_of_range.bad.yaml", 0, "outputs.relay_1.config.port", "from 1 to 65535, found 70000"},
		{"port_not_int.bad.yaml", 0, "outputs.relay_1.config.port", "must be a TCP port, found a string"},
		{"http_missing_token.bad.yaml", 0, "outputs.http_1.config.token", "mandatory property is missing or empty"},
		{"http_url_and_address.bad.yaml", 0, "outputs.http_1.config", "not both"},
		{"http_no_endpoint.bad.yaml", 0, "outputs.http_1.config.url", "set url"},
		{"http_bad_url.bad.yaml", 0, "outputs.http_1.config.url", "http(s) URL"},
		{"file_missing_path.bad.yaml", 0, "outputs.file_1.config.path", "mandatory property is missing or empty"},
		{"console_config_key.bad.yaml", 0, "outputs.console_1.config.address", "not of console outputs"},
		{"nats_replicas_range.bad.yaml", 0, "nats.replicas", "from 1 to 5, found 6"},
		{"nats_replicas_embedded.bad.yaml", 0, "nats.replicas", "embedded server"},
		{"nats_url_bad.bad.yaml", 0, "nats.url", `entry 2 has scheme "http"`},
		{"nats_url_empty_entry.bad.yaml", 0, "nats.url", "entry 2 is empty"},
		{"nats_creds_and_user.bad.yaml", 0, "nats", "mutually exclusive"},
		{"nats_user_without_password.bad.yaml", 0, "nats", "set both or neither"},
		{"nats_listen_bad.bad.yaml", 0, "nats.listen", "not host:port"},
		{"tls_cert_without_key.bad.yaml", 0, dt + ".tls", "cert_file and key_file go together"},
		{"workers_concurrency_zero.bad.yaml", 0, "workers.concurrency", "from 1 to 4096, found 0"},
		{"workers_min_concurrency_zero.bad.yaml", 0, "workers.min_concurrency", "from 1 to 4096, found 0"},
		{"workers_min_concurrency_above_max.bad.yaml", 0, "workers.min_concurrency", "more than workers.concurrency (8)"},
		{"workers_max_event_size_zero.bad.yaml", 0, "workers.max_event_size_in_mb", "from 1 to 1024, found 0"},
		{"metrics_listen_bad.bad.yaml", 0, "metrics.listen", "not host:port"},
		{"coordinator_negative_lag.bad.yaml", 0, "coordinator.safety_lag_in_seconds", "from 0 to 86400, found -1"},
		{"coordinator_backlog_zero.bad.yaml", 0, "coordinator.max_backlog_in_mb", "from 1 to 1000000, found 0"},
		{"section_not_mapping.bad.yaml", 0, "shipper", "must be a mapping of settings, found a string"},
		{"duplicate_key.bad.yaml", 0, "outputs.console_1", "duplicate key"},
		{"yaml_syntax.bad.yaml", 0, "", "parsing YAML"},
		{"not_mapping.bad.yaml", 0, "", "must be a YAML mapping"},
		{"two_documents.bad.yaml", 0, "", "second YAML document"},
		{"globals_id_bad.bad.yaml", 0, "globals.id", "only letters, digits"},
		{"globals_memory_limit_too_small.bad.yaml", 0, "globals.memory_limit_in_mb", "must be 0 (no limit) or a number of megabytes from 64 to 1000000, found 16"},
		{"globals_memory_limit_negative.bad.yaml", 0, "globals.memory_limit_in_mb", "from 0 to 1000000, found -1"},
	}
	covered := make(map[string]bool, len(tests))
	for _, tc := range tests {
		covered[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(data, testOptions(nil))
			checkOneError(t, err, tc)
		})
	}
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s has no row in the table", f)
		}
	}
	for id := 20; id <= 35; id++ {
		found := false
		for _, tc := range tests {
			found = found || tc.wantID == id
		}
		if !found {
			t.Errorf("no fixture for InitVariablesError(%d)", id)
		}
	}
}

func TestBadDefinitions(t *testing.T) {
	t.Parallel()
	const mp = "module_properties"
	const anti = mp + ".services.antigena"
	tests := []badCase{
		{"01_module_globals_missing.bad.yaml", 1, "module_globals", `InitVariablesError(1): "module_globals" mandatory property is missing or empty`},
		{"02_module_globals_not_dict.bad.yaml", 2, "module_globals", `InitVariablesError(2): "module_globals" mandatory property is missing or empty (it must be a dictionary`},
		{"03_base_url_missing.bad.yaml", 3, mp + ".base_url", `InitVariablesError(3): "base_url" mandatory property is missing or empty`},
		{"04_base_url_not_string.bad.yaml", 4, mp + ".base_url", `InitVariablesError(4): "base_url" property must be a string`},
		{"05_date_format_missing.bad.yaml", 5, mp + ".date_format", `InitVariablesError(5): "date_format" mandatory property is missing or empty`},
		{"06_date_format_not_string.bad.yaml", 6, mp + ".date_format", `InitVariablesError(6): "date_format" mandatory property is missing or empty: it must be a string`},
		{"06_date_format_unusable.bad.yaml", 6, mp + ".date_format", "must give year, month, day, hour, minute and second"},
		{"07_module_properties_missing.bad.yaml", 7, mp, `InitVariablesError(7): "module_properties" mandatory property is missing or empty`},
		{"07_service_missing.bad.yaml", 7, mp + ".services.status", `InitVariablesError(7): "module_properties.services.status" mandatory property is missing or empty`},
		{"08_module_properties_not_dict.bad.yaml", 8, mp, `InitVariablesError(8): "module_properties" property must be a dictionary`},
		{"08_services_not_dict.bad.yaml", 8, mp + ".services", `InitVariablesError(8): "module_properties.services" property must be a dictionary`},
		{"09_endpoint_missing.bad.yaml", 9, anti + ".endpoint", `InitVariablesError(9): "module_properties.services.antigena.endpoint" mandatory property is missing or empty`},
		{"10_endpoint_not_string.bad.yaml", 10, anti + ".endpoint", `InitVariablesError(10): "module_properties.services.antigena.endpoint" property must be a string`},
		{"11_window_missing.bad.yaml", 11, mp + ".services.modelbreaches.time_window_interval_in_minutes", `InitVariablesError(11): "module_properties.services.modelbreaches.time_window_interval_in_minutes" mandatory property is missing or empty`},
		{"12_window_not_int.bad.yaml", 12, anti + ".time_window_interval_in_minutes", `InitVariablesError(12): "module_properties.services.antigena.time_window_interval_in_minutes" property must be an integer`},
		{"13_window_negative.bad.yaml", 13, anti + ".time_window_interval_in_minutes", `InitVariablesError(13): "module_properties.services.antigena.time_window_interval_in_minutes" property can not be a negative value`},
		{"14_devo_tag_missing.bad.yaml", 14, anti + ".devo_tag", `InitVariablesError(14): "module_properties.services.antigena.devo_tag" mandatory property is missing or empty`},
		{"15_devo_tag_not_string.bad.yaml", 15, anti + ".devo_tag", `InitVariablesError(15): "module_properties.services.antigena.devo_tag" property must be a string`},
		{"16_unique_id_not_string.bad.yaml", 16, anti + ".unique_id", `InitVariablesError(16): "module_properties.services.antigena.unique_id" property must be a string`},
		{"17_persistence_version_missing.bad.yaml", 17, anti + ".persistence_version", `InitVariablesError(17): "module_properties.services.antigena.persistence_version" mandatory property is missing or empty`},
		{"18_persistence_version_not_int.bad.yaml", 18, anti + ".persistence_version", `InitVariablesError(18): "module_properties.services.antigena.persistence_version" property must be an integer`},
		{"19_persistence_version_negative.bad.yaml", 19, anti + ".persistence_version", `InitVariablesError(19): "module_properties.services.antigena.persistence_version" property can not be a negative value`},
		{"devo_tag_invalid.bad.yaml", 0, anti + ".devo_tag", "expected 2 to 6 levels"},
		{"endpoint_relative.bad.yaml", 0, anti + ".endpoint", `starting with "/"`},
		{"unknown_service.bad.yaml", 0, mp + ".services.devices", "unknown service"},
		{"requests_per_second_missing.bad.yaml", 0, "module_globals.requests_per_second", "mandatory property is missing or empty"},
		{"windowed_zero_window.bad.yaml", 0, anti + ".time_window_interval_in_minutes", "must be positive for a windowed service"},
		{"yaml_syntax.bad.yaml", 0, "", "definitions: parsing YAML"},
	}
	minimal, err := os.ReadFile("testdata/minimal.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	covered := make(map[string]bool, len(tests))
	for _, tc := range tests {
		covered[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			opts := testOptions(nil)
			opts.DefinitionsPath = filepath.Join("testdata", "definitions", tc.file)
			_, err := Parse(minimal, opts)
			checkOneError(t, err, tc)
		})
	}
	files, err := filepath.Glob("testdata/definitions/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s has no row in the table", f)
		}
	}
	for id := 1; id <= 19; id++ {
		found := false
		for _, tc := range tests {
			found = found || tc.wantID == id
		}
		if !found {
			t.Errorf("no fixture for InitVariablesError(%d)", id)
		}
	}
}

func TestMultipleErrorsCollected(t *testing.T) {
	t.Parallel()
	const doc = `
globals: {idd: x}
outputs:
  relay_1: {type: relay, config: {port: 0}}
inputs:
  darktrace:
    credentials: {public_token: 5}
    services:
      status: 7
`
	_, err := Parse([]byte(doc), testOptions(nil))
	es := AsErrors(err)
	want := []struct {
		id   int
		path string
	}{
		{0, "globals.idd"},
		{0, "outputs.relay_1.config.port"},
		{0, "outputs.relay_1.config.address"},
		{25, "inputs.darktrace.credentials.public_token"},
		{26, "inputs.darktrace.credentials.private_token"},
		{28, "inputs.darktrace.credentials.instance"},
		{31, "inputs.darktrace.services.status"},
	}
	if len(es) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(es), len(want), err)
	}
	for i, w := range want {
		if es[i].ID != w.id || es[i].Path != w.path {
			t.Errorf("problem %d = (%d, %q), want (%d, %q)", i, es[i].ID, es[i].Path, w.id, w.path)
		}
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(want) {
		t.Errorf("Error() has %d lines, want one per problem (%d)", len(lines), len(want))
	}
}
