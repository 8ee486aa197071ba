package jsonscan

import (
	"fmt"
	"io"
)

// Shape is the top-level layout of a body for Split.
type Shape struct {
	kind   shapeKind
	member string
}

type shapeKind int

const (
	kindArray shapeKind = iota
	kindWrapped
	kindObject
)

// ShapeArray is a top-level array whose elements are the values Split yields; a null body holds
// none.
var ShapeArray = Shape{kind: kindArray}

// ShapeObject is a body that is one object, yielded whole.
var ShapeObject = Shape{kind: kindObject}

// ShapeWrapped is a top-level array as for ShapeArray, or an object whose member arrays named
// member hold the values (each such member may also be null; there must be at least one). The
// object's other members are validated and ignored. A null body holds no values.
func ShapeWrapped(member string) Shape { return Shape{kind: kindWrapped, member: member} }

// String names the shape.
func (s Shape) String() string {
	switch s.kind {
	case kindArray:
		return "array"
	case kindWrapped:
		return fmt.Sprintf("array or {%q: array}", s.member)
	case kindObject:
		return "object"
	default:
		return fmt.Sprintf("Shape(%d)", int(s.kind))
	}
}

// Split streams one body from r and calls fn with each value the shape yields, in body order,
// compacted: whitespace outside strings is removed, so the bytes are a single line; everything
// else, including string escapes, is kept byte for byte (as json.Compact does). raw is valid only
// during the call. Memory follows the largest value, not the body.
//
// The whole body is validated as JSON of the given shape: truncated input, trailing garbage,
// non-JSON (an HTML page), bad literals or numbers, unbalanced brackets, raw control characters
// in strings and a scalar where an array is expected are errors wrapping ErrMalformed. A UTF-8
// byte order mark before the body is skipped; strings' UTF-8 is not checked. Because Split
// streams, fn may already have been called for values before a defect found later in the body: a
// caller must discard a body's values when Split fails.
//
// An error from fn stops the split and is returned as is. An error from r is returned wrapped;
// io.ErrUnexpectedEOF from r also wraps ErrMalformed.
//
// Options bound it further (MaxValue).
func Split(r io.Reader, shape Shape, fn func(raw []byte) error, opts ...Option) error {
	s := scanner{r: r, buf: make([]byte, readBufSize)}
	for _, o := range opts {
		o(&s)
	}
	return s.split(shape, fn)
}

// SplitLookup is Split that also reads top-level members in the same pass, as CompactLookup does
// for one value: fn gets, with each value raw, vals, where vals[i] is the compact value token of
// raw's first top-level member named names[i], or nil when it has none (or raw is not an object).
// The tokens alias raw and, like raw and vals itself, are valid only during the call. Everything
// else is as for Split.
func SplitLookup(r io.Reader, shape Shape, names []string, fn func(raw []byte, vals [][]byte) error, opts ...Option) error {
	s := scanner{r: r, buf: make([]byte, readBufSize)}
	for _, o := range opts {
		o(&s)
	}
	// The finder and the vals handed to fn live as long as the split: one allocation per body.
	f := &finder{s: &s, names: names, spans: make([]span, len(names)), want: -1}
	vals := make([][]byte, len(names))
	s.v, s.look = f, f
	return s.split(shape, func(raw []byte) error {
		f.vals(raw, vals)
		return fn(raw, vals)
	})
}

// Option changes how Split scans.
type Option func(*scanner)

// MaxValue bounds the memory one value may take: a value whose compact form is longer than max
// bytes is scanned in full and validated, but not kept, and tooLarge is called instead of fn with
// its index among the values the body yields (counted from 0, over every member array of a
// wrapped body) and its compact size. Memory then follows max, not the largest value. An error
// from tooLarge stops the split and is returned as is; a nil tooLarge drops such values
// silently. A max of 0 or less leaves values unbounded.
func MaxValue(max int, tooLarge func(index int, size int64) error) Option {
	return func(s *scanner) {
		if max > 0 {
			s.limit, s.tooLarge = max, nil
			if tooLarge != nil {
				s.tooLarge = func(index int, size int64, _ []byte) error { return tooLarge(index, size) }
			}
		}
	}
}

// MaxValueHead is MaxValue that also hands tooLarge the start of the value's compact form, at
// most headLen bytes (fewer when the value's output was dropped earlier, at a read boundary):
// enough for a caller to name the value by a field that comes before its bulk. head is valid
// only during the call. Memory still follows max plus headLen, not the value.
func MaxValueHead(max, headLen int, tooLarge func(index int, size int64, head []byte) error) Option {
	return func(s *scanner) {
		if max > 0 {
			s.limit, s.tooLarge, s.headMax = max, tooLarge, headLen
		}
	}
}

// begin starts the output of the next value Split yields.
func (s *scanner) begin() {
	s.out, s.spilled = s.out[:0], 0
	if s.look != nil {
		s.look.reset()
	}
}

// emit hands the value just scanned into out to fn, or to tooLarge when it outgrew the limit.
func (s *scanner) emit(fn func([]byte) error) error {
	i := s.index
	s.index++
	if s.limit > 0 && (s.spilled > 0 || len(s.out) > s.limit) {
		size := s.spilled + int64(len(s.out))
		head := s.head
		if s.spilled == 0 {
			head = s.out[:min(len(s.out), s.headMax)]
		}
		defer func() { s.out, s.head = s.out[:0], s.head[:0] }()
		if s.tooLarge == nil {
			return nil
		}
		return s.tooLarge(i, size, head)
	}
	return fn(s.out)
}

func (s *scanner) split(shape Shape, fn func([]byte) error) error {
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
	case c == 'n' && shape.kind != kindObject:
		err = s.literal("null")
	case c == '[' && shape.kind != kindObject:
		err = s.elements(fn)
	case c == '{' && shape.kind == kindWrapped:
		err = s.wrapped(shape.member, fn)
	case c == '{' && shape.kind == kindObject:
		s.begin()
		if err = s.object(); err == nil {
			err = s.emit(fn)
		}
	case c == '<':
		return fmt.Errorf("%w: body is not JSON (starts with '<', an HTML page?)", ErrMalformed)
	case shape.kind == kindObject:
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

// elements consumes an array at the top level (or a wrapped array), calling fn per element.
func (s *scanner) elements(fn func([]byte) error) error {
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
		s.begin()
		if err := s.value(c); err != nil {
			return err
		}
		if err := s.emit(fn); err != nil {
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

// wrapped consumes an object, calling fn per element of its member arrays (or nulls) and
// validating the other members without keeping them.
func (s *scanner) wrapped(member string, fn func([]byte) error) error {
	s.pos++ // '{'
	found := false
	c, ok := s.skipWS()
	if !ok {
		return s.endErr()
	}
	if c == '}' {
		return fmt.Errorf("%w: object without a %q array", ErrMalformed, member)
	}
	for {
		if c != '"' {
			return s.syntaxErr(c, "looking for beginning of object key string")
		}
		s.out = s.out[:0]
		if err := s.str(); err != nil {
			return err
		}
		isMember := KeyIs(s.out, member)
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
		case isMember && c == '[':
			found = true
			if err := s.elements(fn); err != nil {
				return err
			}
		case isMember && c == 'n':
			found = true
			if err := s.literal("null"); err != nil {
				return err
			}
		case isMember:
			return s.syntaxErr(c, "looking for the "+member+" array")
		default:
			// Another member, validated only: its values are nobody's top-level members.
			s.out = s.out[:0]
			s.discard, s.v = true, nil
			err := s.value(c)
			s.discard = false
			if s.look != nil {
				s.v = s.look
			}
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
				return fmt.Errorf("%w: object without a %q array", ErrMalformed, member)
			}
			return nil
		default:
			return s.syntaxErr(c, "after object key:value pair")
		}
	}
}
