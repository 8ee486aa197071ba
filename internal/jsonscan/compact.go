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
	// One allocation holds the scanner, its visitor and the spans it finds (the caller's vals
	// are written only at the end, so they need not escape), besides the output.
	l := &lookup{s: scanner{buf: raw, end: len(raw), rerr: io.EOF, out: make([]byte, 0, len(raw))}}
	s := &l.s
	if len(names) > 0 {
		spans := l.spans[:0]
		if len(names) > len(l.spans) {
			spans = make([]span, len(names))
		}
		l.f = finder{s: s, names: names, spans: spans[:len(names)], want: -1}
		s.v = &l.f
	}
	if err := s.one(); err != nil {
		return nil, fmt.Errorf("compacting: %w", err)
	}
	l.f.vals(s.out, vals)
	return s.out, nil
}

// lookup is CompactLookup's scanner and finder, allocated together.
type lookup struct {
	s     scanner
	f     finder
	spans [8]span
}

// span is the offsets in a scanner's out of a value token found; end 0 means none (a token is
// never empty).
type span struct{ start, end int }

// finder is the visitor that records the spans of the top-level members of one value whose keys
// it is looking for. It keeps offsets, not slices, because a streaming scanner's out may be
// reallocated while the value is scanned. It ignores a value whose output the scanner spilled
// (see scanner.limit): that value is never handed on, and its offsets are meaningless.
type finder struct {
	s     *scanner
	names []string
	spans []span
	depth int // containers open, the top-level object being depth 1
	want  int // index in names of the current top-level member, or -1
	start int // offset in out of the current top-level member's value
}

// reset prepares f for the next value.
func (f *finder) reset() {
	clear(f.spans)
	f.depth, f.want = 0, -1
}

// vals sets vals[i] to the token of names[i] in out, the scanner's output for the value, or nil.
func (f *finder) vals(out []byte, vals [][]byte) {
	for i, sp := range f.spans {
		if sp.end == 0 {
			vals[i] = nil
			continue
		}
		vals[i] = out[sp.start:sp.end:sp.end]
	}
}

func (f *finder) key(start, end int) {
	if f.depth != 1 || f.s.spilled > 0 {
		return
	}
	f.want = -1
	tok := f.s.out[start:end]
	for i, name := range f.names {
		if f.spans[i].end == 0 && KeyIs(tok, name) {
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
		if f.s.spilled == 0 {
			f.spans[f.want] = span{start, end}
		}
		f.want = -1
	}
}
