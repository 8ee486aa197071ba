package config

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxMinutes caps every minutes setting (ten years), so that durations cannot overflow.
const maxMinutes = 10 * 366 * 24 * 60

// inputs walks the inputs section and checks that at least one input is enabled.
func (w *walker) inputs(n *yaml.Node, cfg *Config) {
	const p = "inputs"
	switch {
	case isNull(n) || isEmptyMapping(n):
		w.add(seedErr(20, "inputs.darktrace", msgMissing("inputs.darktrace")), n)
		return
	case !isMapping(n):
		w.add(seedErr(21, p, msgNotDict(p)+" of input names (such as darktrace) to their settings (found "+describe(n)+")"), deref(n))
		return
	}
	anyEnabled := false
	for _, e := range w.entries(n, p) {
		if err := checkName(e.key); err != nil {
			w.add(cfgErr(e.path, "input name %v", err), e.knode)
			continue
		}
		switch {
		case isNull(e.value) || isEmptyMapping(e.value):
			w.add(seedErr(20, e.path, msgMissing(e.path)), e.knode)
			continue
		case !isMapping(e.value):
			w.add(seedErr(21, e.path, msgNotDict(e.path)+" (found "+describe(e.value)+")"), deref(e.value))
			continue
		}
		in := w.input(e.value, e.path, e.key)
		cfg.Inputs[e.key] = in
		anyEnabled = anyEnabled || in.IsEnabled()
	}
	if len(cfg.Inputs) > 0 && !anyEnabled {
		w.add(cfgErr(p, "every input is disabled; enable at least one (enabled: true)"), n)
	}
}

// input walks one input and resolves all of its services.
func (w *walker) input(n *yaml.Node, path, name string) Input {
	in := defaultInput(name, w.defs)
	var credEntry, servicesEntry *entry
	w.object(n, path, map[string]handler{
		"id":      func(e entry) { w.text(e, &in.ID, "a short identifier of the input") },
		"enabled": func(e entry) { w.boolPtr(e, &in.Enabled) },
		"requests_per_second": func(e entry) {
			v, st := w.number(e.value, e.path, genericType(e.path, "a positive number of requests per second"))
			if st != valid {
				return
			}
			if v <= 0 || v > 10000 {
				w.add(cfgErr(e.path, "must be a number of requests per second above 0 and at most 10000, found %g", v), deref(e.value))
				return
			}
			in.RequestsPerSecond = v
		},
		"credentials": func(e entry) { credEntry = &e },
		"tls":         func(e entry) { w.section(e, func(n *yaml.Node) { w.tls(n, e.path, &in.TLS) }) },
		"services":    func(e entry) { servicesEntry = &e },
	}, nil)

	cp := path + ".credentials"
	switch {
	case credEntry == nil || isNull(credEntry.value) || isEmptyMapping(credEntry.value):
		w.add(seedErr(22, cp, msgMissing(cp)), n)
	case !isMapping(credEntry.value):
		w.add(seedErr(23, cp, msgNotDict(cp)+" (found "+describe(credEntry.value)+")"), deref(credEntry.value))
	default:
		w.credentials(credEntry.value, cp, &in.Credentials)
	}

	sp := path + ".services"
	given := make(map[string]*yaml.Node)
	badService := false // an entry with an error: do not also report "every service is disabled"
	if servicesEntry != nil {
		switch {
		case isNull(servicesEntry.value):
		case !isMapping(servicesEntry.value):
			w.add(cfgErr(sp, "must be a mapping of service names (%s) to their settings, found %s", strings.Join(Services, ", "), describe(servicesEntry.value)), deref(servicesEntry.value))
		default:
			for _, e := range w.entries(servicesEntry.value, sp) {
				switch {
				case !slices.Contains(Services, e.key):
					badService = true
					msg := "unknown service"
					if s := suggest(e.key, Services); s != "" {
						msg += fmt.Sprintf(" (did you mean %q?)", s)
					}
					w.add(cfgErr(e.path, "%s; expected one of %s", msg, strings.Join(Services, ", ")), e.knode)
				case isNull(e.value):
					given[e.key] = nil
					w.add(seedErr(30, e.path, msgMissing(e.path)), e.knode)
				case !isMapping(e.value):
					given[e.key] = nil
					w.add(seedErr(31, e.path, msgNotDict(e.path)+" (found "+describe(e.value)+")"), deref(e.value))
				default:
					given[e.key] = e.value
				}
			}
		}
	}
	// A services mapping selects what to collect: only the services it lists run. Without one (or
	// with an empty one) every service runs with its defaults.
	listed := servicesEntry != nil && isMapping(servicesEntry.value) && len(servicesEntry.value.Content) > 0
	for _, svcName := range Services {
		s := defaultService(svcName)
		if sn, ok := given[svcName]; ok {
			if sn != nil {
				w.service(sn, sp+"."+svcName, svcName, &s)
			}
			s.Listed = true
		} else if listed {
			s.Enabled = ptr(false)
		}
		w.resolveService(&s, svcName)
		in.Services[svcName] = s
	}
	in.ServicesListed = listed
	if in.IsEnabled() && len(in.EnabledServices()) == 0 && !badService && !slices.ContainsFunc(Services, func(n string) bool { v, ok := given[n]; return ok && v == nil }) {
		w.add(cfgErr(sp, "every service is disabled; enable at least one, or set enabled: false on the input"), n)
	}
	return in
}

// credentials walks an input's credentials block (IDs 24–29).
func (w *walker) credentials(n *yaml.Node, cp string, c *Credentials) {
	token := func(e entry, missingID, typeID int, set func(string)) {
		v, st := w.str(e.value, e.path, true, seedType(typeID, e.path, msgNotString(e.path)))
		if st != valid {
			return
		}
		switch {
		case strings.TrimSpace(v) == "":
			w.add(seedErr(missingID, e.path, msgMissing(e.path)), deref(e.value))
		case strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			w.add(cfgErr(e.path, "contains spaces or control characters (a trailing newline from a file or an environment variable?); expected the token alone"), deref(e.value))
		default:
			set(v)
		}
	}
	var instance string
	var instEntry *entry
	instanceKey := func(e entry) {
		v, st := w.str(e.value, e.path, true, seedType(29, e.path, msgNotString(e.path)))
		if st != valid {
			return
		}
		if strings.TrimSpace(v) == "" {
			w.add(seedErr(28, e.path, msgMissing(e.path)), deref(e.value))
			return
		}
		instance, instEntry = v, &e
	}
	present := w.object(n, cp, map[string]handler{
		"public_token":  func(e entry) { token(e, 24, 25, func(v string) { c.PublicToken = v }) },
		"private_token": func(e entry) { token(e, 26, 27, func(v string) { c.PrivateToken = Secret(v) }) },
		"instance":      instanceKey,
		"base_url":      instanceKey,
	}, nil)
	if !present["public_token"] {
		w.add(seedErr(24, cp+".public_token", msgMissing(cp+".public_token")), n)
	}
	if !present["private_token"] {
		w.add(seedErr(26, cp+".private_token", msgMissing(cp+".private_token")), n)
	}
	switch {
	case present["instance"] && present["base_url"]:
		w.add(cfgErr(cp+".base_url", "is an alias of instance; set only one of them"), n)
		return
	case !present["instance"] && !present["base_url"]:
		w.add(seedErr(28, cp+".instance", msgMissing(cp+".instance")), n)
		return
	case instEntry == nil:
		return // reported by instanceKey
	}
	u, err := instanceURL(instance, w.defs.BaseURL)
	if err != nil {
		w.add(cfgErr(instEntry.path, "%v", err), deref(instEntry.value))
		return
	}
	c.Instance = u
}

// instanceURL normalises an appliance base URL (adding https:// to a bare host, dropping trailing
// slashes) and puts it through the definitions' base_url template. The value is never echoed, in
// case it carries credentials.
func instanceURL(raw, template string) (string, error) {
	const want = "expected the appliance's base URL such as https://euw1-1234-01.cloud.darktrace.com (http or https, no query, fragment or user info)"
	check := func(s string) error {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("is not a usable URL; %s", want)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("has an invalid port; %s", want)
			}
		}
		return nil
	}
	s := raw
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", fmt.Errorf("contains spaces or control characters; %s", want)
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	s = strings.TrimRight(s, "/")
	if err := check(s); err != nil {
		return "", err
	}
	out := strings.TrimRight(strings.ReplaceAll(template, "{instance}", s), "/")
	if err := check(out); err != nil {
		return "", fmt.Errorf("gives an unusable URL through the definitions' base_url template %q; %s", template, want)
	}
	return out, nil
}

// service walks one service's block (IDs 32–35) into s.
func (w *walker) service(n *yaml.Node, sp, name string, s *Service) {
	w.object(n, sp, map[string]handler{
		"enabled": func(e entry) { w.boolPtr(e, &s.Enabled) },
		"start_time_in_utc_format": func(e entry) {
			v, st := w.str(e.value, e.path, true, seedType(33, e.path, msgNotString(e.path)))
			if st != valid {
				return
			}
			t, err := time.Parse(w.defs.Layout, v)
			if err != nil {
				example := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).Format(w.defs.Layout)
				w.add(seedErr(34, e.path, fmt.Sprintf("%s does not match the format %s (expected a UTC time such as %s)", e.path, w.defs.DateFormat, example)), deref(e.value))
				return
			}
			if now := w.now(); t.After(now) {
				w.add(cfgErr(e.path, "%s is in the future (now is %s); expected a past time, or leave the key out to start from now", v, now.UTC().Format(w.defs.Layout)), deref(e.value))
				return
			}
			s.StartTimeInUTCFormat, s.StartTime = v, t.UTC()
		},
		"request_period_in_seconds": func(e entry) {
			w.intIn(e, &s.RequestPeriodInSeconds, 1, 86400, "a number of seconds")
		},
		"override_devo_tag": func(e entry) {
			v, st := w.str(e.value, e.path, true, seedType(32, e.path, msgNotString(e.path)))
			if st != valid {
				return
			}
			if err := checkTag(v); err != nil {
				w.add(cfgErr(e.path, "%v", err), deref(e.value))
				return
			}
			s.OverrideDevoTag = v
		},
		"override_time_window_interval_in_minutes": func(e entry) {
			v, st := w.integer(e.value, e.path, seedType(35, e.path, msgNotInt(e.path)))
			if st != valid {
				return
			}
			if v < 1 || v > maxMinutes {
				w.add(cfgErr(e.path, "must be a number of minutes from 1 to %d, found %d", maxMinutes, v), deref(e.value))
				return
			}
			s.OverrideTimeWindowIntervalInMinutes = v
		},
		"look_back_in_minutes": func(e entry) {
			if name == ServiceStatus || name == ServiceSummary {
				w.add(cfgErr(e.path, "applies only to the windowed services (%s, %s, %s); %s is a snapshot: remove it here",
					ServiceModelBreaches, ServiceIncidentEvents, ServiceAntigena, name), e.knode)
				return
			}
			var v int
			if w.intIn(e, &v, 0, 30*24*60, "a number of minutes") == valid {
				s.LookBackInMinutes = ptr(v)
			}
		},
		"flatten": func(e entry) {
			if name != ServiceStatus {
				w.add(cfgErr(e.path, "applies only to the %s service; remove it here", ServiceStatus), e.knode)
				return
			}
			w.boolPtr(e, &s.Flatten)
		},
		"obfuscation": func(e entry) { w.section(e, func(n *yaml.Node) { w.obfuscation(n, e.path, s) }) },
	}, nil)
}

// resolveService fills the resolved fields of s from its definition and its overrides.
func (w *walker) resolveService(s *Service, name string) {
	def := w.defs.Services[name]
	s.Endpoint = def.Endpoint
	s.Snapshot = def.Snapshot
	s.PersistenceVersion = def.PersistenceVersion
	s.Tag = def.DevoTag
	if s.OverrideDevoTag != "" {
		s.Tag = s.OverrideDevoTag
	}
	s.Window = 0
	if !def.Snapshot {
		m := def.TimeWindowIntervalInMinutes
		if s.OverrideTimeWindowIntervalInMinutes > 0 {
			m = s.OverrideTimeWindowIntervalInMinutes
		}
		s.Window = time.Duration(m) * time.Minute
	}
	period := s.RequestPeriodInSeconds
	if period == 0 {
		period = def.RequestPeriodInSeconds
	}
	if period == 0 {
		period = w.defs.RequestPeriodInSeconds
	}
	s.Period = time.Duration(period) * time.Second
	s.LookBack = 0
	if s.LookBackInMinutes != nil {
		s.LookBack = time.Duration(*s.LookBackInMinutes) * time.Minute
	}
}

// obfuscation walks a service's obfuscation block.
func (w *walker) obfuscation(n *yaml.Node, op string, s *Service) {
	o := &Obfuscation{}
	saltState := absent
	w.object(n, op, map[string]handler{
		"salt": func(e entry) {
			var v string
			saltState = w.text(e, &v, "a secret salt for HMAC-SHA256")
			o.Salt = Secret(v)
		},
		"hash": func(e entry) { o.Hash = w.fieldPaths(e) },
		"mask": func(e entry) { o.Mask = w.fieldPaths(e) },
	}, nil)
	if len(o.Hash) > 0 && saltState == absent {
		w.add(cfgErr(op+".salt", "mandatory property is missing or empty: hash paths are given and the salt keys their HMAC-SHA256; set salt (for example salt: ${DT_OBFUSCATION_SALT})"), n)
	}
	for _, p := range o.Hash {
		if slices.Contains(o.Mask, p) {
			w.add(cfgErr(op, "field path %q is listed in both hash and mask; choose one", p), n)
		}
	}
	if len(o.Hash)+len(o.Mask) > 0 {
		s.Obfuscation = o
	}
}

// fieldPaths decodes a list of event field paths, checking their syntax.
func (w *walker) fieldPaths(e entry) []string {
	list, st := w.strList(e.value, e.path)
	if st != valid {
		return nil
	}
	seen := make(map[string]bool, len(list))
	out := make([]string, 0, len(list))
	for i, p := range list {
		ip := fmt.Sprintf("%s[%d]", e.path, i)
		if err := checkFieldPath(p); err != nil {
			w.add(cfgErr(ip, "%v", err), deref(e.value))
			continue
		}
		if seen[p] {
			w.add(cfgErr(ip, "field path %q is listed twice", p), deref(e.value))
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}

// checkFieldPath checks the syntax "a.b[].c": dot-separated field names, each optionally followed
// by "[]" (every element of an array).
func checkFieldPath(p string) error {
	bad := func() error {
		return fmt.Errorf("%q is not a field path; expected dot-separated field names with [] after an array field, such as device.ip or breachDevices[].ip", p)
	}
	if p == "" {
		return bad()
	}
	for _, seg := range strings.Split(p, ".") {
		name := seg
		for strings.HasSuffix(name, "[]") {
			name = strings.TrimSuffix(name, "[]")
		}
		if name == "" || strings.ContainsAny(name, "[]") || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return bad()
		}
	}
	return nil
}
