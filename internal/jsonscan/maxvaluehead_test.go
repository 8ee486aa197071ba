package jsonscan

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestSplitMaxValueHead: a value over the limit is reported with the start of its compact form,
// whether it outgrew the limit within one read (kept whole until then) or across many (its
// output dropped at read boundaries), so that a caller can name it by a leading field.
func TestSplitMaxValueHead(t *testing.T) {
	big := `{"pbid": 42, "pad": "` + strings.Repeat("x", 300<<10) + `"}`
	compactBig := `{"pbid":42,"pad":"` + strings.Repeat("x", 300<<10) + `"}`
	small := `{"pbid": 1}`
	body := "[" + small + ", " + big + ", " + small + "]"
	type report struct {
		index int
		size  int64
		head  string
	}
	for _, tc := range []struct {
		name           string
		limit, headLen int
		reader         func(io.Reader) io.Reader
	}{
		{"across reads", 100 << 10, 64, func(r io.Reader) io.Reader { return r }},
		{"across small reads", 100 << 10, 64, iotest.HalfReader},
		{"within one read", 1000, 4096, func(r io.Reader) io.Reader { return r }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			var large []report
			err := Split(tc.reader(strings.NewReader(body)), ShapeArray, func(raw []byte) error {
				got = append(got, string(raw))
				return nil
			}, MaxValueHead(tc.limit, tc.headLen, func(index int, size int64, head []byte) error {
				large = append(large, report{index, size, string(head)})
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[0] != `{"pbid":1}` || got[1] != `{"pbid":1}` || len(large) != 1 {
				t.Fatalf("values %q and too large %d; want the two small ones and one too large", got, len(large))
			}
			r := large[0]
			if r.index != 1 || r.size != int64(len(compactBig)) {
				t.Fatalf("reported index %d size %d; want 1 and %d", r.index, r.size, len(compactBig))
			}
			if len(r.head) > tc.headLen || !strings.HasPrefix(compactBig, r.head) || !strings.HasPrefix(r.head, `{"pbid":42,`) {
				t.Fatalf("head %.80q (%d bytes); want the compact value's first bytes (at most %d), its pbid included", r.head, len(r.head), tc.headLen)
			}
		})
	}
}
