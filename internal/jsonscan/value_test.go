package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCompactLookup(t *testing.T) {
	t.Parallel()
	names := []string{"pbid", "time", "missing"}
	tests := []struct {
		name      string
		raw       string
		want      string
		vals      []string // "" for nil
		malformed bool
	}{
		{name: "object", raw: "{ \"pbid\" : 12 ,\n \"time\": \"1714\" }", want: `{"pbid":12,"time":"1714"}`, vals: []string{`12`, `"1714"`, ""}},
		{name: "first occurrence wins", raw: `{"pbid":1,"pbid":2}`, want: `{"pbid":1,"pbid":2}`, vals: []string{`1`, "", ""}},
		{name: "nested members ignored", raw: `{"a":{"pbid":9,"time":[1]},"time":{"x":[1, 2]}}`, want: `{"a":{"pbid":9,"time":[1]},"time":{"x":[1,2]}}`,
			vals: []string{"", `{"x":[1,2]}`, ""}},
		{name: "escaped key", raw: `{"\u0070bid":[ ]}`, want: `{"\u0070bid":[]}`, vals: []string{`[]`, "", ""}},
		{name: "key text inside a string", raw: `{"x":"\"pbid\":1","time":null}`, want: `{"x":"\"pbid\":1","time":null}`, vals: []string{"", `null`, ""}},
		{name: "array", raw: ` [{"pbid":1}, 2] `, want: `[{"pbid":1},2]`, vals: []string{"", "", ""}},
		{name: "scalar", raw: `"pbid"`, want: `"pbid"`, vals: []string{"", "", ""}},
		{name: "empty", raw: ` `, malformed: true},
		{name: "truncated", raw: `{"pbid":1`, malformed: true},
		{name: "two values", raw: `{} {}`, malformed: true},
		{name: "bad number", raw: `{"pbid":01}`, malformed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vals := make([][]byte, len(names))
			got, err := CompactLookup([]byte(tc.raw), names, vals)
			if tc.malformed {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("CompactLookup(%q) error = %v, want ErrMalformed", tc.raw, err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("CompactLookup(%q) = %s, %v; want %s", tc.raw, got, err, tc.want)
			}
			for i, want := range tc.vals {
				if (vals[i] == nil) != (want == "") || string(vals[i]) != want {
					t.Errorf("value of %q = %q, want %q", names[i], vals[i], want)
				}
			}
		})
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	raw := []byte(" {\"a\": [1, {\"b\":null}], \"c\" : \"x\\\"y\", \"a\":{}, \"\\u0064\": true} ")
	n, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(n.Append(nil)), `{"a":[1,{"b":null}],"c":"x\"y","a":{},"\u0064":true}`; got != want {
		t.Fatalf("Append = %s, want %s", got, want)
	}
	if n.Kind != KindObject || len(n.Members) != 4 {
		t.Fatalf("root: kind %q, %d members", n.Kind, len(n.Members))
	}
	a := n.Get("a")
	if a == nil || a.Kind != KindArray || len(a.Elems) != 2 || string(a.Elems[0].Raw) != "1" {
		t.Fatalf("Get(a) = %+v, want the first member's array", a)
	}
	if b := a.Elems[1].Get("b"); b == nil || !b.IsNull() {
		t.Fatalf("a[1].b = %+v, want null", b)
	}
	if d := n.Get("d"); d == nil || string(d.Raw) != "true" {
		t.Fatalf("Get(d) through an escaped key = %+v", d)
	}
	if n.Get("zz") != nil || a.Get("a") != nil {
		t.Fatal("Get found a member that is not there")
	}
	// Editing a node re-encodes with the edit and nothing else changed.
	n.Members[1].Val = Node{Raw: []byte(`"***"`)}
	if got, want := string(n.Append(nil)), `{"a":[1,{"b":null}],"c":"***","a":{},"\u0064":true}`; got != want {
		t.Fatalf("after edit: %s, want %s", got, want)
	}
	for _, bad := range []string{``, `{`, `{"a" 1}`, `[1,]`, `{} x`, `tru`, strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%.20q) error = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestKeyIsAndUnquote(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tok  string
		want string
		ok   bool
	}{
		{`"actions"`, "actions", true},
		{`"\u0061ctions"`, "actions", true},
		{`"a\"b\\c\/"`, `a"b\c/`, true},
		{`""`, "", true},
		{`"\ud83d\ude00"`, "😀", true},
		{"\"h\xe9\"", "h\xe9", true}, // no escapes: kept byte for byte
		{`"abc`, "", false},
		{`abc`, "", false},
		{`"`, "", false},
		{`"a\x"`, "", false},
		{"\"a\tb\"", "", false},
	}
	for _, tc := range tests {
		got, ok := Unquote([]byte(tc.tok))
		if got != tc.want || ok != tc.ok {
			t.Errorf("Unquote(%q) = %q, %v; want %q, %v", tc.tok, got, ok, tc.want, tc.ok)
		}
		if tc.ok && !KeyIs([]byte(tc.tok), tc.want) {
			t.Errorf("KeyIs(%q, %q) = false", tc.tok, tc.want)
		}
		if KeyIs([]byte(tc.tok), tc.want+"x") {
			t.Errorf("KeyIs(%q, %q) = true", tc.tok, tc.want+"x")
		}
	}
}

// FuzzCompactLookup checks Compact and CompactLookup against encoding/json: they accept exactly
// the values json.Valid accepts, return json.Compact's bytes, and find the first top-level member
// of each name with its compact value.
func FuzzCompactLookup(f *testing.F) {
	addSeeds(f, `{"a":1,"a":2,"b":{"a":3}}`, `{"\u0061":[1,{"b":2}],"b":"\"a\""}`, ` 1 `, `{`)
	names := []string{"a", "b", "pbid", "actions"}
	f.Fuzz(func(t *testing.T, data []byte) {
		if tooDeep(data) {
			return
		}
		vals := make([][]byte, len(names))
		got, err := CompactLookup(data, names, vals)
		plain, perr := Compact(data)
		if json.Valid(data) != (err == nil) || (err == nil) != (perr == nil) {
			t.Fatalf("json.Valid = %v, CompactLookup error = %v, Compact error = %v", json.Valid(data), err, perr)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var want bytes.Buffer
		if err := json.Compact(&want, data); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) || !bytes.Equal(plain, want.Bytes()) {
			t.Fatalf("compacted %q to %q and %q, want %q", data, got, plain, want.Bytes())
		}
		// The reference: the first member of each name, decoded with encoding/json's tokenizer.
		wantVals := make([]string, len(names))
		found := make([]bool, len(names))
		dec := json.NewDecoder(bytes.NewReader(data))
		if tok, _ := dec.Token(); tok == json.Delim('{') {
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					t.Fatal(err)
				}
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					t.Fatal(err)
				}
				for i, name := range names {
					if !found[i] && k == name {
						var c bytes.Buffer
						if err := json.Compact(&c, raw); err != nil {
							t.Fatal(err)
						}
						found[i], wantVals[i] = true, c.String()
					}
				}
			}
		}
		for i := range names {
			// encoding/json repairs invalid UTF-8 in keys, which Unquote keeps: compare valid keys only.
			if !utf8.Valid(data) {
				break
			}
			if (vals[i] != nil) != found[i] || string(vals[i]) != wantVals[i] {
				t.Fatalf("%q: value of %q = %q, want %q (found %v)", data, names[i], vals[i], wantVals[i], found[i])
			}
		}
	})
}

// FuzzParse checks Parse against encoding/json: it accepts exactly json.Valid's values, Append
// re-encodes the tree as json.Compact does, and Get finds what an order-keeping decoder finds.
func FuzzParse(f *testing.F) {
	addSeeds(f, `{"a":[{"b":{}}],"a":1}`, `[[],[[]],{}]`, `-1.5E+3`, `{"a":}`)
	f.Fuzz(func(t *testing.T, data []byte) {
		if tooDeep(data) {
			return
		}
		n, err := Parse(data)
		if json.Valid(data) != (err == nil) {
			t.Fatalf("json.Valid = %v, Parse error = %v", json.Valid(data), err)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var want bytes.Buffer
		if err := json.Compact(&want, data); err != nil {
			t.Fatal(err)
		}
		if got := n.Append(nil); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("Parse(%q).Append = %q, want %q", data, got, want.Bytes())
		}
		if n.Kind == KindObject {
			first := map[string]*Node{}
			for i := range n.Members {
				name, ok := Unquote(n.Members[i].Key)
				if !ok {
					t.Fatalf("member key %q does not unquote", n.Members[i].Key)
				}
				if first[name] == nil {
					first[name] = &n.Members[i].Val
				}
			}
			for name, want := range first {
				if got := n.Get(name); got != want {
					t.Fatalf("Get(%q) is not the first member of that name", name)
				}
			}
		}
	})
}

// FuzzUnquote checks Unquote and KeyIs against encoding/json on string tokens: the same strings
// (for valid UTF-8; without escapes Unquote keeps bytes as they are), and KeyIs true exactly for
// the decoded string.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"actions"`, `"\u0061ctions"`, `"a\"b\\c\/\b\f\n\r\t"`, `"\ud800"`, `"\ud83d\ude00"`, `""`, `"`, `"\u00"`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, tok []byte) {
		got, ok := Unquote(tok)
		var want string
		werr := json.Unmarshal(tok, &want)
		// A token has no whitespace around it, which json.Valid would allow.
		isStr := len(tok) > 1 && tok[0] == '"' && tok[len(tok)-1] == '"' && json.Valid(tok)
		if ok != isStr {
			t.Fatalf("Unquote(%q) ok = %v, want %v (json: %v)", tok, ok, isStr, werr)
		}
		if !ok {
			return
		}
		if utf8.Valid(tok) && got != want {
			t.Fatalf("Unquote(%q) = %q, encoding/json gives %q", tok, got, want)
		}
		if !KeyIs(tok, got) || KeyIs(tok, got+"x") {
			t.Fatalf("KeyIs(%q) disagrees with Unquote's %q", tok, got)
		}
	})
}
