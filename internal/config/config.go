// Package config holds dtfleet's configuration: the user's YAML file (the contract in DESIGN.md,
// in the shape of Devo's collector config) and the embedded service definitions. Load decodes
// strictly, expands ${ENV}, applies defaults from one place and validates every rule before any
// I/O; every failure carries the Devo collector's error ID and the offending key path.
//
// It may import internal/devotag, and no role package: the roles import it.
package config

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Service names, as used in the config file's services section and on the bus.
const (
	ServiceAntigena       = "antigena"
	ServiceIncidentEvents = "aianalyst_incidentevents"
	ServiceSummary        = "summarystatistics"
	ServiceStatus         = "status"
	ServiceModelBreaches  = "modelbreaches"
)

// Services lists every service in a fixed order (the order of the seed's table).
var Services = []string{ServiceAntigena, ServiceIncidentEvents, ServiceSummary, ServiceStatus, ServiceModelBreaches}

// Output types, the values of outputs.<name>.type.
const (
	OutputDevoPlatform = "devo_platform"
	OutputRelay        = "relay"
	OutputHTTP         = "http"
	OutputConsole      = "console"
	OutputFile         = "file"
)

// OutputTypes lists every output type.
var OutputTypes = []string{OutputDevoPlatform, OutputRelay, OutputHTTP, OutputConsole, OutputFile}

// Config is the whole, validated configuration of one dtfleet deployment.
type Config struct {
	Globals     Globals           `yaml:"globals"`
	NATS        NATS              `yaml:"nats"`
	Workers     Workers           `yaml:"workers"`
	Coordinator Coordinator       `yaml:"coordinator"`
	Shipper     Shipper           `yaml:"shipper"`
	Metrics     Metrics           `yaml:"metrics"`
	Outputs     map[string]Output `yaml:"outputs"`
	Inputs      map[string]Input  `yaml:"inputs"`

	// Definitions are the internal service definitions (embedded, or from --definitions).
	Definitions *Definitions `yaml:"-"`
	// Source is the file the configuration was loaded from ("" for Parse).
	Source string `yaml:"-"`
}

// Globals identifies the deployment and holds the process-wide settings.
type Globals struct {
	ID    string `yaml:"id"`
	Name  string `yaml:"name"`
	Debug bool   `yaml:"debug"`
	// MemoryLimitInMB is the soft memory limit (runtime/debug.SetMemoryLimit) a dtfleet process
	// sets when it starts its roles, in MiB; 0 leaves the Go runtime's default (no limit). The
	// GOMEMLIMIT environment variable, when set, wins over it.
	MemoryLimitInMB int `yaml:"memory_limit_in_mb"`
}

// TLS is the client-side TLS block shared by every connection dtfleet makes.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// NATS says where the bus is. An empty URL means the embedded server on StoreDir. After Load,
// StoreDir and the file paths are absolute or relative to the process's working directory
// (resolved against the configuration file's directory), and Listen is never empty.
type NATS struct {
	URL       string `yaml:"url"`
	StoreDir  string `yaml:"store_dir"`
	Listen    string `yaml:"listen"` // embedded server's client listener; "" keeps the default, "none" disables it
	Replicas  int    `yaml:"replicas"`
	CredsFile string `yaml:"creds_file"`
	User      string `yaml:"user"`
	Password  Secret `yaml:"password"` // never printed; Reveal it only to connect
	NKeyFile  string `yaml:"nkey_file"`
	TLS       TLS    `yaml:"tls"`
}

// Embedded reports whether dtfleet runs its own embedded NATS server (no url configured).
func (n NATS) Embedded() bool { return n.URL == "" }

// URLs returns the server URLs of a cluster configuration (URL split at commas), or nil.
func (n NATS) URLs() []string {
	if n.URL == "" {
		return nil
	}
	parts := strings.Split(n.URL, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// Workers tunes the fetching role.
type Workers struct {
	// Concurrency is the upper bound of the requests in flight per worker process (per input):
	// the adaptive pacing finds the limit between MinConcurrency and it that the appliance
	// serves comfortably. Setting both to the same value fixes the concurrency.
	Concurrency int `yaml:"concurrency"`
	// MinConcurrency is where the adaptive limit starts and the least it shrinks to.
	MinConcurrency int `yaml:"min_concurrency"`
	// TransientErrorsForInMinutes is how long a slot keeps being retried while the appliance
	// answers with a transient error (API DATE ERROR, API SIGNATURE ERROR, a redirect to the login
	// page, an HTML maintenance page) before the slot is recorded as failed.
	TransientErrorsForInMinutes int `yaml:"transient_errors_for_in_minutes"`
	// MaxEventSizeInMB is the largest event a worker delivers; a larger one is dropped with its
	// key logged and counted, so one huge event never travels as a broken line.
	MaxEventSizeInMB int `yaml:"max_event_size_in_mb"`
}

// Coordinator tunes the planning role.
type Coordinator struct {
	SafetyLagInSeconds int `yaml:"safety_lag_in_seconds"`
	MaxSlotsAhead      int `yaml:"max_slots_ahead"`
	// MaxBacklogInMB bounds, in MB of event JSON, the results a lane may have planned but not
	// delivered, estimated from the sizes of the slots it delivered so far. The slots in flight
	// are most of a busy process's live heap, so it is sized with globals.memory_limit_in_mb
	// (DefaultMaxBacklogInMB).
	MaxBacklogInMB    int `yaml:"max_backlog_in_mb"`
	LeaseTTLInSeconds int `yaml:"lease_ttl_in_seconds"`
	// RetryFailedSlots makes the coordinator replay failed slots by itself, with a backoff from
	// RetryFailedBaseInSeconds doubling up to RetryFailedMaxInSeconds, so that a cause that clears
	// heals without a manual replay.
	RetryFailedSlots         *bool `yaml:"retry_failed_slots"`
	RetryFailedBaseInSeconds int   `yaml:"retry_failed_base_in_seconds"`
	RetryFailedMaxInSeconds  int   `yaml:"retry_failed_max_in_seconds"`
}

// RetriesFailed reports whether failed slots are retried automatically (nil counts as true).
func (c Coordinator) RetriesFailed() bool { return c.RetryFailedSlots == nil || *c.RetryFailedSlots }

// Shipper tunes the delivering role.
type Shipper struct {
	DedupeTTLInHours           int `yaml:"dedupe_ttl_in_hours"`
	SenderStatsPeriodInSeconds int `yaml:"sender_stats_period_in_seconds"`
	LeaseTTLInSeconds          int `yaml:"lease_ttl_in_seconds"`
}

// Metrics says where a process serves its Prometheus metrics and health endpoints.
type Metrics struct {
	// Listen is the host:port of /metrics, /healthz and /readyz; "" serves none. The
	// --metrics-listen flag overrides it.
	Listen string `yaml:"listen"`
}

// Output is one delivery target. Type is one of devo_platform, relay, http, console, file.
type Output struct {
	Type    string       `yaml:"type"`
	Enabled *bool        `yaml:"enabled"`
	Config  OutputConfig `yaml:"config"`
}

// IsEnabled reports whether the output receives events (Enabled nil counts as true).
func (o Output) IsEnabled() bool { return o.Enabled == nil || *o.Enabled }

// OutputConfig is the union of every output type's settings; Load checks that only the keys of
// the output's type are set. After Load: a devo_platform region shortcut in Address is replaced by
// the collector host, Port holds the type's default when unset, an http output's URL is set (from
// url, or from the region shortcut or host in address), and Chain, Cert, Key and Path are resolved
// against the configuration file's directory.
type OutputConfig struct {
	Address string `yaml:"address"` // host, or a region shortcut eu|us|ca|ap for devo_platform and http (http: or a URL)
	Port    int    `yaml:"port"`
	// devo_platform
	Chain          string `yaml:"chain"`
	Cert           string `yaml:"cert"`
	Key            string `yaml:"key"`
	VerifyHostname *bool  `yaml:"verify_hostname"` // default true; false still verifies the chain
	Gzip           bool   `yaml:"gzip"`
	// http
	URL    string `yaml:"url"`
	Domain string `yaml:"domain"`
	Token  Secret `yaml:"token"` // never printed; Reveal it only to build the request
	// file
	Path string `yaml:"path"`
	// every network output
	Hostname string `yaml:"hostname"` // the syslog HOSTNAME field; default os.Hostname()
}

// Input is one Darktrace appliance.
type Input struct {
	ID                string             `yaml:"id"`
	Enabled           *bool              `yaml:"enabled"`
	RequestsPerSecond float64            `yaml:"requests_per_second"`
	Credentials       Credentials        `yaml:"credentials"`
	TLS               TLS                `yaml:"tls"`
	Services          map[string]Service `yaml:"services"`

	// ServicesListed is true when the input has a non-empty services mapping: then only the
	// services it lists run (each can still say enabled: false), and the others are off. Without
	// one, every service runs with its defaults.
	ServicesListed bool `yaml:"-"`
}

// IsEnabled reports whether the input is collected (Enabled nil counts as true).
func (in Input) IsEnabled() bool { return in.Enabled == nil || *in.Enabled }

// EnabledServices returns the names of the input's enabled services, in the order of Services.
func (in Input) EnabledServices() []string {
	var out []string
	for _, name := range Services {
		if s, ok := in.Services[name]; ok && s.IsEnabled() {
			out = append(out, name)
		}
	}
	return out
}

// Credentials are the appliance's API token pair and base URL.
type Credentials struct {
	PublicToken  string `yaml:"public_token"`
	PrivateToken Secret `yaml:"private_token"`
	// Instance is the appliance's API root URL (scheme, host, optional port and path, no trailing
	// slash) after Load: credentials.instance (or its alias base_url) put through the definitions'
	// base_url template, with "https://" added when the user wrote a bare host.
	Instance string `yaml:"instance"`
}

// Secret is a string that never prints itself: fmt's %v, %+v, %#v, %s and %q, slog, JSON, YAML
// and text encoders all see "[REDACTED]" (or "" for an empty secret). Only Reveal returns it.
type Secret string

const redacted = "[REDACTED]"

// String hides the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString hides the value from %#v.
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// Format hides the value from every fmt verb, including the ones a string does not support
// (%d would otherwise print "%!d(config.Secret=<value>)").
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, s.GoString())
	case verb == 'q':
		_, _ = io.WriteString(f, strconv.Quote(s.String()))
	default:
		_, _ = io.WriteString(f, s.String())
	}
}

// LogValue hides the value from log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText hides the value from encoders (JSON, YAML, msgpack and others that honour
// encoding.TextMarshaler), so a Secret never leaks into a message or a file by accident.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret value, for signing only.
func (s Secret) Reveal() string { return string(s) }

// Service is one service's user settings, already merged with its definition (Resolved*).
type Service struct {
	Enabled                             *bool        `yaml:"enabled"`
	StartTimeInUTCFormat                string       `yaml:"start_time_in_utc_format"`
	RequestPeriodInSeconds              int          `yaml:"request_period_in_seconds"`
	OverrideDevoTag                     string       `yaml:"override_devo_tag"`
	OverrideTimeWindowIntervalInMinutes int          `yaml:"override_time_window_interval_in_minutes"`
	LookBackInMinutes                   *int         `yaml:"look_back_in_minutes"` // windowed services only
	Flatten                             *bool        `yaml:"flatten"`              // status only; default true
	Obfuscation                         *Obfuscation `yaml:"obfuscation"`

	// Listed is true when the service appears in its input's services mapping.
	Listed bool `yaml:"-"`

	// Resolved values, filled by Load from the definitions and the overrides.
	Endpoint           string        `yaml:"-"`
	Tag                string        `yaml:"-"`
	Window             time.Duration `yaml:"-"` // 0 for snapshot services
	Period             time.Duration `yaml:"-"`
	LookBack           time.Duration `yaml:"-"`
	PersistenceVersion int           `yaml:"-"`
	Snapshot           bool          `yaml:"-"`
	StartTime          time.Time     `yaml:"-"` // zero: start from now
}

// IsEnabled reports whether the service is collected (Enabled nil counts as true).
func (s Service) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// FlattenStatus reports whether status snapshots are split into one event per node.
func (s Service) FlattenStatus() bool { return s.Flatten == nil || *s.Flatten }

// Obfuscation lists source-event field paths (dot-separated; [] for every element of an array,
// e.g. "device.ip" or "breachDevices[].ip") to hash with HMAC-SHA256 under Salt, or to mask.
type Obfuscation struct {
	Salt Secret   `yaml:"salt"`
	Hash []string `yaml:"hash"`
	Mask []string `yaml:"mask"`
}

// The types below hold a Secret by value. fmt prints a pointer to a struct met with a verb such as
// %s or %d in its "bad verb" mode, which calls no String or Format method on the fields, so each
// such type formats itself: its fields are printed through a method-less copy of the type, where
// the Secret's own Format applies.

type (
	plainConfig      Config
	plainInput       Input
	plainCredentials Credentials
	plainObfuscation Obfuscation
	plainNATS        NATS
	plainOutput      Output
	plainOutputConf  OutputConfig
)

// Format prints the configuration with its secrets redacted.
func (c Config) Format(f fmt.State, verb rune) { formatPlain(f, verb, plainConfig(c)) }

// Format prints the input with its secrets redacted.
func (in Input) Format(f fmt.State, verb rune) { formatPlain(f, verb, plainInput(in)) }

// Format prints the credentials with the private token redacted.
func (c Credentials) Format(f fmt.State, verb rune) { formatPlain(f, verb, plainCredentials(c)) }

// Format prints the obfuscation settings with the salt redacted.
func (o Obfuscation) Format(f fmt.State, verb rune) { formatPlain(f, verb, plainObfuscation(o)) }

// Format prints the NATS settings with the password redacted, the one in a URL's user info
// (nats://user:password@host) included.
func (n NATS) Format(f fmt.State, verb rune) {
	n.URL = redactURLs(n.URL)
	formatPlain(f, verb, plainNATS(n))
}

// redactURLs replaces the password of every URL of a comma-separated list that has one.
func redactURLs(list string) string {
	if !strings.Contains(list, "@") {
		return list
	}
	parts := strings.Split(list, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		switch {
		case err != nil:
			parts[i] = redacted // unparsable, and it holds an '@': print none of it
		case u.User != nil:
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), redacted)
			} else {
				u.User = url.User(redacted) // a token or nkey-less user: may be the secret itself
			}
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// Format prints the output with its token redacted.
func (o Output) Format(f fmt.State, verb rune) { formatPlain(f, verb, plainOutput(o)) }

// Format prints the output settings with the token redacted.
func (c OutputConfig) Format(f fmt.State, verb rune) { formatPlain(f, verb, plainOutputConf(c)) }

func formatPlain(f fmt.State, verb rune, v any) { fmt.Fprintf(f, fmt.FormatString(f, verb), v) }

// RetryDelay is how long after its failure a failed slot is replayed automatically for the
// retry-th time (retry 0 is the first): retry_failed_base_in_seconds doubled per retry, at most
// retry_failed_max_in_seconds.
func (c Coordinator) RetryDelay(retry int) time.Duration {
	base := time.Duration(max(c.RetryFailedBaseInSeconds, 1)) * time.Second
	limit := time.Duration(max(c.RetryFailedMaxInSeconds, 1)) * time.Second
	d := base
	for i := 0; i < retry && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
