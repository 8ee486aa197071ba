package config

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// walker decodes a yaml.Node tree by hand: it expands ${ENV} in scalar values, checks types and
// collects every problem instead of stopping at the first.
type walker struct {
	errs Errors
	// lookupEnv resolves ${NAME}; nil disables expansion (the definitions file).
	lookupEnv func(string) (string, bool)
	baseDir   string
	now       func() time.Time
	defs      *Definitions
}

// add records a problem, attaching the node's line when known.
func (w *walker) add(e *Error, n *yaml.Node) {
	if n != nil && e.Line == 0 {
		e.Line = n.Line
	}
	w.errs = append(w.errs, e)
}

// deref follows aliases (an alias to an alias included).
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 64; i++ {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is absent or an explicit YAML null.
func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe names what a node holds, for "found ..." hints; it never prints the value itself, so
// secrets stay out of messages.
func describe(n *yaml.Node) string {
	n = deref(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!bool":
			return "a boolean"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!timestamp":
			return "a timestamp"
		default:
			return "a string"
		}
	}
	return "an unsupported YAML node"
}

// child joins a key path and a key.
func child(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// entry is one key/value pair of a mapping.
type entry struct {
	key string
	knode,
	value *yaml.Node
	path string
}

// entries returns a mapping's pairs in document order. Duplicate keys and non-scalar keys are
// reported; their later occurrences are dropped.
func (w *walker) entries(n *yaml.Node, path string) []entry {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	seen := make(map[string]bool, len(n.Content)/2)
	out := make([]entry, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			w.add(cfgErr(path, "keys must be plain names, found %s as a key", describe(k)), k)
			continue
		}
		p := child(path, k.Value)
		if k.ShortTag() == "!!merge" {
			w.add(cfgErr(p, "YAML merge keys (<<) are not supported; write the keys out"), k)
			continue
		}
		if seen[k.Value] {
			w.add(cfgErr(p, "duplicate key; each key may appear once"), k)
			continue
		}
		seen[k.Value] = true
		out = append(out, entry{key: k.Value, knode: k, value: v, path: p})
	}
	return out
}

// handler decodes one known key's value.
type handler func(e entry)

// object walks a mapping: every key must be in handlers; unknown keys are reported by
// unknown (or as "unknown key" with the valid keys listed when unknown is nil). It returns the
// keys that were present with a non-null value.
func (w *walker) object(n *yaml.Node, path string, handlers map[string]handler, unknown func(e entry)) map[string]bool {
	present := make(map[string]bool)
	for _, e := range w.entries(n, path) {
		h, ok := handlers[e.key]
		if !ok {
			if unknown != nil {
				unknown(e)
			} else {
				w.unknownKey(e, keysOf(handlers))
			}
			continue
		}
		if !isNull(e.value) {
			present[e.key] = true
		}
		h(e)
	}
	return present
}

// unknownKey reports a key that is not allowed here, suggesting the closest valid key.
func (w *walker) unknownKey(e entry, valid []string) {
	msg := "unknown key"
	if s := suggest(e.key, valid); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	if len(valid) > 0 {
		msg += "; valid keys here: " + strings.Join(valid, ", ")
	}
	w.add(cfgErr(e.path, "%s", msg), e.knode)
}

// keysOf returns a handler table's keys, sorted.
func keysOf(m map[string]handler) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// suggest returns the candidate within edit distance 2 of s, if any.
func suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// scalar is a scalar value after ${ENV} expansion.
type scalar struct {
	node *yaml.Node // the resolved node (a copy when the value was expanded)
	text string
	tag  string
	// fromEnv is true when the text came (partly) from the environment: such a value is accepted
	// as a string whatever it looks like, and parsed for typed keys.
	fromEnv bool
}

// state says what a typed getter found.
type state int

const (
	absent  state = iota // no key, or null: the caller applies its default or "missing" rule
	valid                // the value was decoded
	invalid              // a problem was reported
)

// scalarOf expands and resolves a scalar node. It reports environment problems itself; it
// returns invalid (without reporting) when the node is not a scalar, so that the caller can
// report the type error with the right ID.
func (w *walker) scalarOf(n *yaml.Node, path string) (scalar, state, bool) {
	n = deref(n)
	if isNull(n) {
		return scalar{}, absent, true
	}
	if n.Kind != yaml.ScalarNode {
		return scalar{}, invalid, false
	}
	sc := scalar{node: n, text: n.Value, tag: n.ShortTag()}
	if w.lookupEnv == nil || !strings.Contains(n.Value, "$") {
		return sc, valid, true
	}
	text, changed, err := expandEnv(n.Value, w.lookupEnv)
	if err != nil {
		w.add(cfgErr(path, "%v", err), n)
		return scalar{}, invalid, true
	}
	if !changed {
		return sc, valid, true
	}
	r := &yaml.Node{Kind: yaml.ScalarNode, Value: text, Line: n.Line, Column: n.Column}
	if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0 || n.Tag == "!!str" {
		r.Tag = "!!str"
	}
	sc = scalar{node: r, text: text, tag: r.ShortTag(), fromEnv: true}
	if sc.tag == "!!null" {
		return scalar{}, absent, true
	}
	return sc, valid, true
}

// typeErr builds the error for a value of the wrong type; found describes what was there.
type typeErr func(found string) *Error

// genericType returns a typeErr for an unnumbered rule: "<path>: must be <want>, found <x>".
func genericType(path, want string) typeErr {
	return func(found string) *Error { return cfgErr(path, "must be %s, found %s", want, found) }
}

// seedType returns a typeErr for a numbered rule whose seed message is msg.
func seedType(id int, path, msg string) typeErr {
	return func(found string) *Error { return seedErr(id, path, msg+" (found "+found+")") }
}

// str decodes a string. With strict false, numbers are accepted as their text too (a port-like
// id, a numeric domain); strict keys (the seed's "must be a string" rules) accept only strings.
func (w *walker) str(n *yaml.Node, path string, strict bool, te typeErr) (string, state) {
	sc, st, isScalar := w.scalarOf(n, path)
	if !isScalar {
		w.add(te(describe(n)), deref(n))
		return "", invalid
	}
	if st != valid {
		return "", st
	}
	switch {
	case sc.fromEnv, sc.tag == "!!str", sc.tag == "!!timestamp":
		return sc.text, valid
	case !strict && (sc.tag == "!!int" || sc.tag == "!!float"):
		return sc.text, valid
	}
	w.add(te(describe(sc.node)), sc.node)
	return "", invalid
}

// integer decodes an integer.
func (w *walker) integer(n *yaml.Node, path string, te typeErr) (int, state) {
	sc, st, isScalar := w.scalarOf(n, path)
	if !isScalar {
		w.add(te(describe(n)), deref(n))
		return 0, invalid
	}
	if st != valid {
		return 0, st
	}
	if sc.tag == "!!int" {
		var v int64
		if err := sc.node.Decode(&v); err == nil && v >= math.MinInt32 && v <= math.MaxInt32 {
			return int(v), valid
		}
		w.add(cfgErr(path, "integer out of range"), sc.node)
		return 0, invalid
	}
	if sc.fromEnv {
		if v, err := strconv.ParseInt(strings.TrimSpace(sc.text), 10, 32); err == nil {
			return int(v), valid
		}
		w.add(te("a string from the environment that is not an integer"), sc.node)
		return 0, invalid
	}
	w.add(te(describe(sc.node)), sc.node)
	return 0, invalid
}

// number decodes a finite number (integer or decimal).
func (w *walker) number(n *yaml.Node, path string, te typeErr) (float64, state) {
	sc, st, isScalar := w.scalarOf(n, path)
	if !isScalar {
		w.add(te(describe(n)), deref(n))
		return 0, invalid
	}
	if st != valid {
		return 0, st
	}
	var v float64
	var err error
	switch {
	case sc.tag == "!!int" || sc.tag == "!!float":
		err = sc.node.Decode(&v)
	case sc.fromEnv:
		v, err = strconv.ParseFloat(strings.TrimSpace(sc.text), 64)
	default:
		err = errors.New("not a number")
	}
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		w.add(te(describe(sc.node)), sc.node)
		return 0, invalid
	}
	return v, valid
}

// boolean decodes true or false.
func (w *walker) boolean(n *yaml.Node, path string) (bool, state) {
	te := genericType(path, "true or false")
	sc, st, isScalar := w.scalarOf(n, path)
	if !isScalar {
		w.add(te(describe(n)), deref(n))
		return false, invalid
	}
	if st != valid {
		return false, st
	}
	if sc.tag == "!!bool" || sc.fromEnv {
		switch strings.ToLower(strings.TrimSpace(sc.text)) {
		case "true":
			return true, valid
		case "false":
			return false, valid
		}
	}
	w.add(te(describe(sc.node)), sc.node)
	return false, invalid
}

// strList decodes a list of strings.
func (w *walker) strList(n *yaml.Node, path string) ([]string, state) {
	n = deref(n)
	if isNull(n) {
		return nil, absent
	}
	if n.Kind != yaml.SequenceNode {
		w.add(cfgErr(path, "must be a list of strings, found %s", describe(n)), n)
		return nil, invalid
	}
	out := make([]string, 0, len(n.Content))
	st := valid
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		s, ist := w.str(item, p, false, genericType(p, "a string"))
		switch ist {
		case valid:
			out = append(out, s)
		case absent:
			w.add(cfgErr(p, "empty list item; expected a string"), item)
			st = invalid
		default:
			st = invalid
		}
	}
	return out, st
}

// isMapping reports whether n (after aliases) is a mapping.
func isMapping(n *yaml.Node) bool {
	n = deref(n)
	return n != nil && n.Kind == yaml.MappingNode
}

// isEmptyMapping reports whether n is a mapping without keys.
func isEmptyMapping(n *yaml.Node) bool {
	n = deref(n)
	return n != nil && n.Kind == yaml.MappingNode && len(n.Content) == 0
}
