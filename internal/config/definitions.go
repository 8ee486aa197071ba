package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed definitions.yaml
var embeddedDefinitions []byte

// EmbeddedDefinitions returns a copy of the built-in definitions file, in the Devo
// collector_definitions shape.
func EmbeddedDefinitions() []byte { return slices.Clone(embeddedDefinitions) }

// Definitions are the internal, per-service facts of the collector (Devo's
// collector_definitions.yaml): endpoints, default tags and windows, persistence versions.
type Definitions struct {
	// RequestPeriodInSeconds is module_globals.request_period_in_seconds, the default poll period.
	RequestPeriodInSeconds int
	// RequestsPerSecond is module_globals.requests_per_second, the default appliance rate limit.
	RequestsPerSecond float64
	// BaseURL is module_properties.base_url, the API root template; "{instance}" in it is replaced
	// by an input's credentials.instance.
	BaseURL string
	// DateFormat is module_properties.date_format as written (a Go layout or a strftime pattern).
	DateFormat string
	// Layout is DateFormat as a Go time layout.
	Layout string
	// Services holds one definition per service name (every name in Services).
	Services map[string]ServiceDefinition
}

// ServiceDefinition is one service's entry under module_properties.services.
type ServiceDefinition struct {
	Endpoint                    string
	DevoTag                     string
	TimeWindowIntervalInMinutes int
	UniqueID                    string
	PersistenceVersion          int
	// RequestPeriodInSeconds is the service's poll period; 0 in the file means module_globals'.
	RequestPeriodInSeconds int
	// Snapshot services have no history: polled once per period, no time window.
	Snapshot bool
}

// LoadDefinitions reads a definitions file; path "" means the embedded definitions. Problems are
// returned as Errors with the Devo collector's IDs 1–19 (and 0 for rules it does not number).
// Keys dtfleet does not use (for example the Devo SDK's requests_limits) are ignored.
func LoadDefinitions(path string) (*Definitions, error) {
	if path == "" {
		return ParseDefinitions(embeddedDefinitions)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading definitions: %w", err)
	}
	return ParseDefinitions(data)
}

// ParseDefinitions decodes and validates a definitions document.
func ParseDefinitions(data []byte) (*Definitions, error) {
	root, err := decodeDocument(data)
	if err != nil {
		return nil, Errors{cfgErr("", "definitions: %v", err)}
	}
	w := &walker{}
	d := w.definitions(root)
	if len(w.errs) > 0 {
		return nil, w.errs
	}
	return d, nil
}

// decodeDocument parses exactly one YAML document into its root node; an empty document yields
// nil.
func decodeDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("parsing YAML: %w", err)
		}
		return nil, fmt.Errorf("parsing YAML: line %d: a second YAML document starts here; the file must hold exactly one", extra.Line)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// ignore is the unknown-key handler of the definitions: keys dtfleet does not use are skipped.
func ignore(entry) {}

// definitions walks the definitions document.
func (w *walker) definitions(root *yaml.Node) *Definitions {
	d := &Definitions{Services: make(map[string]ServiceDefinition, len(Services))}
	if root != nil && !isMapping(root) && !isNull(root) {
		w.add(cfgErr("", "definitions: the document must be a mapping with module_globals and module_properties, found %s", describe(root)), root)
		return d
	}
	var globalsNode, propsNode *yaml.Node
	w.object(root, "", map[string]handler{
		"module_globals":    func(e entry) { globalsNode = e.value },
		"module_properties": func(e entry) { propsNode = e.value },
	}, ignore)

	// module_globals: IDs 1 and 2.
	switch {
	case isNull(globalsNode) || isEmptyMapping(globalsNode):
		w.add(seedErr(1, "module_globals", msgQMissing("module_globals")), globalsNode)
	case !isMapping(globalsNode):
		w.add(seedErr(2, "module_globals", msgQMissing("module_globals")+" (it must be a dictionary, found "+describe(globalsNode)+")"), deref(globalsNode))
	default:
		w.moduleGlobals(globalsNode, d)
	}

	// module_properties: IDs 3–19.
	switch {
	case isNull(propsNode) || isEmptyMapping(propsNode):
		w.add(seedErr(7, "module_properties", msgQMissing("module_properties")), propsNode)
	case !isMapping(propsNode):
		w.add(seedErr(8, "module_properties", msgQNotDict("module_properties")+" (found "+describe(propsNode)+")"), deref(propsNode))
	default:
		w.moduleProperties(propsNode, d)
	}
	return d
}

func (w *walker) moduleGlobals(n *yaml.Node, d *Definitions) {
	const base = "module_globals"
	periodState, rpsState := absent, absent
	w.object(n, base, map[string]handler{
		"request_period_in_seconds": func(e entry) {
			v, st := w.integer(e.value, e.path, genericType(e.path, "a positive integer number of seconds"))
			if st == valid && v <= 0 {
				w.add(cfgErr(e.path, "must be a positive integer number of seconds, found %d", v), e.value)
			}
			d.RequestPeriodInSeconds, periodState = v, st
		},
		"requests_per_second": func(e entry) {
			v, st := w.number(e.value, e.path, genericType(e.path, "a positive number"))
			if st == valid && v <= 0 {
				w.add(cfgErr(e.path, "must be a positive number, found %g", v), e.value)
			}
			d.RequestsPerSecond, rpsState = v, st
		},
	}, ignore)
	if periodState == absent {
		w.add(cfgErr(base+".request_period_in_seconds", "mandatory property is missing or empty; expected the default poll period in seconds"), n)
	}
	if rpsState == absent {
		w.add(cfgErr(base+".requests_per_second", "mandatory property is missing or empty; expected the default requests per second"), n)
	}
}

func (w *walker) moduleProperties(n *yaml.Node, d *Definitions) {
	const base = "module_properties"
	var servicesNode *yaml.Node
	var baseSet, formatSet bool
	w.object(n, base, map[string]handler{
		"base_url": func(e entry) {
			v, st := w.str(e.value, e.path, true, seedType(4, e.path, msgQNotString("base_url")))
			if st == valid && strings.TrimSpace(v) != "" {
				d.BaseURL = v
				baseSet = true
			}
			if st == invalid {
				baseSet = true
			}
		},
		"date_format": func(e entry) {
			v, st := w.str(e.value, e.path, true, seedType(6, e.path, msgQMissing("date_format")+": it must be a string"))
			switch {
			case st == invalid:
				formatSet = true
			case st == valid && strings.TrimSpace(v) != "":
				formatSet = true
				layout, err := goLayout(v)
				if err != nil {
					w.add(seedErr(6, e.path, msgQMissing("date_format")+": "+err.Error()), e.value)
					return
				}
				d.DateFormat, d.Layout = v, layout
			}
		},
		"services": func(e entry) { servicesNode = e.value },
	}, ignore)
	if !baseSet {
		w.add(seedErr(3, base+".base_url", msgQMissing("base_url")), n)
	}
	if !formatSet {
		w.add(seedErr(5, base+".date_format", msgQMissing("date_format")), n)
	}

	sp := base + ".services"
	switch {
	case isNull(servicesNode) || isEmptyMapping(servicesNode):
		w.add(seedErr(7, sp, msgQMissing(sp)), servicesNode)
		return
	case !isMapping(servicesNode):
		w.add(seedErr(8, sp, msgQNotDict(sp)+" (found "+describe(servicesNode)+")"), deref(servicesNode))
		return
	}
	given := make(map[string]*yaml.Node)
	for _, e := range w.entries(servicesNode, sp) {
		if !slices.Contains(Services, e.key) {
			w.add(cfgErr(e.path, "unknown service; dtfleet knows %s", strings.Join(Services, ", ")), e.knode)
			continue
		}
		given[e.key] = e.value
	}
	for _, name := range Services {
		p := sp + "." + name
		sn, ok := given[name]
		switch {
		case !ok || isNull(sn) || isEmptyMapping(sn):
			w.add(seedErr(7, p, msgQMissing(p)), sn)
		case !isMapping(sn):
			w.add(seedErr(8, p, msgQNotDict(p)+" (found "+describe(sn)+")"), deref(sn))
		default:
			d.Services[name] = w.serviceDefinition(sn, p, name)
		}
	}
}

func (w *walker) serviceDefinition(n *yaml.Node, p, name string) ServiceDefinition {
	sd := ServiceDefinition{UniqueID: name}
	var snapshotSet, windowValid bool
	present := w.object(n, p, map[string]handler{
		"endpoint": func(e entry) {
			v, st := w.str(e.value, e.path, true, seedType(10, e.path, msgQNotString(e.path)))
			if st != valid {
				return
			}
			if v == "" {
				w.add(seedErr(9, e.path, msgQMissing(e.path)), e.value)
				return
			}
			if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, "?# \t") {
				w.add(cfgErr(e.path, "must be an API path starting with \"/\" and without query or spaces, found %q", v), e.value)
				return
			}
			sd.Endpoint = v
		},
		"time_window_interval_in_minutes": func(e entry) {
			v, st := w.integer(e.value, e.path, seedType(12, e.path, msgQNotInteger(e.path)))
			if st == valid && v < 0 {
				w.add(seedErr(13, e.path, msgQNegative(e.path)), e.value)
				return
			}
			if v > maxMinutes {
				w.add(cfgErr(e.path, "must be at most %d minutes, found %d", maxMinutes, v), e.value)
				return
			}
			sd.TimeWindowIntervalInMinutes, windowValid = v, st == valid
		},
		"devo_tag": func(e entry) {
			v, st := w.str(e.value, e.path, true, seedType(15, e.path, msgQNotString(e.path)))
			if st != valid {
				return
			}
			if v == "" {
				w.add(seedErr(14, e.path, msgQMissing(e.path)), e.value)
				return
			}
			if err := checkTag(v); err != nil {
				w.add(cfgErr(e.path, "%v", err), e.value)
				return
			}
			sd.DevoTag = v
		},
		"unique_id": func(e entry) {
			v, st := w.str(e.value, e.path, true, seedType(16, e.path, msgQNotString(e.path)))
			if st == valid && v != "" {
				sd.UniqueID = v
			}
		},
		"persistence_version": func(e entry) {
			v, st := w.integer(e.value, e.path, seedType(18, e.path, msgQNotInteger(e.path)))
			if st == valid && v < 0 {
				w.add(seedErr(19, e.path, msgQNegative(e.path)), e.value)
				return
			}
			sd.PersistenceVersion = v
		},
		"request_period_in_seconds": func(e entry) {
			v, st := w.integer(e.value, e.path, genericType(e.path, "a positive integer number of seconds"))
			if st == valid && v <= 0 {
				w.add(cfgErr(e.path, "must be a positive integer number of seconds, found %d", v), e.value)
				return
			}
			sd.RequestPeriodInSeconds = v
		},
		"snapshot": func(e entry) {
			v, st := w.boolean(e.value, e.path)
			sd.Snapshot, snapshotSet = v, st == valid
		},
	}, ignore)
	if !present["endpoint"] {
		w.add(seedErr(9, p+".endpoint", msgQMissing(p+".endpoint")), n)
	}
	if !present["time_window_interval_in_minutes"] {
		w.add(seedErr(11, p+".time_window_interval_in_minutes", msgQMissing(p+".time_window_interval_in_minutes")), n)
	}
	if !present["devo_tag"] {
		w.add(seedErr(14, p+".devo_tag", msgQMissing(p+".devo_tag")), n)
	}
	if !present["persistence_version"] {
		w.add(seedErr(17, p+".persistence_version", msgQMissing(p+".persistence_version")), n)
	}
	if !snapshotSet {
		sd.Snapshot = sd.TimeWindowIntervalInMinutes == 0
	}
	if windowValid && !sd.Snapshot && sd.TimeWindowIntervalInMinutes == 0 {
		w.add(cfgErr(p+".time_window_interval_in_minutes", "must be positive for a windowed service (set snapshot: true for a service without a time window)"), n)
	}
	return sd
}

// goLayout turns a date_format into a Go time layout. A format containing '%' is read as strftime
// (%Y %m %d %H %M %S %f %z %Z %%); anything else must already be a Go layout. The layout must
// round-trip a date and time to the second.
func goLayout(format string) (string, error) {
	layout := format
	if strings.Contains(format, "%") {
		var b strings.Builder
		for i := 0; i < len(format); i++ {
			if format[i] != '%' {
				b.WriteByte(format[i])
				continue
			}
			if i+1 >= len(format) {
				return "", fmt.Errorf("format %q ends with a lone %%", format)
			}
			i++
			switch format[i] {
			case 'Y':
				b.WriteString("2006")
			case 'm':
				b.WriteString("01")
			case 'd':
				b.WriteString("02")
			case 'H':
				b.WriteString("15")
			case 'M':
				b.WriteString("04")
			case 'S':
				b.WriteString("05")
			case 'f':
				b.WriteString("000000")
			case 'z':
				b.WriteString("-0700")
			case 'Z':
				b.WriteString("MST")
			case '%':
				b.WriteString("%")
			default:
				return "", fmt.Errorf("format %q uses %%%c; supported directives are %%Y %%m %%d %%H %%M %%S %%f %%z %%Z %%%%", format, format[i])
			}
		}
		layout = b.String()
	}
	ref := time.Date(2024, 5, 1, 13, 4, 5, 0, time.UTC)
	back, err := time.Parse(layout, ref.Format(layout))
	if err != nil || !back.Equal(ref) {
		return "", fmt.Errorf("format %q must give year, month, day, hour, minute and second (for example 2006-01-02T15:04:05Z or %%Y-%%m-%%dT%%H:%%M:%%SZ)", format)
	}
	return layout, nil
}
