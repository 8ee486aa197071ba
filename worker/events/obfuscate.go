package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
)

// ErrInvalidObfuscation is wrapped by NewProcessor's errors for an unusable obfuscation setting.
var ErrInvalidObfuscation = errors.New("invalid obfuscation")

// maskValue is what a masked field's value becomes.
const maskValue = `"***"`

// pathSeg is one dot-separated segment of an obfuscation path: a member name followed by zero or
// more "[]" (each descends into every element of an array, or every member value of an object).
type pathSeg struct {
	name string
	each int
}

// fieldPath is one parsed obfuscation path and what to do at its end.
type fieldPath struct {
	text string
	segs []pathSeg
	mask bool
}

// parsePath parses an obfuscation path such as "device.ip", "breachDevices[].ip" or
// "triggeredComponents[].triggeredFilters[].trigger.value".
func parsePath(text string) ([]pathSeg, error) {
	if text == "" {
		return nil, fmt.Errorf("%w: empty path", ErrInvalidObfuscation)
	}
	parts := strings.Split(text, ".")
	segs := make([]pathSeg, 0, len(parts))
	for _, part := range parts {
		seg := pathSeg{name: part}
		for strings.HasSuffix(seg.name, "[]") {
			seg.name = strings.TrimSuffix(seg.name, "[]")
			seg.each++
		}
		if seg.name == "" || strings.ContainsAny(seg.name, "[]") {
			return nil, fmt.Errorf("%w: path %q: bad segment %q (want name or name[])", ErrInvalidObfuscation, text, part)
		}
		segs = append(segs, seg)
	}
	return segs, nil
}

// obfuscator rewrites configured fields of an event tree.
type obfuscator struct {
	salt  []byte
	paths []fieldPath
}

// newObfuscator parses o's paths; it returns nil when there is nothing to do.
func newObfuscator(o *config.Obfuscation) (*obfuscator, error) {
	if o == nil || len(o.Hash) == 0 && len(o.Mask) == 0 {
		return nil, nil
	}
	if len(o.Hash) > 0 && o.Salt.Reveal() == "" {
		return nil, fmt.Errorf("%w: hash paths need a salt", ErrInvalidObfuscation)
	}
	ob := &obfuscator{salt: []byte(o.Salt.Reveal())}
	for _, list := range []struct {
		paths []string
		mask  bool
	}{{o.Hash, false}, {o.Mask, true}} {
		for _, text := range list.paths {
			segs, err := parsePath(text)
			if err != nil {
				return nil, err
			}
			ob.paths = append(ob.paths, fieldPath{text: text, segs: segs, mask: list.mask})
		}
	}
	return ob, nil
}

// apply rewrites every value that a path reaches in root: hash paths replace a value with the
// string hex(HMAC-SHA256(salt, value as a string)), mask paths with "***". A value "as a string" is
// a string's decoded text, a number's or boolean's literal, or an object's or array's compact
// JSON. null values are left alone by both (there is nothing to hide), and paths that lead
// nowhere are ignored. Hash paths are applied before mask paths, so a field in both ends masked.
func (ob *obfuscator) apply(root *jsonscan.Node) {
	for i := range ob.paths {
		p := &ob.paths[i]
		walk(root, p.segs, func(n *jsonscan.Node) {
			if n.IsNull() {
				return
			}
			if p.mask {
				*n = jsonscan.Node{Raw: []byte(maskValue)}
				return
			}
			*n = jsonscan.Node{Raw: ob.hash(n)}
		})
	}
}

// hash returns the quoted hex HMAC of n's value as a string.
func (ob *obfuscator) hash(n *jsonscan.Node) []byte {
	var text []byte
	switch {
	case n.Kind != jsonscan.KindScalar:
		text = n.Append(nil)
	case len(n.Raw) > 0 && n.Raw[0] == '"':
		s, ok := jsonscan.Unquote(n.Raw)
		if !ok {
			s = string(n.Raw)
		}
		text = []byte(s)
	default:
		text = n.Raw
	}
	mac := hmac.New(sha256.New, ob.salt)
	mac.Write(text)
	sum := mac.Sum(nil)
	out := make([]byte, 0, 2+hex.EncodedLen(len(sum)))
	out = append(out, '"')
	out = hex.AppendEncode(out, sum)
	return append(out, '"')
}

// walk calls fn for every value that segs reach from n.
func walk(n *jsonscan.Node, segs []pathSeg, fn func(*jsonscan.Node)) {
	if len(segs) == 0 {
		fn(n)
		return
	}
	if n.Kind != jsonscan.KindObject {
		return
	}
	seg := segs[0]
	for i := range n.Members {
		if jsonscan.KeyIs(n.Members[i].Key, seg.name) {
			each(&n.Members[i].Val, seg.each, segs[1:], fn)
		}
	}
}

// each descends depth levels of "[]" from n, then walks the rest of the path.
func each(n *jsonscan.Node, depth int, rest []pathSeg, fn func(*jsonscan.Node)) {
	if depth == 0 {
		walk(n, rest, fn)
		return
	}
	switch n.Kind {
	case jsonscan.KindArray:
		for i := range n.Elems {
			each(&n.Elems[i], depth-1, rest, fn)
		}
	case jsonscan.KindObject:
		for i := range n.Members {
			each(&n.Members[i].Val, depth-1, rest, fn)
		}
	}
}
