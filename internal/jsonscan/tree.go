package jsonscan

import "fmt"

// Kind is the kind of a Node.
type Kind byte

// The kinds of Node.
const (
	// KindScalar is a string, number, true, false or null, held as its token.
	KindScalar Kind = 0
	// KindObject is an object, held as its members in order (duplicates kept).
	KindObject Kind = '{'
	// KindArray is an array, held as its elements.
	KindArray Kind = '['
)

// Node is one JSON value held in source order, with scalar tokens kept verbatim, so that a value
// can be edited (obfuscated, flattened) and re-encoded without changing its key order, its numbers
// or its string escapes.
type Node struct {
	Kind Kind
	// Raw is a scalar's token; strings keep their quotes and escapes.
	Raw []byte
	// Members are an object's members.
	Members []Member
	// Elems are an array's elements.
	Elems []Node
}

// Member is one key/value pair of an object; Key is the quoted key token as in the input.
type Member struct {
	Key []byte
	Val Node
}

// Parse validates raw as exactly one JSON value (whitespace around it allowed), with Split's
// grammar, and returns its tree. Tokens are compact and alias one new copy of raw, not raw itself.
// Its errors wrap ErrMalformed.
func Parse(raw []byte) (Node, error) {
	s := newMemScanner(raw)
	b := &builder{s: s}
	s.v = b
	if err := s.one(); err != nil {
		return Node{}, fmt.Errorf("parsing: %w", err)
	}
	return b.root, nil
}

// builder is the visitor of Parse. Its slices of s.out stay valid because a memory scanner's out
// is never reallocated.
type builder struct {
	s     *scanner
	stack []Node   // open containers, innermost last
	keys  [][]byte // per open container, the key awaiting its value (objects only)
	root  Node
}

func (b *builder) open(at int) {
	b.stack = append(b.stack, Node{Kind: Kind(b.s.out[at])})
	b.keys = append(b.keys, nil)
}

func (b *builder) key(start, end int) { b.keys[len(b.keys)-1] = b.s.out[start:end:end] }

func (b *builder) scalar(start, end int) { b.add(Node{Raw: b.s.out[start:end:end]}) }

func (b *builder) close(int) {
	n := b.stack[len(b.stack)-1]
	b.stack = b.stack[:len(b.stack)-1]
	b.keys = b.keys[:len(b.keys)-1]
	b.add(n)
}

// add puts a complete value into the innermost open container, or makes it the root.
func (b *builder) add(n Node) {
	if len(b.stack) == 0 {
		b.root = n
		return
	}
	top := &b.stack[len(b.stack)-1]
	if top.Kind == KindObject {
		top.Members = append(top.Members, Member{Key: b.keys[len(b.keys)-1], Val: n})
		return
	}
	top.Elems = append(top.Elems, n)
}

// Append appends the compact encoding of n to dst.
func (n *Node) Append(dst []byte) []byte {
	switch n.Kind {
	case KindObject:
		dst = append(dst, '{')
		for i := range n.Members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, n.Members[i].Key...)
			dst = append(dst, ':')
			dst = n.Members[i].Val.Append(dst)
		}
		return append(dst, '}')
	case KindArray:
		dst = append(dst, '[')
		for i := range n.Elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = n.Elems[i].Append(dst)
		}
		return append(dst, ']')
	default:
		return append(dst, n.Raw...)
	}
}

// IsNull reports whether n is the literal null.
func (n *Node) IsNull() bool { return n.Kind == KindScalar && string(n.Raw) == "null" }

// Get returns the value of n's first member named name, or nil when there is none or n is not an
// object.
func (n *Node) Get(name string) *Node {
	if n.Kind != KindObject {
		return nil
	}
	for i := range n.Members {
		if KeyIs(n.Members[i].Key, name) {
			return &n.Members[i].Val
		}
	}
	return nil
}
