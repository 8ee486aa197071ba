package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// outputKeys lists the config keys each output type accepts. A devo_platform output also accepts
// the Devo SDK's `type: SSL` (its only transport), which Load checks and drops.
var outputKeys = map[string][]string{
	OutputDevoPlatform: {"address", "port", "chain", "cert", "key", "verify_hostname", "gzip", "hostname", "type"},
	OutputRelay:        {"address", "port", "hostname"},
	OutputHTTP:         {"url", "address", "port", "domain", "token", "hostname"},
	OutputConsole:      {"hostname"},
	OutputFile:         {"path", "hostname"},
}

// outputs walks the outputs section and checks that at least one output is enabled.
func (w *walker) outputs(n *yaml.Node, cfg *Config) {
	const p = "outputs"
	switch {
	case isNull(n) || isEmptyMapping(n):
		w.add(cfgErr(p, "mandatory property is missing or empty; define at least one output of type %s", strings.Join(OutputTypes, ", ")), n)
		return
	case !isMapping(n):
		w.add(cfgErr(p, "must be a mapping of output names to outputs, found %s", describe(n)), deref(n))
		return
	}
	anyEnabled := false
	for _, e := range w.entries(n, p) {
		if err := checkName(e.key); err != nil {
			w.add(cfgErr(e.path, "output name %v", err), e.knode)
			continue
		}
		switch {
		case isNull(e.value) || isEmptyMapping(e.value):
			w.add(cfgErr(e.path, "mandatory property is missing or empty; expected {type: <%s>, config: {...}}", strings.Join(OutputTypes, "|")), e.knode)
			continue
		case !isMapping(e.value):
			w.add(cfgErr(e.path, "must be a mapping with type and config, found %s", describe(e.value)), deref(e.value))
			continue
		}
		o, ok := w.output(e.value, e.path)
		if !ok {
			continue
		}
		cfg.Outputs[e.key] = o
		anyEnabled = anyEnabled || o.IsEnabled()
	}
	if len(cfg.Outputs) > 0 && !anyEnabled {
		w.add(cfgErr(p, "every output is disabled; enable at least one (enabled: true)"), n)
	}
}

// output walks one output. ok is false when its type is unknown (its config cannot be checked).
func (w *walker) output(n *yaml.Node, path string) (o Output, ok bool) {
	var typ string
	var typeState state
	var enabledEntry, configEntry *entry
	w.object(n, path, map[string]handler{
		"type": func(e entry) {
			typ, typeState = w.str(e.value, e.path, true, genericType(e.path, "one of "+strings.Join(OutputTypes, ", ")))
			if typeState == valid && !slices.Contains(OutputTypes, typ) {
				w.add(cfgErr(e.path, "unknown output type %q; expected one of %s", typ, strings.Join(OutputTypes, ", ")), deref(e.value))
				typeState = invalid
			}
		},
		"enabled": func(e entry) { enabledEntry = &e },
		"config":  func(e entry) { configEntry = &e },
	}, nil)
	switch typeState {
	case absent:
		w.add(cfgErr(path+".type", "mandatory property is missing or empty; expected one of %s", strings.Join(OutputTypes, ", ")), n)
		return o, false
	case invalid:
		return o, false
	}
	o = defaultOutput(typ)
	if enabledEntry != nil {
		w.boolPtr(*enabledEntry, &o.Enabled)
	}
	cp := path + ".config"
	var cn *yaml.Node
	if configEntry != nil {
		switch {
		case isNull(configEntry.value):
		case !isMapping(configEntry.value):
			w.add(cfgErr(cp, "must be a mapping of %s settings, found %s", typ, describe(configEntry.value)), deref(configEntry.value))
			return o, true
		default:
			cn = configEntry.value
		}
	}
	w.outputConfig(cn, cp, typ, &o.Config)
	return o, true
}

// outputConfig walks an output's config block (cn may be nil) and applies its type's rules.
func (w *walker) outputConfig(cn *yaml.Node, cp, typ string, c *OutputConfig) {
	var urlSet, addrSet, addrIsHost bool
	all := map[string]handler{
		"address": func(e entry) {
			var a string
			if w.text(e, &a, "a host name or address") != valid {
				return
			}
			addrSet = true
			addrIsHost = w.address(e, typ, a, c)
		},
		"port":   func(e entry) { w.intIn(e, &c.Port, 1, 65535, "a TCP port") },
		"chain":  func(e entry) { w.pathInto(e, &c.Chain) },
		"cert":   func(e entry) { w.pathInto(e, &c.Cert) },
		"key":    func(e entry) { w.pathInto(e, &c.Key) },
		"path":   func(e entry) { w.pathInto(e, &c.Path) },
		"gzip":   func(e entry) { w.boolInto(e, &c.Gzip) },
		"domain": func(e entry) { w.text(e, &c.Domain, "the Devo domain name") },
		"token": func(e entry) {
			var tok string
			if w.text(e, &tok, "the Devo HTTP ingestion token") == valid {
				c.Token = Secret(tok)
			}
		},
		"hostname": func(e entry) { w.hostname(e, &c.Hostname) },
		"verify_hostname": func(e entry) {
			w.boolPtr(e, &c.VerifyHostname)
		},
		"url": func(e entry) {
			var u string
			if w.text(e, &u, "the Devo HTTP endpoint URL") != valid {
				return
			}
			urlSet = true
			w.httpURL(e, u, c)
		},
		"type": func(e entry) {
			var t string
			if w.text(e, &t, `"SSL"`) == valid && !strings.EqualFold(t, "SSL") {
				w.add(cfgErr(e.path, "devo_platform outputs always use TLS; remove this key or set it to SSL, found %q", t), deref(e.value))
			}
		},
	}
	handlers := make(map[string]handler, len(outputKeys[typ]))
	for _, k := range outputKeys[typ] {
		handlers[k] = all[k]
	}
	present := w.object(cn, cp, handlers, func(e entry) {
		if owners := ownersOf(e.key); len(owners) > 0 {
			w.add(cfgErr(e.path, "is a setting of %s outputs, not of %s outputs; valid keys here: %s", strings.Join(owners, "/"), typ, strings.Join(sortedKeys(typ), ", ")), e.knode)
			return
		}
		w.unknownKey(e, sortedKeys(typ))
	})

	need := func(key, what string) {
		if !present[key] {
			w.add(cfgErr(cp+"."+key, "mandatory property is missing or empty; expected %s", what), cn)
		}
	}
	switch typ {
	case OutputDevoPlatform:
		need("address", "the Devo collector host or a region shortcut (eu, us, ca, ap)")
		need("chain", "the path of the Devo chain CA file (chain.crt)")
		need("cert", "the path of the domain certificate file")
		need("key", "the path of the domain private key file")
	case OutputRelay:
		need("address", "the relay's host name or IP address")
	case OutputHTTP:
		need("domain", "the Devo domain name")
		need("token", "the Devo HTTP ingestion token")
		switch {
		case urlSet && addrSet:
			w.add(cfgErr(cp, "url and address are alternatives; set url (a full endpoint URL) or address (a region shortcut or host), not both"), cn)
		case !present["url"] && !present["address"]:
			w.add(cfgErr(cp+".url", "mandatory property is missing or empty; set url (for example https://http-eu.devo.io) or address (a region shortcut: %s)", strings.Join(sortedRegionKeys(httpRegions), ", ")), cn)
		}
		// port goes with a bare host in address (https://host:port); a URL carries its own port
		// and a region shortcut stands for Devo's endpoint.
		if present["port"] && c.Port > 0 {
			if addrIsHost && !urlSet {
				c.URL = "https://" + net.JoinHostPort(c.Address, strconv.Itoa(c.Port))
			} else if urlSet || addrSet {
				w.add(cfgErr(cp+".port", "applies only when address is a host name; put the port in the URL (for example http://127.0.0.1:8080), or leave it out for a region shortcut"), cn)
			}
		}
	case OutputFile:
		need("path", "the path of the file to append Devo lines to")
	}
}

// address applies an output's address: region shortcuts, host checks, and the http URL (an http
// output also takes a full URL in address). It reports whether a was a bare host.
func (w *walker) address(e entry, typ, a string, c *OutputConfig) (isHost bool) {
	lower := strings.ToLower(a)
	switch typ {
	case OutputDevoPlatform:
		if host, ok := devoPlatformRegions[lower]; ok {
			c.Address = host
			return false
		}
	case OutputHTTP:
		c.Address = a
		if u, ok := httpRegions[lower]; ok {
			c.URL = u
			return false
		}
		if strings.Contains(a, "://") {
			w.httpURL(e, a, c)
			return false
		}
	}
	if err := checkHost(a); err != nil {
		w.add(cfgErr(e.path, "%v", err), deref(e.value))
		return false
	}
	c.Address = a
	if typ == OutputHTTP {
		c.URL = "https://" + a
	}
	return true
}

// httpURL checks and applies an http output's endpoint URL.
func (w *walker) httpURL(e entry, u string, c *OutputConfig) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || pu.RawQuery != "" || pu.Fragment != "" || pu.User != nil {
		w.add(cfgErr(e.path, "must be an http(s) URL such as https://http-eu.devo.io, without query or credentials"), deref(e.value))
		return
	}
	c.URL = strings.TrimRight(u, "/")
}

// checkHost checks a bare host name or IP address (no scheme, no port).
func checkHost(a string) error {
	if strings.Contains(a, "://") {
		return fmt.Errorf("%q is a URL; expected a host name or IP address (the port goes in port)", a)
	}
	if strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r == '/' || r == '@' }) {
		return fmt.Errorf("%q is not a host name or IP address", a)
	}
	if _, _, err := net.SplitHostPort(a); err == nil {
		return fmt.Errorf("%q includes a port; put the host in address and the port in port", a)
	}
	return nil
}

// hostname decodes the syslog HOSTNAME override.
func (w *walker) hostname(e entry, dst *string) {
	var h string
	if w.text(e, &h, "a host name for the syslog header") != valid {
		return
	}
	if strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		w.add(cfgErr(e.path, "%q must not contain spaces or control characters (it is one field of the syslog header)", h), deref(e.value))
		return
	}
	*dst = h
}

// ownersOf returns the output types (sorted) whose config accepts key.
func ownersOf(key string) []string {
	var out []string
	for typ, keys := range outputKeys {
		if slices.Contains(keys, key) {
			out = append(out, typ)
		}
	}
	sort.Strings(out)
	return out
}

// sortedKeys returns the config keys of typ, sorted.
func sortedKeys(typ string) []string {
	out := slices.Clone(outputKeys[typ])
	sort.Strings(out)
	return out
}

// sortedRegionKeys returns a region table's shortcuts, sorted.
func sortedRegionKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
