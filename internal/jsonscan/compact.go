package jsonscan

import (
	"fmt"
	"io"
)

// Compact validates raw as exactly one JSON value (whitespace around it allowed) and returns a new
// compact copy of it, with Split's grammar and compaction rules. Its errors wrap ErrMalformed.
func Compact(raw []byte) ([]byte, error) {
	return CompactLookup(raw, nil, nil)
}

// CompactLookup is Compact that also reads top-level members in the same pass: when the value is
// an object, vals[i] is set to the compact value token of its first member named names[i] (nil
// when absent, or when the value is not an object). Value tokens alias the returned copy; strings
// keep their quotes and escapes. vals must be at least as long as names.
func CompactLookup(raw []byte, names []string, vals [][]byte) ([]byte, error) {
	for i := range names {
		vals[i] = nil
	}
	// One allocation holds the scanner, its visitor and the values it finds (the caller's vals
	// are written only at the end, so they need not escape), besides the output.
	l := &lookup{s: scanner{buf: raw, end: len(raw), rerr: io.EOF, out: make([]byte, 0, len(raw))}}
	s := &l.s
	if len(names) > 0 {
		found := l.found[:0]
		if len(names) > len(l.found) {
			found = make([][]byte, len(names))
		}
		l.f = finder{s: s, names: names, vals: found[:len(names)], want: -1}
		s.v = &l.f
	}
	if err := s.one(); err != nil {
		return nil, fmt.Errorf("compacting: %w", err)
	}
	copy(vals, l.f.vals)
	return s.out, nil
}

// lookup is CompactLookup's scanner and finder, allocated together.
type lookup struct {
	s     scanner
	f     finder
	found [8][]byte
}

// finder is the visitor of CompactLookup: it records the values of the top-level members whose
// keys it is looking for. Its slices of s.out stay valid because a memory scanner's out is never
// reallocated.
type finder struct {
	s     *scanner
	names []string
	vals  [][]byte
	depth int // containers open, the top-level object being depth 1
	want  int // index in names of the current top-level member, or -1
	start int // offset in out of the current top-level member's value
}

func (f *finder) key(start, end int) {
	if f.depth != 1 {
		return
	}
	f.want = -1
	tok := f.s.out[start:end]
	for i, name := range f.names {
		if f.vals[i] == nil && KeyIs(tok, name) {
			f.want = i
			return
		}
	}
}

func (f *finder) open(at int) {
	if f.depth == 1 {
		f.start = at
	}
	f.depth++
}

func (f *finder) close(end int) {
	f.depth--
	if f.depth == 1 {
		f.found(f.start, end)
	}
}

func (f *finder) scalar(start, end int) {
	if f.depth == 1 {
		f.found(start, end)
	}
}

// found records a top-level member's value, if its key is wanted.
func (f *finder) found(start, end int) {
	if f.want >= 0 {
		f.vals[f.want] = f.s.out[start:end:end]
		f.want = -1
	}
}
