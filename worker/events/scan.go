package events

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// errNotObject is returned by lookup for a value that is not an object.
var errNotObject = errors.New("event is not a JSON object")

// compactCopy validates raw as exactly one JSON value (surrounding whitespace allowed) and
// returns a new compact copy of it, with the grammar and compaction rules of Split.
func compactCopy(raw []byte) ([]byte, error) {
	s := splitter{buf: raw, end: len(raw), rerr: io.EOF, out: make([]byte, 0, len(raw))}
	c, ok := s.skipWS()
	if !ok {
		return nil, fmt.Errorf("%w: empty event", ErrMalformed)
	}
	if err := s.value(c); err != nil {
		return nil, err
	}
	if c, ok := s.skipWS(); ok {
		return nil, s.syntaxErr(c, "after the event's value")
	}
	return s.out, nil
}

// lookup scans the top-level members of the JSON object raw once, without decoding it, and stores
// in vals[i] the value token of the member named names[i] (nil when absent; the first occurrence
// wins). Value tokens are as in raw: strings keep their quotes and escapes. It stops as soon as
// every name is found. raw must be a JSON object; lookup checks only the structure it walks.
func lookup(raw []byte, names []string, vals [][]byte) error {
	for i := range vals {
		vals[i] = nil
	}
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return errNotObject
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return nil
	}
	remaining := len(names)
	for {
		if i >= len(raw) || raw[i] != '"' {
			return errTruncatedEvent
		}
		keyEnd, err := skipString(raw, i)
		if err != nil {
			return err
		}
		key := raw[i:keyEnd]
		i = skipSpace(raw, keyEnd)
		if i >= len(raw) || raw[i] != ':' {
			return errTruncatedEvent
		}
		i = skipSpace(raw, i+1)
		valEnd, err := skipValue(raw, i)
		if err != nil {
			return err
		}
		for j, name := range names {
			if vals[j] == nil && keyIs(key, name) {
				vals[j] = raw[i:valEnd]
				remaining--
			}
		}
		if remaining == 0 {
			return nil
		}
		i = skipSpace(raw, valEnd)
		if i >= len(raw) {
			return errTruncatedEvent
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case '}':
			return nil
		default:
			return errTruncatedEvent
		}
	}
}

// errTruncatedEvent is lookup's error for an object it cannot walk.
var errTruncatedEvent = fmt.Errorf("%w: truncated or invalid event object", ErrMalformed)

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && isSpace(raw[i]) {
		i++
	}
	return i
}

// skipString returns the index just past the string token starting at raw[i] (a quote).
func skipString(raw []byte, i int) (int, error) {
	j := i + 1
	for {
		k := bytes.IndexByte(raw[j:], '"')
		if k < 0 {
			return 0, errTruncatedEvent
		}
		j += k
		// The quote is escaped when an odd number of backslashes precede it.
		n := 0
		for b := j - 1; b > i && raw[b] == '\\'; b-- {
			n++
		}
		j++
		if n%2 == 0 {
			return j, nil
		}
	}
}

// skipValue returns the index just past the value starting at raw[i].
func skipValue(raw []byte, i int) (int, error) {
	if i >= len(raw) {
		return 0, errTruncatedEvent
	}
	switch raw[i] {
	case '"':
		return skipString(raw, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(raw); j++ {
			switch raw[j] {
			case '"':
				end, err := skipString(raw, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errTruncatedEvent
	default:
		j := i
		for j < len(raw) && !isDelim(raw[j]) {
			j++
		}
		if j == i {
			return 0, errTruncatedEvent
		}
		return j, nil
	}
}

func isDelim(c byte) bool {
	return c == ',' || c == '}' || c == ']' || c == ':' || isSpace(c)
}

// parseMillis reads an epoch-milliseconds time from a value token: a JSON number, or a string
// holding one (Darktrace types antigena's "updated" as a string). Fractions are truncated.
// It reports false for anything else, including null, and for times not after the epoch.
func parseMillis(tok []byte) (int64, bool) {
	if len(tok) >= 2 && tok[0] == '"' {
		s, ok := unquoteToken(tok)
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
	if len(tok) >= 2 && tok[0] == '"' {
		s, ok := unquoteToken(tok)
		if !ok {
			return "", false
		}
		tok = []byte(s)
	}
	n, err := strconv.ParseInt(string(tok), 10, 64)
	if err != nil {
		return "", false
	}
	return strconv.FormatInt(n, 10), true
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
	s, ok := unquoteToken(tok)
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

// unquoteToken decodes a string token, quickly when it has no escapes.
func unquoteToken(tok []byte) (string, bool) {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return "", false
	}
	if !containsByte(tok, '\\') {
		return string(tok[1 : len(tok)-1]), true
	}
	return unquote(tok)
}
