package devo

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// lineCase is one event of a golden case's in.jsonl. The message is msg (a JSON string),
// msg_json (any JSON value, compacted) or msg_b64 (raw bytes, for invalid UTF-8).
type lineCase struct {
	Time    int64           `json:"time"`
	Host    string          `json:"host"`
	Tag     string          `json:"tag"`
	Msg     *string         `json:"msg"`
	MsgJSON json.RawMessage `json:"msg_json"`
	MsgB64  string          `json:"msg_b64"`
}

func (c lineCase) message(t testing.TB) []byte {
	t.Helper()
	switch {
	case c.Msg != nil:
		return []byte(*c.Msg)
	case c.MsgJSON != nil:
		var buf bytes.Buffer
		if err := json.Compact(&buf, c.MsgJSON); err != nil {
			t.Fatalf("compacting msg_json: %v", err)
		}
		return buf.Bytes()
	default:
		b, err := base64.StdEncoding.DecodeString(c.MsgB64)
		if err != nil {
			t.Fatalf("decoding msg_b64: %v", err)
		}
		return b
	}
}

// readLineCases reads a golden case's in.jsonl.
func readLineCases(t testing.TB, path string) []lineCase {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []lineCase
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c lineCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// TestAppendLineGolden encodes each testdata/lines/<case>/in.jsonl and compares with want.txt.
// Cases with a SOURCE file hold a want.txt copied from the reference and are never rewritten.
func TestAppendLineGolden(t *testing.T) {
	t.Parallel()
	dirs, err := filepath.Glob(filepath.Join("testdata", "lines", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			var got []byte
			for _, c := range readLineCases(t, filepath.Join(dir, "in.jsonl")) {
				got = AppendLine(got, c.Time, c.Host, c.Tag, c.message(t))
			}
			wantPath := filepath.Join(dir, "want.txt")
			_, refErr := os.Stat(filepath.Join(dir, "SOURCE"))
			if *update && refErr != nil {
				if err := os.WriteFile(wantPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("AppendLine output differs from %s\n got: %q\nwant: %q", wantPath, got, want)
			}
		})
	}
}

func TestAppendLineZeroAllocs(t *testing.T) {
	msg := []byte(`{"pbid":1234,"time":1714566896000,"bad":"` + "\xff\n\x01" + `","ü":"日本"}`)
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendLine(buf[:0], 1714566896789, "collector-01", "edr.darktrace.respond.model_breach", msg)
	})
	if allocs != 0 {
		t.Fatalf("AppendLine allocated %.1f times per call with enough capacity; want 0", allocs)
	}
}

var headerRE = regexp.MustCompile(`^<14>(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}) ([^ :]+) ([^ :]+): `)

// cleanMessage reports whether AppendLine must write msg unchanged.
func cleanMessage(msg []byte) bool {
	if !utf8.Valid(msg) {
		return false
	}
	for _, c := range msg {
		if c < ' ' && c != '\t' {
			return false
		}
	}
	return true
}

// cleanToken reports whether AppendLine must write a host or tag unchanged.
func cleanToken(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == ':' || r == 0x7f || isUnicodeSpaceOrControl(r) {
			return false
		}
	}
	return true
}

func checkLine(t *testing.T, tms int64, host, tag string, msg, line []byte) {
	t.Helper()
	if n := bytes.Count(line, []byte{'\n'}); n != 1 || line[len(line)-1] != '\n' {
		t.Fatalf("line %q has %d LFs; want exactly one, at the end", line, n)
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		t.Fatalf("line %q holds a CR", line)
	}
	if !utf8.Valid(line) {
		t.Fatalf("line %q is not valid UTF-8", line)
	}
	m := headerRE.FindSubmatch(line)
	if m == nil {
		t.Fatalf("line %q has no parseable header", line)
	}
	ts, err := time.Parse("2006-01-02 15:04:05.000", string(m[1]))
	if err != nil {
		t.Fatalf("header time %q: %v", m[1], err)
	}
	if tms >= minLineMs && tms <= maxLineMs && ts.UnixMilli() != tms {
		t.Fatalf("header time %s is %d ms; want %d", m[1], ts.UnixMilli(), tms)
	}
	got, err := devotest.ParseLine(line[:len(line)-1])
	if err != nil {
		t.Fatalf("the fake Devo cannot parse %q: %v", line, err)
	}
	if got.Priority != 14 || got.Timestamp != string(m[1]) || got.Host != string(m[2]) || got.Tag != string(m[3]) {
		t.Fatalf("the fake Devo parsed %q as %+v", line, got)
	}
	if cleanToken(host) && got.Host != host {
		t.Fatalf("host %q was written as %q", host, got.Host)
	}
	if cleanToken(tag) && got.Tag != tag {
		t.Fatalf("tag %q was written as %q", tag, got.Tag)
	}
	if cleanMessage(msg) && got.Msg != string(msg) {
		t.Fatalf("message %q was written as %q", msg, got.Msg)
	}
	for _, c := range []byte(got.Msg) {
		if c < ' ' && c != '\t' {
			t.Fatalf("message of %q holds control byte %#x", line, c)
		}
	}
}

func FuzzAppendLine(f *testing.F) {
	dirs, _ := filepath.Glob(filepath.Join("testdata", "lines", "*", "in.jsonl"))
	for _, d := range dirs {
		for _, c := range readLineCases(f, d) {
			f.Add(c.Time, c.Host, c.Tag, c.message(f))
		}
	}
	f.Fuzz(func(t *testing.T, tms int64, host, tag string, msg []byte) {
		line := AppendLine(nil, tms, host, tag, msg)
		checkLine(t, tms, host, tag, msg, line)
		// The word-at-a-time scan gives what a byte-at-a-time one gives, wherever the bytes that
		// need escaping fall.
		for _, pad := range []int{0, 1, 7} {
			padded := append(bytes.Repeat([]byte("x"), pad), msg...)
			if got, want := appendMessage(nil, padded), appendMessageBytewise(nil, padded); !bytes.Equal(got, want) {
				t.Fatalf("appendMessage(%q) = %q, byte-wise %q", padded, got, want)
			}
		}
		// Appending to a non-empty buffer leaves its prefix alone.
		prefixed := AppendLine([]byte("prefix"), tms, host, tag, msg)
		if !bytes.Equal(prefixed, append([]byte("prefix"), line...)) {
			t.Fatalf("AppendLine depends on dst's content")
		}
	})
}

func TestValidateTag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tag    string
		wantOK bool
	}{
		{"edr.darktrace.respond.model_breach", true},
		{"my.app", true},
		{"a.b.c.d.e.f", true},
		{"web.apache.access-lt", true},
		{"my.app.dt.breach", true},
		{"", false},
		{"single", false},
		{"a.b.c.d.e.f.g", false},
		{"my..app", false},
		{".my.app", false},
		{"my.app.", false},
		{"my.app test", false},
		{"my.app\ttest", false},
		{"my.app\ntest", false},
		{"my.app:x", false},
		{"my.app\x00", false},
		{"my.app\u00a0x", false},
		{"my.app\xff", false},
		{"my." + strings.Repeat("a", MaxTagLen-3), true},
		{"my." + strings.Repeat("a", MaxTagLen-2), false},
	}
	for _, tt := range tests {
		err := ValidateTag(tt.tag)
		if (err == nil) != tt.wantOK {
			t.Errorf("ValidateTag(%q) = %v; want ok=%v", tt.tag, err, tt.wantOK)
		}
		if err != nil && !errors.Is(err, ErrInvalidTag) {
			t.Errorf("ValidateTag(%q) = %v; want an error wrapping ErrInvalidTag", tt.tag, err)
		}
	}
}

func BenchmarkAppendLine(b *testing.B) {
	cases := readLineCases(b, filepath.Join("testdata", "lines", "darktrace_events", "in.jsonl"))
	msgs := make([][]byte, len(cases))
	size := 0
	var buf []byte
	for i, c := range cases {
		msgs[i] = c.message(b)
		buf = AppendLine(buf[:0], c.Time, c.Host, c.Tag, msgs[i])
		size += len(buf)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i, c := range cases {
			buf = AppendLine(buf[:0], c.Time, c.Host, c.Tag, msgs[i])
		}
	}
}

// appendMessageBytewise is appendMessage without its word-at-a-time fast path, the reference the
// fuzz target compares it with.
func appendMessageBytewise(dst []byte, msg []byte) []byte {
	start := 0
	for i := 0; i < len(msg); {
		c := msg[i]
		if c < utf8.RuneSelf {
			if c >= ' ' || c == '\t' {
				i++
				continue
			}
			dst = append(dst, msg[start:i]...)
			switch c {
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(msg[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, msg[start:i]...)
			dst = append(dst, "\uFFFD"...)
			i++
			start = i
			continue
		}
		i += size
	}
	return append(dst, msg[start:]...)
}
