package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dtfleet/dtfleet/internal/devotag"
)

// LoadOptions tune Load and Parse.
type LoadOptions struct {
	// DefinitionsPath is a definitions file replacing the embedded one; "" keeps the embedded.
	DefinitionsPath string
	// LookupEnv resolves ${NAME} in values; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// BaseDir is the directory relative paths in the file resolve against. Load defaults it to the
	// configuration file's directory; Parse leaves relative paths relative to the working directory.
	BaseDir string
	// Now is the clock used to reject start times in the future; nil means time.Now.
	Now func() time.Time
}

// Load reads, expands, defaults and validates the configuration file at path. It reads only that
// file and the definitions file: paths in the configuration (certificates, store_dir, ...) are
// resolved, not opened. On invalid input the error is an Errors listing every problem.
func Load(path string, opts LoadOptions) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	if opts.BaseDir == "" {
		dir, err := filepath.Abs(filepath.Dir(path))
		if err != nil {
			return nil, fmt.Errorf("resolving the configuration's directory: %w", err)
		}
		opts.BaseDir = dir
	}
	cfg, err := Parse(data, opts)
	if err != nil {
		return nil, err
	}
	cfg.Source = path
	return cfg, nil
}

// Parse is Load for a configuration already in memory.
func Parse(data []byte, opts LoadOptions) (*Config, error) {
	defs, err := LoadDefinitions(opts.DefinitionsPath)
	if err != nil {
		return nil, err
	}
	protected, restore := protectEnv(data)
	root, err := decodeDocument(protected)
	if err != nil {
		if restore != nil {
			err = errors.New(restore.Replace(err.Error()))
		}
		return nil, Errors{cfgErr("", "%v", err)}
	}
	restoreEnv(root, restore, 0)
	w := &walker{
		lookupEnv: opts.LookupEnv,
		baseDir:   opts.BaseDir,
		now:       opts.Now,
		defs:      defs,
	}
	if w.lookupEnv == nil {
		w.lookupEnv = os.LookupEnv
	}
	if w.now == nil {
		w.now = time.Now
	}
	cfg := w.config(root)
	if len(w.errs) > 0 {
		return nil, w.errs
	}
	cfg.Definitions = defs
	return cfg, nil
}

// config walks the whole document.
func (w *walker) config(root *yaml.Node) *Config {
	cfg := defaultConfig()
	if root != nil && !isMapping(root) && !isNull(root) {
		w.add(cfgErr("", "the configuration must be a YAML mapping with outputs and inputs, found %s", describe(root)), root)
		return cfg
	}
	var outputsNode, inputsNode *yaml.Node
	w.object(root, "", map[string]handler{
		"globals":     func(e entry) { w.section(e, func(n *yaml.Node) { w.globals(n, e.path, &cfg.Globals) }) },
		"nats":        func(e entry) { w.section(e, func(n *yaml.Node) { w.nats(n, e.path, &cfg.NATS) }) },
		"workers":     func(e entry) { w.section(e, func(n *yaml.Node) { w.workers(n, e.path, &cfg.Workers) }) },
		"coordinator": func(e entry) { w.section(e, func(n *yaml.Node) { w.coordinator(n, e.path, &cfg.Coordinator) }) },
		"shipper":     func(e entry) { w.section(e, func(n *yaml.Node) { w.shipper(n, e.path, &cfg.Shipper) }) },
		"metrics":     func(e entry) { w.section(e, func(n *yaml.Node) { w.metrics(n, e.path, &cfg.Metrics) }) },
		"outputs":     func(e entry) { outputsNode = e.value },
		"inputs":      func(e entry) { inputsNode = e.value },
	}, nil)
	cfg.NATS.StoreDir = w.resolve(cfg.NATS.StoreDir)
	w.natsRules(root, &cfg.NATS)
	w.outputs(outputsNode, cfg)
	w.inputs(inputsNode, cfg)
	return cfg
}

// section runs fn on a settings block that must be a mapping; null leaves the defaults.
func (w *walker) section(e entry, fn func(n *yaml.Node)) {
	switch {
	case isNull(e.value):
	case !isMapping(e.value):
		w.add(cfgErr(e.path, "must be a mapping of settings, found %s", describe(e.value)), deref(e.value))
	default:
		fn(e.value)
	}
}

// intIn decodes an integer into dst when it lies in [lo, hi]; what describes the unit.
func (w *walker) intIn(e entry, dst *int, lo, hi int, what string) state {
	v, st := w.integer(e.value, e.path, genericType(e.path, what))
	if st != valid {
		return st
	}
	if v < lo || v > hi {
		w.add(cfgErr(e.path, "must be %s from %d to %d, found %d", what, lo, hi, v), deref(e.value))
		return invalid
	}
	*dst = v
	return valid
}

// boolInto decodes a boolean into dst.
func (w *walker) boolInto(e entry, dst *bool) {
	if v, st := w.boolean(e.value, e.path); st == valid {
		*dst = v
	}
}

// boolPtr decodes a boolean into a new *bool.
func (w *walker) boolPtr(e entry, dst **bool) {
	if v, st := w.boolean(e.value, e.path); st == valid {
		*dst = ptr(v)
	}
}

// text decodes a non-empty string without control characters into dst; what names the expected
// content for messages. An empty string is reported; null leaves dst alone.
func (w *walker) text(e entry, dst *string, what string) state {
	v, st := w.str(e.value, e.path, false, genericType(e.path, what))
	if st != valid {
		return st
	}
	if strings.TrimSpace(v) == "" {
		w.add(cfgErr(e.path, "is empty; expected %s", what), deref(e.value))
		return invalid
	}
	if hasControl(v) {
		w.add(cfgErr(e.path, "contains control characters (a newline from a file or an environment variable?); expected %s", what), deref(e.value))
		return invalid
	}
	*dst = v
	return valid
}

// pathInto decodes a file or directory path and resolves it against the base directory. The path
// is not opened: whoever uses it reports a missing file.
func (w *walker) pathInto(e entry, dst *string) state {
	var p string
	st := w.text(e, &p, "a file path")
	if st == valid {
		*dst = w.resolve(p)
	}
	return st
}

// resolve makes a relative path relative to the base directory.
func (w *walker) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(w.baseDir, p)
}

func (w *walker) globals(n *yaml.Node, path string, g *Globals) {
	w.object(n, path, map[string]handler{
		"id": func(e entry) {
			var id string
			if w.text(e, &id, "a short identifier of this deployment") == valid {
				if err := checkName(id); err != nil {
					w.add(cfgErr(e.path, "%v", err), deref(e.value))
					return
				}
				g.ID = id
			}
		},
		"name":  func(e entry) { w.text(e, &g.Name, "the collector's name") },
		"debug": func(e entry) { w.boolInto(e, &g.Debug) },
		"memory_limit_in_mb": func(e entry) {
			var v int
			if w.intIn(e, &v, 0, 1_000_000, "a number of megabytes (0: no limit)") != valid {
				return
			}
			// Below the minimum the collector would run almost all the time.
			if v != 0 && v < MinMemoryLimitInMB {
				w.add(cfgErr(e.path, "must be 0 (no limit) or a number of megabytes from %d to %d, found %d", MinMemoryLimitInMB, 1_000_000, v), deref(e.value))
				return
			}
			g.MemoryLimitInMB = v
		},
	}, nil)
}

func (w *walker) nats(n *yaml.Node, path string, c *NATS) {
	w.object(n, path, map[string]handler{
		"url": func(e entry) {
			var u string
			if w.text(e, &u, "a comma-separated list of nats://host:port URLs") != valid {
				return
			}
			if err := checkNATSURLs(u); err != nil {
				w.add(cfgErr(e.path, "%v", err), deref(e.value))
				return
			}
			c.URL = u
		},
		"store_dir": func(e entry) { w.text(e, &c.StoreDir, "a directory path") },
		"listen": func(e entry) {
			var l string
			if w.text(e, &l, `host:port or "none"`) != valid {
				return
			}
			if err := checkListen(l); err != nil {
				w.add(cfgErr(e.path, "%v", err), deref(e.value))
				return
			}
			c.Listen = l
		},
		"replicas":   func(e entry) { w.intIn(e, &c.Replicas, 1, 5, "a replica count") },
		"creds_file": func(e entry) { w.pathInto(e, &c.CredsFile) },
		"user":       func(e entry) { w.text(e, &c.User, "a NATS user name") },
		"password": func(e entry) {
			var pw string
			if w.text(e, &pw, "a NATS password") == valid {
				c.Password = Secret(pw)
			}
		},
		"nkey_file": func(e entry) { w.pathInto(e, &c.NKeyFile) },
		"tls":       func(e entry) { w.section(e, func(n *yaml.Node) { w.tls(n, e.path, &c.TLS) }) },
	}, nil)
}

// natsRules checks the relations between nats keys, once they are all known.
func (w *walker) natsRules(root *yaml.Node, c *NATS) {
	const p = "nats"
	methods := 0
	if c.CredsFile != "" {
		methods++
	}
	if c.User != "" || c.Password != "" {
		methods++
	}
	if c.NKeyFile != "" {
		methods++
	}
	if methods > 1 {
		w.add(cfgErr(p, "creds_file, user/password and nkey_file are mutually exclusive; choose one way to authenticate"), root)
	}
	if (c.User == "") != (c.Password == "") {
		w.add(cfgErr(p, "user and password go together; set both or neither"), root)
	}
	if c.Embedded() && c.Replicas > 1 {
		w.add(cfgErr(p+".replicas", "is %d but the embedded server (no nats.url) is a single node; set nats.url to a cluster or use replicas: 1", c.Replicas), root)
	}
}

func (w *walker) tls(n *yaml.Node, path string, t *TLS) {
	w.object(n, path, map[string]handler{
		"ca_file":              func(e entry) { w.pathInto(e, &t.CAFile) },
		"cert_file":            func(e entry) { w.pathInto(e, &t.CertFile) },
		"key_file":             func(e entry) { w.pathInto(e, &t.KeyFile) },
		"insecure_skip_verify": func(e entry) { w.boolInto(e, &t.InsecureSkipVerify) },
	}, nil)
	if (t.CertFile == "") != (t.KeyFile == "") {
		w.add(cfgErr(path, "cert_file and key_file go together (a client certificate and its key); set both or neither"), n)
	}
}

func (w *walker) workers(n *yaml.Node, path string, c *Workers) {
	w.object(n, path, map[string]handler{
		"concurrency":     func(e entry) { w.intIn(e, &c.Concurrency, 1, 4096, "a number of concurrent fetches") },
		"min_concurrency": func(e entry) { w.intIn(e, &c.MinConcurrency, 1, 4096, "a number of concurrent fetches") },
		"transient_errors_for_in_minutes": func(e entry) {
			w.intIn(e, &c.TransientErrorsForInMinutes, 0, 7*24*60, "a number of minutes (0 records the slot as failed on the first transient error)")
		},
		"max_event_size_in_mb": func(e entry) { w.intIn(e, &c.MaxEventSizeInMB, 1, 1024, "a number of megabytes") },
	}, nil)
	if c.MinConcurrency > c.Concurrency {
		w.add(cfgErr(path+".min_concurrency", "is %d, more than workers.concurrency (%d), the adaptive limit's upper bound; set it at most %d (equal fixes the concurrency)",
			c.MinConcurrency, c.Concurrency, c.Concurrency), n)
	}
}

func (w *walker) coordinator(n *yaml.Node, path string, c *Coordinator) {
	w.object(n, path, map[string]handler{
		"safety_lag_in_seconds": func(e entry) { w.intIn(e, &c.SafetyLagInSeconds, 0, 86400, "a number of seconds") },
		"max_slots_ahead":       func(e entry) { w.intIn(e, &c.MaxSlotsAhead, 1, 1_000_000, "a number of slots") },
		"max_backlog_in_mb":     func(e entry) { w.intIn(e, &c.MaxBacklogInMB, 1, 1_000_000, "a number of megabytes") },
		"lease_ttl_in_seconds":  func(e entry) { w.intIn(e, &c.LeaseTTLInSeconds, 1, 3600, "a number of seconds") },
		"retry_failed_slots":    func(e entry) { w.boolPtr(e, &c.RetryFailedSlots) },
		"retry_failed_base_in_seconds": func(e entry) {
			w.intIn(e, &c.RetryFailedBaseInSeconds, 1, 86400, "a number of seconds")
		},
		"retry_failed_max_in_seconds": func(e entry) {
			w.intIn(e, &c.RetryFailedMaxInSeconds, 1, 7*86400, "a number of seconds")
		},
	}, nil)
}

func (w *walker) shipper(n *yaml.Node, path string, c *Shipper) {
	w.object(n, path, map[string]handler{
		"dedupe_ttl_in_hours":            func(e entry) { w.intIn(e, &c.DedupeTTLInHours, 1, 87600, "a number of hours") },
		"sender_stats_period_in_seconds": func(e entry) { w.intIn(e, &c.SenderStatsPeriodInSeconds, 1, 86400, "a number of seconds") },
		"lease_ttl_in_seconds":           func(e entry) { w.intIn(e, &c.LeaseTTLInSeconds, 1, 3600, "a number of seconds") },
	}, nil)
}

func (w *walker) metrics(n *yaml.Node, path string, c *Metrics) {
	w.object(n, path, map[string]handler{
		"listen": func(e entry) {
			var l string
			if w.text(e, &l, "host:port") != valid {
				return
			}
			if err := CheckMetricsListen(l); err != nil {
				w.add(cfgErr(e.path, "%v", err), deref(e.value))
				return
			}
			c.Listen = l
		},
	}, nil)
}

// CheckMetricsListen checks a metrics listen address (metrics.listen, --metrics-listen): host:port
// with a port from 0 to 65535; the host may be empty (every interface).
func CheckMetricsListen(l string) error {
	_, port, err := net.SplitHostPort(l)
	if err != nil {
		return fmt.Errorf("%q is not host:port; expected for example 127.0.0.1:9464", l)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not 0 to 65535 (0 picks a free port)", port)
	}
	return nil
}

// checkNATSURLs checks a comma-separated list of NATS server URLs. Values are not echoed: a URL
// may carry a password.
func checkNATSURLs(list string) error {
	for i, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		switch {
		case raw == "":
			return fmt.Errorf("entry %d is empty; expected nats://host:port[,nats://host2:port...]", i+1)
		case err != nil:
			return fmt.Errorf("entry %d is not a URL; expected nats://host:port", i+1)
		case u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss":
			return fmt.Errorf("entry %d has scheme %q; expected nats://host:port (or tls://, ws://, wss://)", i+1, u.Scheme)
		case u.Hostname() == "":
			return fmt.Errorf("entry %d has no host; expected nats://host:port", i+1)
		case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
			return fmt.Errorf("entry %d has a path or query; expected nats://host:port", i+1)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("entry %d has port %q; expected 1 to 65535", i+1, p)
			}
		}
	}
	return nil
}

// checkListen checks the embedded server's listen address.
func checkListen(l string) error {
	if l == ListenNone {
		return nil
	}
	_, port, err := net.SplitHostPort(l)
	if err != nil {
		return fmt.Errorf("%q is not host:port; expected for example 127.0.0.1:4222, or \"none\" to disable the listener", l)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not 0 to 65535 (0 picks a free port)", port)
	}
	return nil
}

// hasControl reports whether s contains an ASCII control character (including newline and tab).
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// checkName checks a name that becomes part of NATS subjects, stream and KV keys.
func checkName(s string) error {
	if s == "" || len(s) > 64 {
		return errors.New("must be 1 to 64 characters long")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%q may use only letters, digits, '_' and '-' (it becomes part of NATS subjects and keys)", s)
		}
	}
	return nil
}

// checkTag checks Devo's tag rules with the one validator the Devo line encoder uses too
// (devotag.Validate), so that a tag the configuration accepts is a tag the encoder sends: 2 to 6
// dot-separated non-empty levels, at most 1024 bytes, valid UTF-8, no whitespace, control
// characters or ':' (the tag ends at ": " on the wire).
func checkTag(tag string) error { return devotag.Validate(tag) }
