package jsonscan

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// lookupNames are the member names the SplitLookup tests look for: Darktrace's key and time
// fields, a name that appears nested in the seeds, a repeated name and the empty name.
var lookupNames = []string{"pbid", "time", "codeid", "updated", "a", "a", "", "label"}

// lookupAll splits data with SplitLookup (one-byte reads when oneByte), returning each value and
// its found tokens rendered as one string, and the values reported too large.
func lookupAll(data []byte, shape Shape, limit int, oneByte bool) (got, dropped []string, err error) {
	r := iotestOneByte(data)
	if !oneByte {
		r = bytes.NewReader(data)
	}
	err = SplitLookup(r, shape, lookupNames, func(raw []byte, vals [][]byte) error {
		got = append(got, renderLookup(raw, vals))
		return nil
	}, MaxValue(limit, func(i int, size int64) error {
		dropped = append(dropped, fmt.Sprintf("%d:%d", i, size))
		return nil
	}))
	return got, dropped, err
}

// renderLookup renders a value and its found tokens (nil as <nil>).
func renderLookup(raw []byte, vals [][]byte) string {
	var b strings.Builder
	b.Write(raw)
	for _, v := range vals {
		if v == nil {
			b.WriteString(" <nil>")
			continue
		}
		fmt.Fprintf(&b, " %s", v)
	}
	return b.String()
}

// FuzzSplitLookup checks that SplitLookup yields exactly Split's values, with the very tokens
// CompactLookup finds in each, with whole and one-byte reads and with values over a MaxValue
// limit dropped as Split drops them.
func FuzzSplitLookup(f *testing.F) {
	addSeeds(f, `[{"a":1,"a":2,"":[3]},{"time":"x","pbid":{"a":1}}]`, `{"actions":[{"codeid":1,"updated":"5"}],"a":{"a":7}}`,
		`[{"a":{"pbid":1}},["a",{"a":2}],"a",{"pbid":12345678901234567890}]`, `[{"a":1},`)
	f.Fuzz(func(t *testing.T, data []byte) {
		if tooDeep(data) {
			return
		}
		for _, shape := range []Shape{ShapeArray, shapeActions, ShapeObject} {
			for _, limit := range []int{0, 8, 64} {
				var want, wantDropped []string
				errSplit := Split(bytes.NewReader(data), shape, func(raw []byte) error {
					vals := make([][]byte, len(lookupNames))
					c, err := CompactLookup(raw, lookupNames, vals)
					if err != nil {
						t.Fatalf("CompactLookup(%q) of a value Split yielded: %v", raw, err)
					}
					want = append(want, renderLookup(c, vals))
					return nil
				}, MaxValue(limit, func(i int, size int64) error {
					wantDropped = append(wantDropped, fmt.Sprintf("%d:%d", i, size))
					return nil
				}))
				for _, oneByte := range []bool{false, true} {
					got, dropped, err := lookupAll(data, shape, limit, oneByte)
					if (err == nil) != (errSplit == nil) {
						t.Fatalf("shape %v limit %d one-byte %v: SplitLookup error %v, Split %v", shape, limit, oneByte, err, errSplit)
					}
					if err != nil {
						continue // values before the defect may differ in count only by where it is found: both failed
					}
					if strings.Join(got, "\x00") != strings.Join(want, "\x00") || strings.Join(dropped, ",") != strings.Join(wantDropped, ",") {
						t.Fatalf("shape %v limit %d one-byte %v: SplitLookup(%q) = %q dropped %v; want %q dropped %v",
							shape, limit, oneByte, data, got, dropped, want, wantDropped)
					}
				}
			}
		}
	})
}

func TestSplitLookup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		body  string
		shape Shape
		want  []string
	}{
		{"first member of each name (a repeated name the next one), nested ones ignored",
			`[ {"a": {"pbid": 1}, "pbid": 7, "a": 2, "time": "x y"}, {"label": null} ]`, ShapeArray,
			[]string{`{"a":{"pbid":1},"pbid":7,"a":2,"time":"x y"} 7 "x y" <nil> <nil> {"pbid":1} 2 <nil> <nil>`,
				`{"label":null} <nil> <nil> <nil> <nil> <nil> <nil> <nil> null`}},
		{"values that are not objects find nothing",
			`[1, "a", ["a", {"a": 1}]]`, ShapeArray,
			[]string{`1` + strings.Repeat(" <nil>", 8), `"a"` + strings.Repeat(" <nil>", 8), `["a",{"a":1}]` + strings.Repeat(" <nil>", 8)}},
		{"wrapped: other members are not looked into",
			`{"a": {"a": 1}, "actions": [{"codeid": 3, "updated": "5"}], "pbid": 9}`, shapeActions,
			[]string{`{"codeid":3,"updated":"5"} <nil> <nil> 3 "5" <nil> <nil> <nil> <nil>`}},
		{"object shape",
			`{"": [1, 2], "time": 1.5e3}`, ShapeObject,
			[]string{`{"":[1,2],"time":1.5e3} <nil> 1.5e3 <nil> <nil> <nil> <nil> [1,2] <nil>`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, oneByte := range []bool{false, true} {
				got, _, err := lookupAll([]byte(tt.body), tt.shape, 0, oneByte)
				if err != nil {
					t.Fatalf("SplitLookup: %v", err)
				}
				if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
					t.Errorf("one-byte %v:\ngot  %q\nwant %q", oneByte, got, tt.want)
				}
			}
		})
	}
}
