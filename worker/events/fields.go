package events

import (
	"bytes"
	"math"
	"strconv"

	"github.com/dtfleet/dtfleet/internal/jsonscan"
)

// parseMillis reads an epoch-milliseconds time from a value token: a JSON number, or a string
// holding one (Darktrace types antigena's "updated" as a string). Fractions are truncated.
// It reports false for anything else, including null, and for times not after the epoch.
func parseMillis(tok []byte) (int64, bool) {
	if len(tok) >= 2 && tok[0] == '"' {
		s, ok := jsonscan.Unquote(tok)
		if !ok {
			return 0, false
		}
		tok = bytes.TrimSpace([]byte(s))
	}
	if len(tok) == 0 {
		return 0, false
	}
	if n, err := strconv.ParseInt(string(tok), 10, 64); err == nil {
		return n, n > 0
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	if err != nil || math.IsNaN(f) || f < 1 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}

// parseID reads an integer id (pbid, codeid) from a value token: a JSON integer or a string
// holding one. It returns the id in canonical decimal form.
func parseID(tok []byte) (string, bool) {
	var buf [20]byte
	b, ok := appendID(buf[:0], tok)
	return string(b), ok
}

// appendID appends the canonical decimal of an id token (a JSON integer or a string holding one)
// to dst, so that a key is built in one allocation.
func appendID(dst, tok []byte) ([]byte, bool) {
	if len(tok) >= 2 && tok[0] == '"' {
		s, ok := jsonscan.Unquote(tok)
		if !ok {
			return dst, false
		}
		tok = []byte(s)
	}
	n, err := strconv.ParseInt(string(tok), 10, 64)
	if err != nil {
		return dst, false
	}
	return strconv.AppendInt(dst, n, 10), true
}

// maxTextID bounds a textual id's length.
const maxTextID = 256

// parseTextID reads a textual id (an AI Analyst event's uuid) from a value token: a string of
// 1 to 256 printable ASCII characters other than space, or a JSON integer.
func parseTextID(tok []byte) (string, bool) {
	if len(tok) == 0 {
		return "", false
	}
	if tok[0] != '"' {
		return parseID(tok)
	}
	s, ok := jsonscan.Unquote(tok)
	if !ok || len(s) == 0 || len(s) > maxTextID {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return "", false
		}
	}
	return s, true
}

// appendTextID appends the textual id parseTextID reads from tok to dst, so that a key is built
// in one allocation; a string without escapes (the usual uuid) is checked and copied as is.
func appendTextID(dst, tok []byte) ([]byte, bool) {
	if len(tok) >= 2 && tok[0] == '"' && bytes.IndexByte(tok, '\\') < 0 {
		s := tok[1 : len(tok)-1]
		if len(s) == 0 || len(s) > maxTextID {
			return dst, false
		}
		for _, c := range s {
			if c <= ' ' || c > '~' {
				return dst, false
			}
		}
		return append(dst, s...), true
	}
	id, ok := parseTextID(tok)
	return append(dst, id...), ok
}
