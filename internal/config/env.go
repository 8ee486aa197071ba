package config

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// expandEnv replaces ${NAME} and ${NAME:-default} in s with the environment's values; "$${"
// writes a literal "${". A variable that is unset (or empty, for the :- form) without a default is
// an error naming the variable. changed reports whether anything was substituted.
func expandEnv(s string, lookup func(string) (string, bool)) (out string, changed bool, err error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' {
			b.WriteByte(c)
			i++
			continue
		}
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			i += 3
			changed = true
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(c)
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", false, errors.New(`unterminated "${" in value; write ${NAME} or ${NAME:-default}, or "$${" for a literal "${"`)
		}
		expr := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			return "", false, fmt.Errorf("invalid environment variable name %q in ${...}; expected letters, digits and '_', not starting with a digit", name)
		}
		v, ok := lookup(name)
		switch {
		case hasDef && (!ok || v == ""):
			v = def
		case !ok:
			return "", false, fmt.Errorf("environment variable %s is not set; set it or write ${%s:-default}", name, name)
		}
		b.WriteString(v)
		changed = true
		i += 2 + end + 1
	}
	return b.String(), changed, nil
}

// validEnvName reports whether s is a POSIX-style environment variable name.
func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// protectEnv hides every ${...} (and $${...}) expression of a document behind a plain-word
// placeholder before YAML parsing, so that ${NAME} works even where YAML gives '{' and '}' a
// meaning (inside a flow mapping such as `credentials: {private_token: ${DT_PRIVATE_TOKEN}}`).
// The returned replacer puts the expressions back into scalar values after parsing; expansion
// itself happens later, per key, so that errors name the key. It returns nil when there is
// nothing to protect.
func protectEnv(data []byte) ([]byte, *strings.Replacer) {
	if !bytes.Contains(data, []byte("${")) {
		return data, nil
	}
	prefix := "dtfleetenv"
	for i := 0; bytes.Contains(data, []byte(prefix)); i++ {
		prefix = "dtfleetenv" + strconv.Itoa(i) + "q"
	}
	var out bytes.Buffer
	out.Grow(len(data))
	var pairs []string
	for i := 0; i < len(data); {
		start := i
		switch {
		case bytes.HasPrefix(data[i:], []byte("$${")):
			i += 3
		case bytes.HasPrefix(data[i:], []byte("${")):
			i += 2
		default:
			out.WriteByte(data[i])
			i++
			continue
		}
		end := bytes.IndexAny(data[i:], "}\n")
		if end < 0 || data[i+end] != '}' {
			out.Write(data[start:i]) // unterminated: left for the expansion to report
			continue
		}
		i += end + 1
		ph := prefix + "x" + strconv.Itoa(len(pairs)/2) + "x"
		pairs = append(pairs, ph, string(data[start:i]))
		out.WriteString(ph)
	}
	if len(pairs) == 0 {
		return data, nil
	}
	return out.Bytes(), strings.NewReplacer(pairs...)
}

// restoreEnv puts protected ${...} expressions back into every scalar of the tree.
func restoreEnv(n *yaml.Node, r *strings.Replacer, depth int) {
	if n == nil || r == nil || depth > 10000 {
		return
	}
	if n.Kind == yaml.ScalarNode {
		n.Value = r.Replace(n.Value)
		return
	}
	for _, c := range n.Content {
		restoreEnv(c, r, depth+1)
	}
}
