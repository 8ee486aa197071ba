package jsonscan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrMalformed is wrapped by every error caused by input that is not JSON (of the expected shape),
// or is truncated.
var ErrMalformed = errors.New("malformed JSON")

// MaxDepth bounds nesting, like encoding/json, so hostile input cannot exhaust the stack.
const MaxDepth = 10000

// readBufSize is the size of Split's read buffer.
const readBufSize = 64 << 10

// scanner is the package's one JSON grammar: a single-pass, validating scanner that copies each
// value it consumes, compacted, into out. It reads either from r, refilling buf as it goes (buf
// never holds more than one read), or from a buffer given whole (r nil, rerr io.EOF).
//
// Compaction only removes bytes, so when out starts empty with a capacity of at least the input's
// length it is never reallocated: slices of out taken during the scan stay valid, which visitors
// rely on.
type scanner struct {
	r     io.Reader
	buf   []byte
	pos   int   // next unread byte in buf
	end   int   // end of valid data in buf
	base  int64 // input offset of buf[0]
	rerr  error // sticky read error; io.EOF at the end of the input
	out   []byte
	depth int
	// discard drops the output at every element boundary, for values that are validated only.
	discard bool
	// limit, when positive, bounds out: a value that outgrows it is scanned on with its output
	// dropped at each refill (fill), its dropped bytes counted in spilled. Split's values only.
	limit    int
	spilled  int64
	tooLarge func(index int, size int64, head []byte) error
	index    int // values Split has yielded (or reported too large) so far
	// headMax, when positive, is how much of a too-large value's compact form is kept in head
	// (its start, taken when its output is first dropped) for tooLarge: enough to read the key
	// of an event whose key comes before its bulk.
	headMax int
	head    []byte
	// v, when not nil, observes every value as it is consumed (see visitor). Split leaves it nil.
	v visitor
	// look is SplitLookup's finder (also v), reset for every value Split yields.
	look *finder
}

// visitor observes the structure a scanner consumes. Offsets index the scanner's out buffer:
// open is called with the offset of a '{' or '[' just appended, close with the offset just past
// the matching '}' or ']', key with an object key token's span, scalar with a string, number or
// literal token's span. Calls nest like the JSON: key precedes its member's value.
type visitor interface {
	open(at int)
	key(start, end int)
	scalar(start, end int)
	close(end int)
}

// newMemScanner returns a scanner over data held whole, with an out buffer that is never
// reallocated (see scanner).
func newMemScanner(data []byte) *scanner {
	return &scanner{buf: data, end: len(data), rerr: io.EOF, out: make([]byte, 0, len(data))}
}

// one consumes exactly one JSON value, with surrounding whitespace, from the whole input.
func (s *scanner) one() error {
	c, ok := s.skipWS()
	if !ok {
		return fmt.Errorf("%w: empty input", ErrMalformed)
	}
	if err := s.value(c); err != nil {
		return err
	}
	if c, ok := s.skipWS(); ok {
		return s.syntaxErr(c, "after the top-level value")
	}
	return nil
}

// fill reads the next chunk of the body into buf. It returns false at the end of the body or on
// a read error, which it keeps in rerr.
func (s *scanner) fill() bool {
	if s.rerr != nil {
		return false
	}
	// Output grows by at most what the previous read held, so dropping it here, once per read,
	// bounds it by limit plus one read without a check in the per-byte loops.
	if s.discard || (s.limit > 0 && len(s.out) > s.limit) {
		if s.spilled == 0 && s.headMax > 0 && !s.discard {
			s.head = append(s.head[:0], s.out[:min(len(s.out), s.headMax)]...)
		}
		s.spilled += int64(len(s.out))
		s.out = s.out[:0]
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
func (s *scanner) endErr() error {
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
func (s *scanner) syntaxErr(c byte, context string) error {
	return fmt.Errorf("%w: invalid character %q %s at offset %d", ErrMalformed, c, context, s.base+int64(s.pos))
}

// skipWS skips whitespace and returns the next byte without consuming it; ok is false at the end
// of the input.
func (s *scanner) skipWS() (byte, bool) {
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
func (s *scanner) next() (byte, bool) {
	if s.pos >= s.end && !s.fill() {
		return 0, false
	}
	c := s.buf[s.pos]
	s.pos++
	return c, true
}

// peek returns the next byte without consuming it.
func (s *scanner) peek() (byte, bool) {
	if s.pos >= s.end && !s.fill() {
		return 0, false
	}
	return s.buf[s.pos], true
}

// value consumes one JSON value whose first byte, c, has been peeked, appending it to out.
func (s *scanner) value(c byte) error {
	start := len(s.out)
	var err error
	switch c {
	case '{':
		return s.object()
	case '[':
		return s.array()
	case '"':
		err = s.str()
	case 't':
		err = s.literal("true")
	case 'f':
		err = s.literal("false")
	case 'n':
		err = s.literal("null")
	default:
		if c != '-' && (c < '0' || c > '9') {
			return s.syntaxErr(c, "looking for beginning of value")
		}
		err = s.number()
	}
	if err == nil && s.v != nil {
		s.v.scalar(start, len(s.out))
	}
	return err
}

func (s *scanner) object() error {
	if s.depth++; s.depth > MaxDepth {
		return fmt.Errorf("%w: nested too deeply at offset %d", ErrMalformed, s.base+int64(s.pos))
	}
	s.pos++
	s.out = append(s.out, '{')
	if s.v != nil {
		s.v.open(len(s.out) - 1)
	}
	c, ok := s.skipWS()
	if !ok {
		return s.endErr()
	}
	if c == '}' {
		s.pos++
		s.out = append(s.out, '}')
		s.depth--
		if s.v != nil {
			s.v.close(len(s.out))
		}
		return nil
	}
	for {
		if c != '"' {
			return s.syntaxErr(c, "looking for beginning of object key string")
		}
		keyStart := len(s.out)
		if err := s.str(); err != nil {
			return err
		}
		if s.v != nil {
			s.v.key(keyStart, len(s.out))
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
			if s.v != nil {
				s.v.close(len(s.out))
			}
			return nil
		default:
			s.pos--
			return s.syntaxErr(c, "after object key:value pair")
		}
	}
}

func (s *scanner) array() error {
	if s.depth++; s.depth > MaxDepth {
		return fmt.Errorf("%w: nested too deeply at offset %d", ErrMalformed, s.base+int64(s.pos))
	}
	s.pos++
	s.out = append(s.out, '[')
	if s.v != nil {
		s.v.open(len(s.out) - 1)
	}
	c, ok := s.skipWS()
	if !ok {
		return s.endErr()
	}
	if c == ']' {
		s.pos++
		s.out = append(s.out, ']')
		s.depth--
		if s.v != nil {
			s.v.close(len(s.out))
		}
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
			if s.v != nil {
				s.v.close(len(s.out))
			}
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

// plainWord reports whether all eight bytes of w are strPlain: none is '"', '\\' or below 0x20.
// (x - 0x01…) &^ x has a byte's high bit set where x has a zero byte, and subtracting 0x20… does
// so for a byte below 0x20; a borrow can only spread above a byte already found, so the test is
// exact. Bytes of 0x80 and above are plain, and &^ w keeps their own high bit out.
func plainWord(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := w ^ ('"' * ones)
	b := w ^ ('\\' * ones)
	return ((w-0x20*ones)|(q-ones)|(b-ones))&^w&highs == 0
}

// str consumes a string token (the opening quote is the next byte) and appends it verbatim.
func (s *scanner) str() error {
	s.pos++
	s.out = append(s.out, '"')
	for {
		buf := s.buf[:s.end]
		i := s.pos
		// Skip plain bytes eight at a time (see plainWord), then one at a time up to the end of
		// the run.
		for i+8 <= len(buf) && plainWord(binary.LittleEndian.Uint64(buf[i:])) {
			i += 8
		}
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
func (s *scanner) literal(word string) error {
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
func (s *scanner) number() error {
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
func (s *scanner) digits() {
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
func (s *scanner) someDigits() error {
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
