package jsonscan

import (
	"errors"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// tooLargeValue is one value MaxValue reported.
type tooLargeValue struct {
	index int
	size  int64
}

// splitMax collects Split's values and the values it reported too large under MaxValue(max).
func splitMax(r io.Reader, shape Shape, max int) (got []string, large []tooLargeValue, err error) {
	err = Split(r, shape, func(raw []byte) error {
		got = append(got, string(raw))
		return nil
	}, MaxValue(max, func(index int, size int64) error {
		large = append(large, tooLargeValue{index, size})
		return nil
	}))
	return got, large, err
}

func TestSplitMaxValue(t *testing.T) {
	t.Parallel()
	// Values longer than one read buffer, so that they outgrow the limit in the middle.
	long := strings.Repeat("x", 3*readBufSize)
	tests := []struct {
		name      string
		shape     Shape
		max       int
		body      string
		want      []string
		large     []tooLargeValue
		malformed bool
	}{
		{name: "under the limit", max: 8, body: `[1, "abc", {"a":1}]`, want: []string{`1`, `"abc"`, `{"a":1}`}},
		{name: "at the limit", max: 7, body: `[{"a": 1}]`, want: []string{`{"a":1}`}},
		{name: "one byte over, in memory", max: 6, body: `[1, {"a": 1}, 2]`, want: []string{`1`, `2`},
			large: []tooLargeValue{{1, 7}}},
		{name: "long string", max: 1024, body: `[1, "` + long + `", 3]`, want: []string{`1`, `3`},
			large: []tooLargeValue{{1, int64(len(long) + 2)}}},
		{name: "long object", max: 1024, body: `[{"k": "` + long + `", "n": [1, 2]}, {"a": 1}]`, want: []string{`{"a":1}`},
			large: []tooLargeValue{{0, int64(len(`{"k":"","n":[1,2]}`) + len(long))}}},
		{name: "long number", max: 1024, body: `[` + strings.Repeat("9", 3*readBufSize) + `,5]`, want: []string{`5`},
			large: []tooLargeValue{{0, int64(3 * readBufSize)}}},
		{name: "wrapped, indexes over every member array", shape: shapeActions, max: 1024,
			body: `{"actions": [1], "other": "` + long + `", "actions": [2, "` + long + `", 4]}`,
			want: []string{`1`, `2`, `4`}, large: []tooLargeValue{{2, int64(len(long) + 2)}}},
		{name: "object shape", shape: ShapeObject, max: 1024, body: `{"k": "` + long + `"}`,
			large: []tooLargeValue{{0, int64(len(`{"k":""}`) + len(long))}}},
		{name: "a too large value is still validated", max: 1024, body: `[1, "` + long + `\q"]`, want: []string{`1`}, malformed: true},
		{name: "truncated in a too large value", max: 1024, body: `[1, "` + long, want: []string{`1`}, malformed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, large, err := splitMax(strings.NewReader(tc.body), tc.shape, tc.max)
			if tc.malformed != errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v; malformed %v", err, tc.malformed)
			}
			if tc.malformed {
				// A body that fails is discarded whole: only what came before the defect is checked.
				if !slices.Equal(got, tc.want) {
					t.Fatalf("values before the defect %q; want %q", got, tc.want)
				}
				return
			}
			if !slices.Equal(got, tc.want) || !slices.Equal(large, tc.large) {
				t.Fatalf("values %q, too large %v; want %q, %v", got, large, tc.want, tc.large)
			}
			// Without the option, the same body yields every value, the long ones included.
			all, err := splitAll(strings.NewReader(tc.body), tc.shape)
			if err != nil || len(all) != len(tc.want)+len(tc.large) {
				t.Fatalf("without MaxValue: %d values, err %v; want %d", len(all), err, len(tc.want)+len(tc.large))
			}
		})
	}
}

func TestSplitMaxValueError(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	err := Split(strings.NewReader(`[1, "abcdef", 3]`), ShapeArray, func([]byte) error { return nil },
		MaxValue(4, func(int, int64) error { return stop }))
	if err != stop {
		t.Fatalf("err = %v; want tooLarge's error as is", err)
	}
}

// repeatReader reads n copies of b.
type repeatReader struct {
	b byte
	n int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n)]
	for i := range p {
		p[i] = r.b
	}
	r.n -= int64(len(p))
	return len(p), nil
}

// heapWatch is a reader that samples the live heap every few reads and keeps the peak.
type heapWatch struct {
	r     io.Reader
	reads int
	peak  uint64
}

func (h *heapWatch) Read(p []byte) (int, error) {
	if h.reads%16 == 0 {
		h.sample()
	}
	h.reads++
	return h.r.Read(p)
}

func (h *heapWatch) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.peak = max(h.peak, ms.HeapAlloc)
}

// TestSplitMaxValueMemory (issue 9, row 7): an array holding one 200 MB value, split with a 1 MB
// limit, keeps the live heap small (the value is never held), and the values around it come
// through. Not parallel: the heap is the process's.
func TestSplitMaxValueMemory(t *testing.T) {
	const size, limit, ceiling = 200 << 20, 1 << 20, 32 << 20
	for _, tc := range []struct {
		name        string
		open, close string
		fill        byte
		extra       int64 // compact bytes of the value besides the fill
	}{
		{"string", `"`, `"`, 'a', 2},
		{"nested", `{"a":[{"b":"`, `"}]}`, 'z', 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &heapWatch{r: io.MultiReader(
				strings.NewReader(`[{"before":1}, `+tc.open),
				&repeatReader{b: tc.fill, n: size},
				strings.NewReader(tc.close+`, {"after":2}]`),
			)}
			runtime.GC()
			body.sample()
			base := body.peak
			got, large, err := splitMax(body, ShapeArray, limit)
			body.sample()
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{`{"before":1}`, `{"after":2}`}; !slices.Equal(got, want) {
				t.Fatalf("values %q; want %q", got, want)
			}
			if !slices.Equal(large, []tooLargeValue{{1, size + tc.extra}}) {
				t.Fatalf("too large %v; want value 1 of %d bytes", large, size+tc.extra)
			}
			if grew := body.peak - min(base, body.peak); grew > ceiling {
				t.Fatalf("the live heap grew by %d MB while splitting; want under %d MB", grew>>20, ceiling>>20)
			}
			t.Logf("peak heap growth %.1f MB over %d reads", float64(body.peak-min(base, body.peak))/(1<<20), body.reads)
		})
	}
}
