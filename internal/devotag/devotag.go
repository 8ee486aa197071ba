// Package devotag is the one validator of Devo tags. It is a leaf package so that both the
// configuration (which refuses a bad override_devo_tag or devo_tag before anything runs) and the
// Devo line encoder (which refuses to send a batch with a bad tag) use the same rules: a tag the
// configuration accepts is a tag the encoder sends.
package devotag

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxLen is the longest tag Devo accepts, in bytes (the Devo collector SDK refuses longer ones).
const MaxLen = 1024

// ErrInvalid is wrapped by every error Validate returns. No retry can fix it.
var ErrInvalid = errors.New("invalid Devo tag")

// Validate checks Devo's tag rules: 2 to 6 dot-separated non-empty levels, at most MaxLen bytes,
// valid UTF-8, no whitespace or control character (ASCII or Unicode, see SpaceOrControl) and no
// ':' (which would end the tag in a syslog header). It returns nil for a valid tag, otherwise an
// error wrapping ErrInvalid that quotes the tag (cut to 64 bytes) and says what is wrong.
func Validate(tag string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %.64q: %s", ErrInvalid, tag, fmt.Sprintf(format, args...))
	}
	switch {
	case tag == "":
		return fmt.Errorf("%w: the tag is empty; expected 2 to 6 levels such as my.app.darktrace.breach", ErrInvalid)
	case len(tag) > MaxLen:
		return fmt.Errorf("%w: the tag is %d bytes long; Devo accepts at most %d", ErrInvalid, len(tag), MaxLen)
	case !utf8.ValidString(tag):
		return bad("it is not valid UTF-8")
	}
	levels, empty := 1, false
	levelLen := 0
	for _, r := range tag {
		switch {
		case r == '.':
			empty = empty || levelLen == 0
			levels++
			levelLen = 0
			continue
		case r == ':' || SpaceOrControl(r):
			return bad("it must not contain spaces, control characters or ':'")
		}
		levelLen++
	}
	empty = empty || levelLen == 0
	if levels < 2 || levels > 6 {
		return bad("it has %d dot-separated level(s); expected 2 to 6 levels such as my.app.darktrace.breach", levels)
	}
	if empty {
		return bad("it has an empty level; expected 2 to 6 non-empty dot-separated levels such as my.app.darktrace.breach")
	}
	return nil
}

// SpaceOrControl reports the runes that read as whitespace or as a control character in a syslog
// header: ASCII space and controls (DEL included), C1 controls, NBSP, the Unicode space and line
// separators and the byte order mark. Such a rune in a tag would split or hide it.
func SpaceOrControl(r rune) bool {
	switch {
	case r <= ' ', r == 0x7f, r >= 0x80 && r <= 0x9f, r == 0xa0, r == 0x1680, r >= 0x2000 && r <= 0x200a,
		r == 0x2028, r == 0x2029, r == 0x202f, r == 0x205f, r == 0x3000, r == 0xfeff:
		return true
	}
	return false
}
