package jsonscan

import (
	"bytes"
	"encoding/json"
)

// KeyIs reports whether quoted, a JSON string token as in the input (quotes and escapes kept),
// denotes the string want. It is quick when quoted has no escapes.
func KeyIs(quoted []byte, want string) bool {
	if len(quoted) == len(want)+2 && string(quoted[1:len(quoted)-1]) == want {
		return true
	}
	if bytes.IndexByte(quoted, '\\') < 0 {
		return false
	}
	got, ok := Unquote(quoted)
	return ok && got == want
}

// Unquote decodes a JSON string token (quotes and escapes as in the input), quickly when it has
// no escapes. It reports false for anything that is not a string token. A token with escapes is
// decoded as encoding/json does (invalid UTF-8 and lone surrogates become U+FFFD); one without is
// returned as is, byte for byte, so that names and hashes taken from it do not depend on UTF-8
// repair.
func Unquote(tok []byte) (string, bool) {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return "", false
	}
	inner := tok[1 : len(tok)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		for _, c := range inner {
			if !strPlain[c] {
				return "", false
			}
		}
		return string(inner), true
	}
	// Escapes are rare in the keys and ids dtfleet reads; encoding/json decodes them exactly.
	var v string
	if err := json.Unmarshal(tok, &v); err != nil {
		return "", false
	}
	return v, true
}
