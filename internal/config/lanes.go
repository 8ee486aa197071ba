package config

import "sort"

// Lane is one enabled (input, service) pair: the unit of planning, ordering and delivery.
type Lane struct {
	Input   string
	Service string
	Svc     Service
	In      *Input
}

// Key is the lane's name, "input.service".
func (l Lane) Key() string { return l.Input + "." + l.Service }

// enabled treats a nil switch as on.
func enabled(b *bool) bool { return b == nil || *b }

// Lanes lists every enabled service of every enabled input, inputs sorted by name and services
// in the order of Services.
func (c *Config) Lanes() []Lane {
	names := make([]string, 0, len(c.Inputs))
	for name := range c.Inputs {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []Lane
	for _, name := range names {
		in := c.Inputs[name]
		if !enabled(in.Enabled) {
			continue
		}
		for _, svc := range Services {
			s, ok := in.Services[svc]
			if !ok || !enabled(s.Enabled) {
				continue
			}
			out = append(out, Lane{Input: name, Service: svc, Svc: s, In: &in})
		}
	}
	return out
}

// EnabledInputs returns the names of the enabled inputs, sorted.
func (c *Config) EnabledInputs() []string {
	var names []string
	for name, in := range c.Inputs {
		if enabled(in.Enabled) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// EnabledOutputs returns the names of the enabled outputs, sorted.
func (c *Config) EnabledOutputs() []string {
	var names []string
	for name, o := range c.Outputs {
		if enabled(o.Enabled) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}
