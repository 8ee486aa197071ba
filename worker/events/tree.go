package events

import "fmt"

// node is one JSON value held in source order, with scalar tokens kept verbatim, so that an
// event can be edited (obfuscated, flattened) and re-encoded without changing its key order,
// its numbers or its string escapes.
type node struct {
	kind    byte     // '{', '[' or 0 for a scalar
	raw     []byte   // a scalar's token; strings keep their quotes and escapes
	members []member // an object's members
	elems   []node   // an array's elements
}

// member is one key/value pair of an object; key is the quoted key token.
type member struct {
	key []byte
	val node
}

// parseTree parses a compact, valid JSON value (as produced by compactCopy) into a tree whose
// scalar tokens alias data. It returns an error wrapping ErrMalformed for anything else.
func parseTree(data []byte) (node, error) {
	n, end, err := parseNode(data, 0, 0)
	if err != nil {
		return node{}, err
	}
	if end != len(data) {
		return node{}, fmt.Errorf("%w: data after the event's value at offset %d", ErrMalformed, end)
	}
	return n, nil
}

func parseNode(data []byte, i, depth int) (node, int, error) {
	if depth > maxDepth {
		return node{}, 0, fmt.Errorf("%w: nested too deeply", ErrMalformed)
	}
	if i >= len(data) {
		return node{}, 0, errTruncatedEvent
	}
	switch data[i] {
	case '{':
		n := node{kind: '{'}
		i++
		if i < len(data) && data[i] == '}' {
			return n, i + 1, nil
		}
		for {
			if i >= len(data) || data[i] != '"' {
				return node{}, 0, errTruncatedEvent
			}
			keyEnd, err := skipString(data, i)
			if err != nil {
				return node{}, 0, err
			}
			if keyEnd >= len(data) || data[keyEnd] != ':' {
				return node{}, 0, errTruncatedEvent
			}
			val, end, err := parseNode(data, keyEnd+1, depth+1)
			if err != nil {
				return node{}, 0, err
			}
			n.members = append(n.members, member{key: data[i:keyEnd], val: val})
			if end >= len(data) {
				return node{}, 0, errTruncatedEvent
			}
			switch data[end] {
			case ',':
				i = end + 1
			case '}':
				return n, end + 1, nil
			default:
				return node{}, 0, errTruncatedEvent
			}
		}
	case '[':
		n := node{kind: '['}
		i++
		if i < len(data) && data[i] == ']' {
			return n, i + 1, nil
		}
		for {
			val, end, err := parseNode(data, i, depth+1)
			if err != nil {
				return node{}, 0, err
			}
			n.elems = append(n.elems, val)
			if end >= len(data) {
				return node{}, 0, errTruncatedEvent
			}
			switch data[end] {
			case ',':
				i = end + 1
			case ']':
				return n, end + 1, nil
			default:
				return node{}, 0, errTruncatedEvent
			}
		}
	default:
		end, err := skipValue(data, i)
		if err != nil {
			return node{}, 0, err
		}
		return node{raw: data[i:end]}, end, nil
	}
}

// appendNode appends the compact encoding of n to dst.
func appendNode(dst []byte, n *node) []byte {
	switch n.kind {
	case '{':
		dst = append(dst, '{')
		for i := range n.members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, n.members[i].key...)
			dst = append(dst, ':')
			dst = appendNode(dst, &n.members[i].val)
		}
		return append(dst, '}')
	case '[':
		dst = append(dst, '[')
		for i := range n.elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendNode(dst, &n.elems[i])
		}
		return append(dst, ']')
	default:
		return append(dst, n.raw...)
	}
}

// isNull reports whether n is the literal null.
func (n *node) isNull() bool { return n.kind == 0 && string(n.raw) == "null" }

// get returns the value of n's first member named name, or nil.
func (n *node) get(name string) *node {
	if n.kind != '{' {
		return nil
	}
	for i := range n.members {
		if keyIs(n.members[i].key, name) {
			return &n.members[i].val
		}
	}
	return nil
}
