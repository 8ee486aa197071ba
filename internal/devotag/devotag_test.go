package devotag

import (
	"errors"
	"strings"
	"testing"
	"unicode"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tag  string
		want string // "" for a valid tag, else a part of the error
	}{
		{"edr.darktrace.respond.model_breach", ""},
		{"my.app", ""},
		{"a.b.c.d.e.f", ""},
		{"my.app.café", ""},
		{"my." + strings.Repeat("a", MaxLen-3), ""},
		{"my." + strings.Repeat("a", MaxLen-2), "at most 1024"},
		{"", "empty"},
		{"single", "has 1 dot-separated level(s); expected 2 to 6 levels"},
		{"a.b.c.d.e.f.g", "has 7 dot-separated level(s)"},
		{"a..b", "empty level"},
		{"a.b.", "empty level"},
		{"my.app test", "must not contain spaces"},
		{"my.app:x", "must not contain spaces, control characters or ':'"},
		{"my.app\u2003x", "must not contain spaces"},
		{"my.app\u0085x", "must not contain spaces"},
		{"my.app\xff", "not valid UTF-8"},
	}
	for _, tt := range tests {
		err := Validate(tt.tag)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Validate(%.40q) = %v; want nil", tt.tag, err)
		case tt.want != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Validate(%.40q) = %v; want an ErrInvalid error containing %q", tt.tag, err, tt.want)
		}
	}
}

// TestSpaceOrControl checks the rune classes against the standard library's idea of whitespace
// and control characters over the whole Basic Multilingual Plane plus the edges: every rune
// unicode.IsSpace or IsControl reports must be refused (the reverse need not hold: the BOM is
// refused too).
func TestSpaceOrControl(t *testing.T) {
	t.Parallel()
	for r := rune(0); r <= 0xffff; r++ {
		if (isStdSpaceOrControl(r)) && !SpaceOrControl(r) {
			t.Errorf("SpaceOrControl(%U) = false; the standard library calls it whitespace or a control character", r)
		}
	}
}

func isStdSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }
