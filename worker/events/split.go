// Package events turns Darktrace API response bodies into the events dtfleet delivers: Split
// streams a body into its events' compact JSON in one pass, and a Processor derives each event's
// dedupe key and time, flattens /status snapshots and obfuscates configured fields. Everything in
// this package is a pure function of its input; nothing here does I/O beyond reading the body.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/dtfleet/dtfleet/internal/config"
)

// Shape is the top-level layout of a service's response bodies.
type Shape int

const (
	// ShapeArray is a top-level array whose elements are the events; a null body holds no events.
	ShapeArray Shape = iota
	// ShapeActions is a /antigena body: a top-level array of actions, or an object whose
	// "actions" array holds the events (the object's other keys, such as devices or
	// connections, are validated and ignored). A null body holds no events.
	ShapeActions
	// ShapeObject is a body that is one event as a whole (the snapshot services).
	ShapeObject
)

// String names the shape.
func (s Shape) String() string {
	switch s {
	case ShapeArray:
		return "array"
	case ShapeActions:
		return "actions"
	case ShapeObject:
		return "object"
	default:
		return fmt.Sprintf("Shape(%d)", int(s))
	}
}

// ShapeFor returns the shape of a service's responses, given a config.Service* name. Unknown
// services are assumed to answer with a top-level array, like most Darktrace endpoints.
func ShapeFor(service string) Shape {
	switch service {
	case config.ServiceAntigena:
		return ShapeActions
	case config.ServiceSummary, config.ServiceStatus:
		return ShapeObject
	default:
		return ShapeArray
	}
}

// ErrMalformed is wrapped by every error caused by a body that is not JSON of the expected shape,
// or is truncated.
var ErrMalformed = errors.New("malformed response body")

// maxDepth bounds nesting, like encoding/json, so hostile input cannot exhaust the stack.
const maxDepth = 10000

// readBufSize is the size of Split's read buffer.
const readBufSize = 64 << 10

// Split streams one response body from r and calls fn with each event's raw JSON, in response
// order, compacted: whitespace outside strings is removed, so the bytes are a single line;
// everything else, including string escapes, is kept byte for byte (as json.Compact does). raw is
// valid only during the call. Memory follows the largest event, not the response.
//
// The whole body is validated as JSON of the given shape: truncated input, trailing garbage,
// non-JSON (an HTML page), bad literals or numbers, unbalanced brackets, raw control characters
// in strings and a scalar where an array is expected are errors wrapping ErrMalformed. A UTF-8
// byte order mark before the body is skipped; strings' UTF-8 is not checked. Because Split
// streams, fn may already have been called for the events before a defect found later in the
// body: a caller must discard a response's events when Split fails.
//
// An error from fn stops the split and is returned as is. An error from r is returned wrapped;
// io.ErrUnexpectedEOF from r also wraps ErrMalformed.
func Split(r io.Reader, shape Shape, fn func(raw []byte) error) error {
	s := splitter{r: r, buf: make([]byte, readBufSize)}
	return s.split(shape, fn)
}

// splitter is Split's single-pass scanner. It copies each event, compacted, into out while
// checking the JSON grammar, refilling buf from r as it goes; buf never holds more than one read.
type splitter struct {
	r     io.Reader
	buf   []byte
	pos   int   // next unread byte in buf
	end   int   // end of valid data in buf
	base  int64 // body offset of buf[0]
	rerr  error // sticky read error; io.EOF at the end of the body
	out   []byte
	depth int
	// discard drops the output at every element boundary, for values that are validated only.
	discard bool
}

func (s *splitter) split(shape Shape, fn func([]byte) error) error {
	// A UTF-8 byte order mark may come first.
	if c, ok := s.peek(); ok && c == 0xEF {
		for _, b := range []byte{0xEF, 0xBB, 0xBF} {
			got, ok := s.next()
			if !ok {
				return s.endErr()
			}
			if got != b {
				s.pos--
				return s.syntaxErr(got, "in byte order mark")
			}
		}
	}
	c, ok := s.skipWS()
	if !ok {
		if s.rerr == io.EOF && s.base+int64(s.pos) == 0 {
			return fmt.Errorf("%w: empty body", ErrMalformed)
		}
		return s.endErr()
	}
	var err error
	switch {
	case c == 'n' && shape != ShapeObject:
		err = s.literal("null")
	case c == '[' && shape != ShapeObject:
		err = s.elements(fn)
	case c == '{' && shape == ShapeActions:
		err = s.actions(fn)
	case c == '{' && shape == ShapeObject:
		s.out = s.out[:0]
		if err = s.object(); err == nil {
			err = fn(s.out)
		}
	case c == '<':
		return fmt.Errorf("%w: body is not JSON (starts with '<', an HTML page?)", ErrMalformed)
	case shape == ShapeObject:
		return s.syntaxErr(c, "looking for a top-level object")
	default:
		return s.syntaxErr(c, "looking for a top-level array")
	}
	if err != nil {
		return err
	}
	if c, ok := s.skipWS(); ok {
		return s.syntaxErr(c, "after the top-level value")
	}
	if s.rerr != io.EOF {
		return s.endErr()
	}
	return nil
}

// elements consumes an array at the top level (or the actions array), calling fn per element.
func (s *splitter) elements(fn func([]byte) error) error {
	s.pos++ // '['
	c, ok := s.skipWS()
	if !ok {
		return s.endErr()
	}
	if c == ']' {
		s.pos++
		return nil
	}
	for {
		s.out = s.out[:0]
		if err := s.value(c); err != nil {
			return err
		}
		if err := fn(s.out); err != nil {
			return err
		}
		if c, ok = s.skipWS(); !ok {
			return s.endErr()
		}
		switch c {
		case ',':
			s.pos++
			if c, ok = s.skipWS(); !ok {
				return s.endErr()
			}
		case ']':
			s.pos++
			return nil
		default:
			return s.syntaxErr(c, "after array element")
		}
	}
}

// actions consumes a /antigena object, calling fn per element of its "actions" array(s) and
// validating the other members without keeping them.
func (s *splitter) actions(fn func([]byte) error) error {
	s.pos++ // '{'
	found := false
	c, ok := s.skipWS()
	if !ok {
		return s.endErr()
	}
	if c == '}' {
		return fmt.Errorf("%w: object without an \"actions\" array", ErrMalformed)
	}
	for {
		if c != '"' {
			return s.syntaxErr(c, "looking for beginning of object key string")
		}
		s.out = s.out[:0]
		if err := s.str(); err != nil {
			return err
		}
		isActions := keyIs(s.out, "actions")
		if c, ok = s.skipWS(); !ok {
			return s.endErr()
		}
		if c != ':' {
			return s.syntaxErr(c, "after object key")
		}
		s.pos++
		if c, ok = s.skipWS(); !ok {
			return s.endErr()
		}
		switch {
		case isActions && c == '[':
			found = true
			if err := s.elements(fn); err != nil {
				return err
			}
		case isActions && c == 'n':
			found = true
			if err := s.literal("null"); err != nil {
				return err
			}
		case isActions:
			return s.syntaxErr(c, "looking for the actions array")
		default:
			s.out = s.out[:0]
			s.discard = true
			err := s.value(c)
			s.discard = false
			if err != nil {
				return err
			}
		}
		if c, ok = s.skipWS(); !ok {
			return s.endErr()
		}
		switch c {
		case ',':
			s.pos++
			if c, ok = s.skipWS(); !ok {
				return s.endErr()
			}
		case '}':
			s.pos++
			if !found {
				return fmt.Errorf("%w: object without an \"actions\" array", ErrMalformed)
			}
			return nil
		default:
			return s.syntaxErr(c, "after object key:value pair")
		}
	}
}

// keyIs reports whether quoted, a JSON string token as in the body, denotes the string want.
func keyIs(quoted []byte, want string) bool {
	if len(quoted) == len(want)+2 && string(quoted[1:len(quoted)-1]) == want {
		return true
	}
	if !containsByte(quoted, '\\') {
		return false
	}
	got, ok := unquote(quoted)
	return ok && got == want
}

// unquote decodes a JSON string token.
func unquote(quoted []byte) (string, bool) {
	var v string
	if err := json.Unmarshal(quoted, &v); err != nil {
		return "", false
	}
	return v, true
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// fill reads the next chunk of the body into buf. It returns false at the end of the body or on
// a read error, which it keeps in rerr.
func (s *splitter) fill() bool {
	if s.rerr != nil {
		return false
	}
	s.base += int64(s.end)
	s.pos, s.end = 0, 0
	for empty := 0; ; empty++ {
		n, err := s.r.Read(s.buf)
		s.end = n
		if err != nil {
			s.rerr = err
		}
		if n > 0 {
			return true
		}
		if err != nil {
			return false
		}
		if empty >= 100 {
			s.rerr = io.ErrNoProgress
			return false
		}
	}
}

// endErr is the error for input that ended (or failed) where more was required.
func (s *splitter) endErr() error {
	off := s.base + int64(s.pos)
	switch {
	case s.rerr == nil || s.rerr == io.EOF:
		return fmt.Errorf("%w: unexpected end of input at offset %d", ErrMalformed, off)
	case errors.Is(s.rerr, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: reading body at offset %d: %w", ErrMalformed, off, s.rerr)
	default:
		return fmt.Errorf("reading body at offset %d: %w", off, s.rerr)
	}
}

// syntaxErr reports the unexpected byte c at the current position.
func (s *splitter) syntaxErr(c byte, context string) error {
	return fmt.Errorf("%w: invalid character %q %s at offset %d", ErrMalformed, c, context, s.base+int64(s.pos))
}

// skipWS skips whitespace and returns the next byte without consuming it; ok is false at the end
// of the input.
func (s *splitter) skipWS() (byte, bool) {
	for {
		for s.pos < s.end {
			c := s.buf[s.pos]
			if c > ' ' || !isSpace(c) {
				return c, true
			}
			s.pos++
		}
		if !s.fill() {
			return 0, false
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

// next consumes and returns one byte.
func (s *splitter) next() (byte, bool) {
	if s.pos >= s.end && !s.fill() {
		return 0, false
	}
	c := s.buf[s.pos]
	s.pos++
	return c, true
}

// peek returns the next byte without consuming it.
func (s *splitter) peek() (byte, bool) {
	if s.pos >= s.end && !s.fill() {
		return 0, false
	}
	return s.buf[s.pos], true
}

// value consumes one JSON value whose first byte, c, has been peeked, appending it to out.
func (s *splitter) value(c byte) error {
	switch c {
	case '{':
		return s.object()
	case '[':
		return s.array()
	case '"':
		return s.str()
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	}
	if c == '-' || c >= '0' && c <= '9' {
		return s.number()
	}
	return s.syntaxErr(c, "looking for beginning of value")
}

func (s *splitter) object() error {
	if s.depth++; s.depth > maxDepth {
		return fmt.Errorf("%w: nested too deeply at offset %d", ErrMalformed, s.base+int64(s.pos))
	}
	s.pos++
	s.out = append(s.out, '{')
	c, ok := s.skipWS()
	if !ok {
		return s.endErr()
	}
	if c == '}' {
		s.pos++
		s.out = append(s.out, '}')
		s.depth--
		return nil
	}
	for {
		if c != '"' {
			return s.syntaxErr(c, "looking for beginning of object key string")
		}
		if err := s.str(); err != nil {
			return err
		}
		if c, ok = s.skipWS(); !ok {
			return s.endErr()
		}
		if c != ':' {
			return s.syntaxErr(c, "after object key")
		}
		s.pos++
		s.out = append(s.out, ':')
		if c, ok = s.skipWS(); !ok {
			return s.endErr()
		}
		if err := s.value(c); err != nil {
			return err
		}
		if s.discard {
			s.out = s.out[:0]
		}
		if c, ok = s.skipWS(); !ok {
			return s.endErr()
		}
		s.pos++
		s.out = append(s.out, c)
		switch c {
		case ',':
			if c, ok = s.skipWS(); !ok {
				return s.endErr()
			}
		case '}':
			s.depth--
			return nil
		default:
			s.pos--
			return s.syntaxErr(c, "after object key:value pair")
		}
	}
}

func (s *splitter) array() error {
	if s.depth++; s.depth > maxDepth {
		return fmt.Errorf("%w: nested too deeply at offset %d", ErrMalformed, s.base+int64(s.pos))
	}
	s.pos++
	s.out = append(s.out, '[')
	c, ok := s.skipWS()
	if !ok {
		return s.endErr()
	}
	if c == ']' {
		s.pos++
		s.out = append(s.out, ']')
		s.depth--
		return nil
	}
	for {
		if err := s.value(c); err != nil {
			return err
		}
		if s.discard {
			s.out = s.out[:0]
		}
		if c, ok = s.skipWS(); !ok {
			return s.endErr()
		}
		s.pos++
		s.out = append(s.out, c)
		switch c {
		case ',':
			if c, ok = s.skipWS(); !ok {
				return s.endErr()
			}
		case ']':
			s.depth--
			return nil
		default:
			s.pos--
			return s.syntaxErr(c, "after array element")
		}
	}
}

// strPlain marks the bytes a string may hold without escaping: not '"', '\\' or a control
// character.
var strPlain = func() (t [256]bool) {
	for i := range t {
		t[i] = i >= 0x20 && i != '"' && i != '\\'
	}
	return t
}()

// str consumes a string token (the opening quote is the next byte) and appends it verbatim.
func (s *splitter) str() error {
	s.pos++
	s.out = append(s.out, '"')
	for {
		buf := s.buf[:s.end]
		i := s.pos
		for i < len(buf) && strPlain[buf[i]] {
			i++
		}
		s.out = append(s.out, buf[s.pos:i]...)
		s.pos = i
		if i == len(buf) {
			if !s.fill() {
				return s.endErr()
			}
			continue
		}
		switch c := buf[i]; c {
		case '"':
			s.pos++
			s.out = append(s.out, '"')
			return nil
		case '\\':
			s.pos++
			e, ok := s.next()
			if !ok {
				return s.endErr()
			}
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.out = append(s.out, '\\', e)
			case 'u':
				s.out = append(s.out, '\\', 'u')
				for range 4 {
					h, ok := s.next()
					if !ok {
						return s.endErr()
					}
					if !isHex(h) {
						s.pos--
						return s.syntaxErr(h, "in \\u hexadecimal character escape")
					}
					s.out = append(s.out, h)
				}
			default:
				s.pos--
				return s.syntaxErr(e, "in string escape code")
			}
		default:
			return s.syntaxErr(c, "in string literal")
		}
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// literal consumes the literal word (true, false or null).
func (s *splitter) literal(word string) error {
	for i := 0; i < len(word); i++ {
		c, ok := s.next()
		if !ok {
			return s.endErr()
		}
		if c != word[i] {
			s.pos--
			return s.syntaxErr(c, "in literal "+word)
		}
	}
	s.out = append(s.out, word...)
	return nil
}

// number consumes a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *splitter) number() error {
	c, _ := s.next()
	s.out = append(s.out, c)
	if c == '-' {
		var ok bool
		if c, ok = s.next(); !ok {
			return s.endErr()
		}
		if !isDigit(c) {
			s.pos--
			return s.syntaxErr(c, "in numeric literal")
		}
		s.out = append(s.out, c)
	}
	if c != '0' {
		s.digits()
	}
	c, ok := s.peek()
	if !ok {
		return nil
	}
	if c == '.' {
		s.pos++
		s.out = append(s.out, '.')
		if err := s.someDigits(); err != nil {
			return err
		}
		if c, ok = s.peek(); !ok {
			return nil
		}
	}
	if c == 'e' || c == 'E' {
		s.pos++
		s.out = append(s.out, c)
		if c, ok = s.peek(); !ok {
			return s.endErr()
		}
		if c == '+' || c == '-' {
			s.pos++
			s.out = append(s.out, c)
		}
		return s.someDigits()
	}
	return nil
}

// digits consumes zero or more digits.
func (s *splitter) digits() {
	for {
		buf := s.buf[:s.end]
		i := s.pos
		for i < len(buf) && isDigit(buf[i]) {
			i++
		}
		s.out = append(s.out, buf[s.pos:i]...)
		s.pos = i
		if i < len(buf) || !s.fill() {
			return
		}
	}
}

// someDigits consumes one or more digits.
func (s *splitter) someDigits() error {
	c, ok := s.peek()
	if !ok {
		return s.endErr()
	}
	if !isDigit(c) {
		return s.syntaxErr(c, "in numeric literal")
	}
	s.digits()
	return nil
}
