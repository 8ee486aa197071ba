package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// seeds are small bodies in the shapes of Darktrace responses, for every fuzz target.
var seeds = []string{
	`[{"pbid":1,"time":1714564800000,"model":{"name":"Device::Anomalous","then":{"x":[1.5e3,-0,null]}},"device":{"ip":"10.0.0.1"}}]`,
	`{"actions":[{"codeid":12,"updated":"1714564800000","active":true}],"devices":[{"did":3}],"connections":[]}`,
	`{"version":"6.1","instances":{"1":{"probes":{"2":{"id":null,"label":"p\u00e9"}}}},"probes":{"7":{"ipAddress":"10.1.1.1"}}}`,
	"{\n  \"usercredentialcount\": 3,\n  \"bandwidth\": [ {\"a\": 1} ]\n}\n",
	`"\ud83d\ude00 \u0000 \\ \/ \" \b\f\n\r\t"`,
}

// addSeeds adds seeds and extra to f's corpus.
func addSeeds(f *testing.F, extra ...string) {
	f.Helper()
	for _, s := range append(seeds[:len(seeds):len(seeds)], extra...) {
		f.Add([]byte(s))
	}
}

// tooDeep reports whether data may nest beyond the depth where Split and encoding/json differ.
func tooDeep(data []byte) bool {
	return bytes.Count(data, []byte("[")) > MaxDepth-10 || bytes.Count(data, []byte("{")) > MaxDepth-10
}

// FuzzSplit checks that Split never panics, that everything it yields is compact valid JSON, that
// it accepts exactly the bodies encoding/json accepts (of the right shape) with the same elements,
// and that it splits arrays produced by encoding/json into exactly their compacted elements.
func FuzzSplit(f *testing.F) {
	addSeeds(f, `[]`, `null`, `[1,"a\"b",{"c":[true,false,null]}]`, `{"actions":[{"codeid":1}],"devices":[]}`,
		"\xEF\xBB\xBF[]", `[1e5, -0.0, "\u00e9"]`, `<html>`, `[{"a":1},`, `[1] 2`)
	f.Fuzz(func(t *testing.T, data []byte) {
		if tooDeep(data) {
			return
		}
		for _, shape := range []Shape{ShapeArray, shapeActions, ShapeObject} {
			got, err := splitAll(bytes.NewReader(data), shape)
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("shape %v: error %v does not wrap ErrMalformed", shape, err)
			}
			for _, raw := range got {
				var buf bytes.Buffer
				if err := json.Compact(&buf, []byte(raw)); err != nil {
					t.Fatalf("shape %v: yielded invalid JSON %q: %v", shape, raw, err)
				}
				if buf.String() != raw {
					t.Fatalf("shape %v: yielded %q, not compact (%q)", shape, raw, buf.String())
				}
			}
			want, ok := referenceElements(data, shape)
			switch {
			case !ok && err == nil:
				t.Fatalf("shape %v: Split accepted %q, encoding/json does not", shape, data)
			case ok && err != nil:
				t.Fatalf("shape %v: Split rejected %q: %v", shape, data, err)
			case ok && strings.Join(got, "\x00") != strings.Join(want, "\x00"):
				t.Fatalf("shape %v: Split(%q) = %q, want %q", shape, data, got, want)
			}
			// The same with one-byte reads.
			again, err2 := splitAll(iotestOneByte(data), shape)
			if (err == nil) != (err2 == nil) || strings.Join(got, "\x00") != strings.Join(again, "\x00") {
				t.Fatalf("shape %v: one-byte reads give %q, %v; whole reads %q, %v", shape, again, err2, got, err)
			}
		}

		// Arrays produced by encoding/json split into exactly their compacted elements.
		var v any
		if json.Unmarshal(data, &v) != nil {
			return
		}
		elem, err := json.Marshal(v)
		if err != nil {
			return
		}
		body, err := json.MarshalIndent([]any{v, "x", v}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got, err := splitAll(bytes.NewReader(body), ShapeArray)
		if err != nil {
			t.Fatalf("Split(%s): %v", body, err)
		}
		if want := []string{string(elem), `"x"`, string(elem)}; strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("Split(%s) = %q, want %q", body, got, want)
		}
	})
}

func iotestOneByte(data []byte) io.Reader {
	return &oneByteReader{data: data}
}

// oneByteReader returns one byte per Read.
type oneByteReader struct{ data []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[0]
	r.data = r.data[1:]
	return 1, nil
}

// referenceElements is what Split should yield for data and shape, computed with encoding/json;
// ok is false when Split should fail.
func referenceElements(data []byte, shape Shape) ([]string, bool) {
	data = bytes.TrimPrefix(data, []byte("\xEF\xBB\xBF"))
	if !json.Valid(data) {
		return nil, false
	}
	trimmed := bytes.TrimSpace(data)
	compactEach := func(raws []json.RawMessage) ([]string, bool) {
		out := make([]string, 0, len(raws))
		for _, raw := range raws {
			var buf bytes.Buffer
			if json.Compact(&buf, raw) != nil {
				return nil, false
			}
			out = append(out, buf.String())
		}
		return out, true
	}
	switch {
	case shape == ShapeObject && len(trimmed) > 0 && trimmed[0] == '{':
		return compactEach([]json.RawMessage{trimmed})
	case shape == ShapeObject:
		return nil, false
	case string(trimmed) == "null":
		return nil, true
	case trimmed[0] == '[':
		var raws []json.RawMessage
		if json.Unmarshal(trimmed, &raws) != nil {
			return nil, false
		}
		return compactEach(raws)
	case shape == shapeActions && trimmed[0] == '{':
		// Every "actions" member, in order, must be an array or null.
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		if _, err := dec.Token(); err != nil {
			return nil, false
		}
		var out []string
		found := false
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, false
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, false
			}
			if tok != "actions" {
				continue
			}
			found = true
			var raws []json.RawMessage
			if string(raw) != "null" && (raw[0] != '[' || json.Unmarshal(raw, &raws) != nil) {
				return nil, false
			}
			els, ok := compactEach(raws)
			if !ok {
				return nil, false
			}
			out = append(out, els...)
		}
		return out, found
	default:
		return nil, false
	}
}

// FuzzSplitMaxValue checks the MaxValue option against Split without it: the same values in the
// same order, except that each value longer than the limit is reported to tooLarge with its
// index and exact compact size instead of being yielded; and the same error, if any.
func FuzzSplitMaxValue(f *testing.F) {
	addSeeds(f, `[]`, `[1,"a\"b",{"c":[true,false,null]}]`, `{"actions":[{"codeid":1},"xxxxxxxxxxxx"],"devices":[]}`,
		`["`+strings.Repeat("y", 200)+`", 2]`, `[{"a":1},`)
	f.Fuzz(func(t *testing.T, data []byte) {
		if tooDeep(data) {
			return
		}
		for _, limit := range []int{1, 4, 16, 100} {
			for _, shape := range []Shape{ShapeArray, shapeActions, ShapeObject} {
				all, errAll := splitAll(bytes.NewReader(data), shape)
				var got []string
				var dropped []string
				index := 0
				err := Split(bytes.NewReader(data), shape, func(raw []byte) error {
					got = append(got, string(raw))
					index++
					return nil
				}, MaxValue(limit, func(i int, size int64) error {
					if i != index {
						t.Fatalf("limit %d shape %v: tooLarge index %d, want %d", limit, shape, i, index)
					}
					dropped = append(dropped, fmt.Sprintf("%d:%d", i, size))
					index++
					return nil
				}))
				if (err == nil) != (errAll == nil) {
					t.Fatalf("limit %d shape %v: error %v, without the limit %v", limit, shape, err, errAll)
				}
				if err != nil {
					continue
				}
				var want, wantDropped []string
				for i, raw := range all {
					if len(raw) > limit {
						wantDropped = append(wantDropped, fmt.Sprintf("%d:%d", i, len(raw)))
						continue
					}
					want = append(want, raw)
				}
				if strings.Join(got, "\x00") != strings.Join(want, "\x00") || strings.Join(dropped, ",") != strings.Join(wantDropped, ",") {
					t.Fatalf("limit %d shape %v: Split(%q) kept %q dropped %v; want %q dropped %v", limit, shape, data, got, dropped, want, wantDropped)
				}
			}
		}
	})
}
