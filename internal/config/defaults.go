package config

// This file is the one place where defaults live. Load starts every section from these values and
// overwrites only the keys the user wrote.

// Default values of the user's configuration.
const (
	DefaultName       = "darktrace_collector"
	DefaultStoreDir   = "./data"
	DefaultNATSListen = "127.0.0.1:4222"
	DefaultReplicas   = 1
	// DefaultConcurrency is the upper bound of the adaptive pacing's requests in flight per
	// worker process: well above what a 200 ms appliance needs to reach the default ceiling, low
	// enough that a fleet of a few processes cannot flood an appliance before the pacing's first
	// round trips have measured it (the limit starts at DefaultMinConcurrency and doubles per
	// round trip).
	DefaultConcurrency                = 64
	DefaultMinConcurrency             = 1
	DefaultSafetyLagInSeconds         = 5
	DefaultMaxSlotsAhead              = 1000
	DefaultMaxBacklogInMB             = 64
	DefaultLeaseTTLInSeconds          = 10
	DefaultDedupeTTLInHours           = 168
	DefaultSenderStatsPeriodInSeconds = 300
	DefaultRelayPort                  = 13000
	DefaultDevoPlatformPort           = 443
	// DefaultLookBackInMinutes is modelbreaches' overlap: its slots are queried by creation time
	// (creationtime=true), which is complete once past the safety lag, so the overlap only guards
	// against an appliance that indexes a breach a little after its creationTime.
	DefaultLookBackInMinutes = 5
	// DefaultIncidentLookBackInMinutes is aianalyst_incidentevents' overlap: AI Analyst events
	// become visible minutes after their createdAt, which is what the window filters on.
	DefaultIncidentLookBackInMinutes = 15
	// DefaultAntigenaLookBackInMinutes is antigena's overlap on the time of an action's state.
	DefaultAntigenaLookBackInMinutes   = 5
	DefaultTransientErrorsForInMinutes = 30
	DefaultMaxEventSizeInMB            = 8
	DefaultRetryFailedBaseInSeconds    = 60
	DefaultRetryFailedMaxInSeconds     = 3600
	// ListenNone as nats.listen disables the embedded server's client listener.
	ListenNone = "none"
)

// The process's soft memory limit.
const (
	// DefaultMemoryLimitInMB is globals.memory_limit_in_mb. Most of a busy process's heap is
	// short-lived: the embedded NATS server's 8 MiB file-store block buffers, which it holds
	// only weakly once a read or write is done, and the responses the workers are splitting.
	// Without a limit the garbage collector lets the heap grow to twice what it kept at its last
	// cycle (GOGC=100), so the buffers pile up between cycles (a 5 GB backfill peaked at 402 MB
	// RSS). 170 MiB of Go memory keeps the process's RSS (the limit plus the binary's code and
	// the memory the runtime has not yet returned) under 200 MB; it is a soft limit, so a process
	// that needs more takes it, at the price of more frequent collections.
	//
	// The live heap is mostly the slots in flight (a worker holds a response while it splits it,
	// and its compressed chunks until they are stored), which coordinator.max_backlog_in_mb
	// bounds: DefaultMaxBacklogInMB (64) keeps it well under this limit, so that the collector
	// does not run almost continuously.
	DefaultMemoryLimitInMB = 170
	// MinMemoryLimitInMB is the smallest memory limit accepted: below it the garbage collector
	// would run almost continuously.
	MinMemoryLimitInMB = 64
)

// devoPlatformRegions maps the region shortcuts allowed in a devo_platform output's address to
// Devo's syslog-over-TLS collector hosts.
var devoPlatformRegions = map[string]string{
	"eu": "collector-eu.devo.io",
	"us": "collector-us.devo.io",
	"ca": "collector-ca.devo.io",
	"ap": "collector-ap.devo.io",
}

// httpRegions maps the region shortcuts allowed in an http output's address to Devo's HTTP
// ingestion endpoints.
var httpRegions = map[string]string{
	"eu":  "https://http-eu.devo.io",
	"us":  "https://http-us.devo.io",
	"us3": "https://http-us3.devo.io",
	"ca":  "https://http-ca.devo.io",
	"ap":  "https://collector-ap.devo.io:8443",
}

// defaultConfig returns the configuration before the user's file is applied.
func defaultConfig() *Config {
	return &Config{
		Globals: Globals{Name: DefaultName, MemoryLimitInMB: DefaultMemoryLimitInMB},
		NATS: NATS{
			StoreDir: DefaultStoreDir,
			Listen:   DefaultNATSListen,
			Replicas: DefaultReplicas,
		},
		Workers: Workers{Concurrency: DefaultConcurrency, MinConcurrency: DefaultMinConcurrency, TransientErrorsForInMinutes: DefaultTransientErrorsForInMinutes,
			MaxEventSizeInMB: DefaultMaxEventSizeInMB},
		Coordinator: Coordinator{
			SafetyLagInSeconds:       DefaultSafetyLagInSeconds,
			MaxSlotsAhead:            DefaultMaxSlotsAhead,
			MaxBacklogInMB:           DefaultMaxBacklogInMB,
			LeaseTTLInSeconds:        DefaultLeaseTTLInSeconds,
			RetryFailedBaseInSeconds: DefaultRetryFailedBaseInSeconds,
			RetryFailedMaxInSeconds:  DefaultRetryFailedMaxInSeconds,
		},
		Shipper: Shipper{
			DedupeTTLInHours:           DefaultDedupeTTLInHours,
			SenderStatsPeriodInSeconds: DefaultSenderStatsPeriodInSeconds,
			LeaseTTLInSeconds:          DefaultLeaseTTLInSeconds,
		},
		Outputs: map[string]Output{},
		Inputs:  map[string]Input{},
	}
}

// defaultOutput returns an output of type typ before its config block is applied.
func defaultOutput(typ string) Output {
	o := Output{Type: typ, Enabled: ptr(true)}
	switch typ {
	case OutputDevoPlatform:
		o.Config.Port = DefaultDevoPlatformPort
		o.Config.VerifyHostname = ptr(true)
	case OutputRelay:
		o.Config.Port = DefaultRelayPort
	}
	return o
}

// defaultInput returns the input named name before its block is applied.
func defaultInput(name string, defs *Definitions) Input {
	return Input{
		ID:                name,
		Enabled:           ptr(true),
		RequestsPerSecond: defs.RequestsPerSecond,
		Services:          make(map[string]Service, len(Services)),
	}
}

// defaultService returns the service named name before the user's block is applied: enabled,
// with no overrides.
func defaultService(name string) Service {
	s := Service{Enabled: ptr(true)}
	switch name {
	case ServiceStatus:
		s.Flatten = ptr(true)
	case ServiceModelBreaches:
		s.LookBackInMinutes = ptr(DefaultLookBackInMinutes)
	case ServiceIncidentEvents:
		s.LookBackInMinutes = ptr(DefaultIncidentLookBackInMinutes)
	case ServiceAntigena:
		s.LookBackInMinutes = ptr(DefaultAntigenaLookBackInMinutes)
	}
	return s
}

func ptr[T any](v T) *T { return &v }
