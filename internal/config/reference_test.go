package config

import (
	"bufio"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestReadmeKeysTable keeps the README's "Keys and defaults" table and the configuration structs
// in step: every yaml key of Config (found by reflection) must be documented, and every key the
// table names must exist. A map in the structs (outputs, inputs, services) is a placeholder
// segment that the table writes as <name> or <service>, or as a concrete name such as
// modelbreaches for a key that applies to one service only.
func TestReadmeKeysTable(t *testing.T) {
	t.Parallel()
	leaves, nodes := configKeys(reflect.TypeFor[Config](), "")
	if len(leaves) < 40 {
		t.Fatalf("found only %d configuration keys by reflection; the walk is broken: %v", len(leaves), leaves)
	}
	documented, err := readmeKeys("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(documented) < 20 {
		t.Fatalf("found only %d keys in the README table; its format changed: %v", len(documented), documented)
	}

	for _, leaf := range leaves {
		if !slices.ContainsFunc(documented, func(d string) bool { return keyMatches(leaf, d) }) {
			t.Errorf("configuration key %s is not documented in README.md's \"Keys and defaults\" table", leaf)
		}
	}
	all := append(slices.Clone(leaves), nodes...)
	for _, d := range documented {
		if !slices.ContainsFunc(all, func(k string) bool { return keyMatches(k, d) }) {
			t.Errorf("README.md's \"Keys and defaults\" table documents %s, which is no configuration key", d)
		}
	}
}

// TestKeyMatches pins the matching rules the reference test relies on, so that a rule that
// matches everything cannot make it pass.
func TestKeyMatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key, doc string
		want     bool
	}{
		{"globals.id", "globals.id", true},
		{"globals.id", "globals.name", false},
		{"inputs.*.enabled", "inputs.<name>.enabled", true},
		{"inputs.*.services.*.look_back_in_minutes", "inputs.<name>.services.modelbreaches.look_back_in_minutes", true},
		{"inputs.*.services.*.enabled", "inputs.<name>.enabled", false},
		{"nats.tls.ca_file", "nats.<x>.ca_file", false},
		{"nats.tls.ca_file", "nats.tls", false},
	}
	for _, tt := range tests {
		if got := keyMatches(tt.key, tt.doc); got != tt.want {
			t.Errorf("keyMatches(%q, %q) = %v, want %v", tt.key, tt.doc, got, tt.want)
		}
	}
	if got := expandBraces("nats.tls.{ca_file,cert_file}"); !slices.Equal(got, []string{"nats.tls.ca_file", "nats.tls.cert_file"}) {
		t.Errorf("expandBraces = %v", got)
	}
}

// configKeys walks a struct type's yaml tags. It returns the leaf keys (values that are not
// structs) and the inner nodes (sections and map entries), with "*" for a map's key.
func configKeys(typ reflect.Type, prefix string) (leaves, nodes []string) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Map {
			nodes = append(nodes, key, key+".*")
			key, ft = key+".*", ft.Elem()
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() == typ.PkgPath() {
			nodes = append(nodes, key)
			l, n := configKeys(ft, key)
			leaves, nodes = append(leaves, l...), append(nodes, n...)
			continue
		}
		leaves = append(leaves, key)
	}
	return leaves, nodes
}

// keyMatches reports whether the documented key doc names the struct key key: the same segments,
// where a "*" of key stands for any one segment of doc and a "<...>" placeholder of doc matches
// only a "*".
func keyMatches(key, doc string) bool {
	ks, ds := strings.Split(key, "."), strings.Split(doc, ".")
	if len(ks) != len(ds) {
		return false
	}
	for i := range ks {
		placeholder := strings.HasPrefix(ds[i], "<") && strings.HasSuffix(ds[i], ">")
		switch {
		case ks[i] == "*":
		case placeholder || ks[i] != ds[i]:
			return false
		}
	}
	return true
}

// readmeKeys returns the keys the README's "Keys and defaults" table (the first table after that
// heading) names in its first column: every `backticked` key there, with {a,b} alternatives
// expanded.
func readmeKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var keys []string
	in, table := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "### Keys and defaults"):
			in = true
			continue
		case !in:
			continue
		case strings.HasPrefix(line, "|"):
			table = true
		case table:
			// The first line after the table ends it.
			in = false
			continue
		}
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		first := cells[1]
		for {
			_, rest, ok := strings.Cut(first, "`")
			if !ok {
				break
			}
			k, after, ok := strings.Cut(rest, "`")
			if !ok {
				break
			}
			keys = append(keys, expandBraces(k)...)
			first = after
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Strings(keys)
	return slices.Compact(keys), nil
}

// expandBraces expands one {a,b,c} group: "x.{a,b}" is "x.a" and "x.b".
func expandBraces(k string) []string {
	i, j := strings.Index(k, "{"), strings.Index(k, "}")
	if i < 0 || j < i {
		return []string{k}
	}
	var out []string
	for alt := range strings.SplitSeq(k[i+1:j], ",") {
		out = append(out, k[:i]+strings.TrimSpace(alt)+k[j+1:])
	}
	return out
}
