package jsonscan

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shapeActions is the wrapped shape of Darktrace's /antigena, the one the package's callers use.
var shapeActions = ShapeWrapped("actions")

// splitAll collects Split's events as strings.
func splitAll(r io.Reader, shape Shape) ([]string, error) {
	var got []string
	err := Split(r, shape, func(raw []byte) error {
		got = append(got, string(raw))
		return nil
	})
	return got, err
}

func TestSplit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		shape     Shape
		body      string
		want      []string
		malformed bool
	}{
		{name: "empty array", body: `[]`, want: nil},
		{name: "empty array with whitespace", body: " \r\n\t[ \n ] \n", want: nil},
		{name: "null body", body: `null`, want: nil},
		{name: "null body for actions", shape: shapeActions, body: " null\n", want: nil},
		{name: "byte order mark", body: "\xEF\xBB\xBF[1]", want: []string{`1`}},
		{name: "scalars", body: `[1, -0.5e+10, true, false, null, "s", 0, -0, 1E-2]`,
			want: []string{`1`, `-0.5e+10`, `true`, `false`, `null`, `"s"`, `0`, `-0`, `1E-2`}},
		{name: "objects compacted", body: "[ {\"a\" : 1 ,\n \"b\" : [ 1 , { } , [ ] ] } ,{\"c\":\"d e\"}]",
			want: []string{`{"a":1,"b":[1,{},[]]}`, `{"c":"d e"}`}},
		{name: "strings keep escapes and brackets", body: `[{"k":"a\"b\\c\/\u00e9\n ] } [ { , :"}]`,
			want: []string{`{"k":"a\"b\\c\/\u00e9\n ] } [ { , :"}`}},
		{name: "escaped backslash before quote", body: `["a\\", "b\\\"c"]`, want: []string{`"a\\"`, `"b\\\"c"`}},
		{name: "utf-8 kept verbatim", body: `["héllo ✓"]`, want: []string{`"héllo ✓"`}},
		{name: "deep nesting", body: `[[[[[[{"a":[[[]]]}]]]]]]`, want: []string{`[[[[[{"a":[[[]]]}]]]]]`}},
		{name: "actions array", shape: shapeActions, body: `[{"codeid":1},{"codeid":2}]`,
			want: []string{`{"codeid":1}`, `{"codeid":2}`}},
		{name: "actions object", shape: shapeActions,
			body: `{"devices":[{"did":1,"x":[{"y":"\"]"}]}], "actions" : [ {"codeid":1} ], "connections":[{"a":null}]}`,
			want: []string{`{"codeid":1}`}},
		{name: "actions null in object", shape: shapeActions, body: `{"actions":null,"devices":[]}`, want: nil},
		{name: "actions key with escape", shape: shapeActions, body: `{"\u0061ctions":[1]}`, want: []string{`1`}},
		{name: "object shape", shape: ShapeObject, body: "{\n \"a\": {\"b\": [1, 2]}\n}\n", want: []string{`{"a":{"b":[1,2]}}`}},
		{name: "empty object shape", shape: ShapeObject, body: `{}`, want: []string{`{}`}},

		{name: "empty body", body: ``, malformed: true},
		{name: "only whitespace", body: " \n ", malformed: true},
		{name: "html page", body: `<!DOCTYPE html><title>Log In | Darktrace</title>`, malformed: true},
		{name: "redirect text", body: `Found. Redirecting to /403`, malformed: true},
		{name: "top-level scalar", body: `42`, malformed: true},
		{name: "top-level string", body: `"API SIGNATURE ERROR"`, malformed: true},
		{name: "object where array expected", body: `{"response":"API SIGNATURE ERROR"}`, malformed: true},
		{name: "array where object expected", shape: ShapeObject, body: `[{}]`, malformed: true},
		{name: "null where object expected", shape: ShapeObject, body: `null`, malformed: true},
		{name: "truncated array", body: `[{"a":1},{"b":`, malformed: true},
		{name: "truncated after element", body: `[{"a":1}`, malformed: true},
		{name: "truncated after comma", body: `[1,`, malformed: true},
		{name: "truncated string", body: `["abc`, malformed: true},
		{name: "truncated escape", body: `["abc\`, malformed: true},
		{name: "truncated unicode escape", body: `["\u00`, malformed: true},
		{name: "truncated literal", body: `[tru`, malformed: true},
		{name: "truncated number exponent", body: `[1e`, malformed: true},
		{name: "truncated object", shape: ShapeObject, body: `{"a":`, malformed: true},
		{name: "trailing garbage", body: `[1] x`, malformed: true},
		{name: "two arrays", body: `[1][2]`, malformed: true},
		{name: "trailing comma", body: `[1,]`, malformed: true},
		{name: "trailing comma in object", body: `[{"a":1,}]`, malformed: true},
		{name: "missing comma", body: `[1 2]`, malformed: true},
		{name: "missing colon", body: `[{"a" 1}]`, malformed: true},
		{name: "unquoted key", body: `[{a:1}]`, malformed: true},
		{name: "unbalanced close", body: `[{"a":1]]`, malformed: true},
		{name: "unbalanced open", body: `[[1]`, malformed: true},
		{name: "bad literal", body: `[nul]`, malformed: true},
		{name: "bad literal case", body: `[True]`, malformed: true},
		{name: "leading zero", body: `[01]`, malformed: true},
		{name: "bare minus", body: `[-]`, malformed: true},
		{name: "plus sign", body: `[+1]`, malformed: true},
		{name: "dot without digits", body: `[1.]`, malformed: true},
		{name: "leading dot", body: `[.5]`, malformed: true},
		{name: "exponent without digits", body: `[1e+]`, malformed: true},
		{name: "bad escape", body: `["\x41"]`, malformed: true},
		{name: "bad unicode escape", body: `["\u12G4"]`, malformed: true},
		{name: "control character in string", body: "[\"a\tb\"]", malformed: true},
		{name: "newline in string", body: "[\"a\nb\"]", malformed: true},
		{name: "single quotes", body: `['a']`, malformed: true},
		{name: "broken byte order mark", body: "\xEF\xBB[]", malformed: true},
		{name: "actions object without actions", shape: shapeActions, body: `{"devices":[]}`, malformed: true},
		{name: "empty actions object", shape: shapeActions, body: `{}`, malformed: true},
		{name: "actions not an array", shape: shapeActions, body: `{"actions":{"codeid":1}}`, malformed: true},
		{name: "actions object with bad member", shape: shapeActions, body: `{"actions":[],"devices":[tru]}`, malformed: true},
		{name: "actions object truncated", shape: shapeActions, body: `{"actions":[{"codeid":1}],"devices":[`, malformed: true},
		{name: "too deep", body: "[" + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+2), malformed: true},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte", iotest.OneByteReader},
		{"data with EOF", iotest.DataErrReader},
	}
	for _, tc := range tests {
		for _, rd := range readers {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				t.Parallel()
				got, err := splitAll(rd.wrap(strings.NewReader(tc.body)), tc.shape)
				if tc.malformed {
					if !errors.Is(err, ErrMalformed) {
						t.Fatalf("Split(%q) error = %v, want ErrMalformed", tc.body, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Split(%q): %v", tc.body, err)
				}
				if strings.Join(got, "\n") != strings.Join(tc.want, "\n") || len(got) != len(tc.want) {
					t.Errorf("Split(%q) = %q, want %q", tc.body, got, tc.want)
				}
			})
		}
	}
}

func TestSplitErrors(t *testing.T) {
	t.Parallel()
	errStop := errors.New("stop")
	errNet := errors.New("connection reset")

	t.Run("fn error returned as is and stops", func(t *testing.T) {
		t.Parallel()
		calls := 0
		err := Split(strings.NewReader(`[1,2,3]`), ShapeArray, func([]byte) error {
			calls++
			return errStop
		})
		if err != errStop { //nolint:errorlint // the contract is "as is".
			t.Errorf("err = %v, want errStop itself", err)
		}
		if calls != 1 {
			t.Errorf("fn called %d times, want 1", calls)
		}
	})
	t.Run("fn error from object shape", func(t *testing.T) {
		t.Parallel()
		err := Split(strings.NewReader(`{}`), ShapeObject, func([]byte) error { return errStop })
		if err != errStop { //nolint:errorlint // the contract is "as is".
			t.Errorf("err = %v, want errStop itself", err)
		}
	})
	t.Run("read error is wrapped, not malformed", func(t *testing.T) {
		t.Parallel()
		r := io.MultiReader(strings.NewReader(`[{"a":1},`), iotest.ErrReader(errNet))
		_, err := splitAll(r, ShapeArray)
		if !errors.Is(err, errNet) || errors.Is(err, ErrMalformed) {
			t.Errorf("err = %v, want errNet and not ErrMalformed", err)
		}
	})
	t.Run("unexpected EOF is malformed", func(t *testing.T) {
		t.Parallel()
		r := io.MultiReader(strings.NewReader(`[{"a":1},`), iotest.ErrReader(io.ErrUnexpectedEOF))
		_, err := splitAll(r, ShapeArray)
		if !errors.Is(err, ErrMalformed) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("err = %v, want ErrMalformed and io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("read error after a complete body", func(t *testing.T) {
		t.Parallel()
		r := io.MultiReader(strings.NewReader(`[1]`), iotest.ErrReader(errNet))
		_, err := splitAll(r, ShapeArray)
		if !errors.Is(err, errNet) {
			t.Errorf("err = %v, want errNet", err)
		}
	})
	t.Run("reader without progress", func(t *testing.T) {
		t.Parallel()
		_, err := splitAll(zeroReader{}, ShapeArray)
		if !errors.Is(err, io.ErrNoProgress) {
			t.Errorf("err = %v, want io.ErrNoProgress", err)
		}
	})
	t.Run("events before a defect are delivered", func(t *testing.T) {
		t.Parallel()
		got, err := splitAll(strings.NewReader(`[1,2,x]`), ShapeArray)
		if !errors.Is(err, ErrMalformed) || len(got) != 2 {
			t.Errorf("got %q, %v; want 2 events then ErrMalformed", got, err)
		}
	})
}

// zeroReader returns (0, nil) forever.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }
