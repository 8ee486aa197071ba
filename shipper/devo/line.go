// Package devo delivers events to Devo: it encodes them as the syslog lines Devo's own senders
// write, and sends batches of them to one destination (the Devo cloud over TLS, an on-premise
// relay over TCP, Devo's HTTP ingestion endpoint, a file or the console), confirming delivery as
// far as each transport allows.
package devo

import (
	"encoding/binary"
	"time"
	"unicode/utf8"

	"github.com/dtfleet/dtfleet/internal/devotag"
)

// Event is one event to deliver: its time (epoch ms) and its compact JSON message.
type Event struct {
	Time int64
	Msg  []byte
}

// Batch is a run of events of one tag, delivered in order.
type Batch struct {
	Tag    string
	Events []Event
}

// ErrInvalidTag is wrapped by every error ValidateTag returns. No retry can fix it.
var ErrInvalidTag = devotag.ErrInvalid

// MaxTagLen is the longest tag Devo accepts, in bytes (the collector SDK refuses longer ones).
const MaxTagLen = devotag.MaxLen

// priority is the syslog PRI every line carries: facility user (1), severity info (6).
const priority = "<14>"

// The header timestamp is clamped to the years 0001–9999 so that it always has its fixed width.
var (
	minLineMs = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	maxLineMs = time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC).UnixMilli()
)

// AppendLine appends one line exactly as Devo's senders write them,
// "<14>YYYY-MM-DD HH:MM:SS.mmm host tag: message\n", and returns the extended buffer.
//
// The timestamp is tms (epoch milliseconds) in UTC, clamped to the years 0001–9999. host and tag
// are written with every byte that could break the header replaced by '_' (whitespace, control
// characters, ':' and invalid UTF-8); an empty host or tag is written as "-". The message is
// sanitised so that the line never breaks and is valid UTF-8: invalid UTF-8 becomes U+FFFD, '\n'
// and '\r' become the two-character escapes `\n` and `\r`, and every other C0 control character
// except '\t' becomes a JSON-style `\u00XX` escape (so a raw control character inside a JSON string
// turns into the escape JSON would have used). A valid UTF-8 message without C0 controls other than
// '\t' is written unchanged. AppendLine allocates only when dst lacks capacity.
func AppendLine(dst []byte, tms int64, host, tag string, msg []byte) []byte {
	dst = append(dst, priority...)
	dst = appendTimestamp(dst, tms)
	dst = append(dst, ' ')
	dst = appendToken(dst, host)
	dst = append(dst, ' ')
	dst = appendToken(dst, tag)
	dst = append(dst, ':', ' ')
	dst = appendMessage(dst, msg)
	return append(dst, '\n')
}

// appendTimestamp appends tms as "YYYY-MM-DD HH:MM:SS.mmm" in UTC.
func appendTimestamp(dst []byte, tms int64) []byte {
	tms = min(max(tms, minLineMs), maxLineMs)
	t := time.UnixMilli(tms).UTC()
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	ms := t.Nanosecond() / 1e6
	dst = appendDigits(dst, year, 4)
	dst = append(dst, '-')
	dst = appendDigits(dst, int(month), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, day, 2)
	dst = append(dst, ' ')
	dst = appendDigits(dst, hour, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, minute, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, sec, 2)
	dst = append(dst, '.')
	return appendDigits(dst, ms, 3)
}

// appendDigits appends the width low decimal digits of v (v >= 0), zero-padded.
func appendDigits(dst []byte, v, width int) []byte {
	var b [4]byte
	for i := width - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, b[:width]...)
}

// headerSafe reports whether c may appear as is in the host or tag field of a header.
func headerSafe(c byte) bool {
	return c > ' ' && c < utf8.RuneSelf && c != ':' && c != 0x7f
}

// appendToken appends s as a header field: one non-empty run of safe characters.
func appendToken(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, '-')
	}
	i := 0
	for i < len(s) && headerSafe(s[i]) {
		i++
	}
	if i == len(s) {
		return append(dst, s...)
	}
	dst = append(dst, s[:i]...)
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if !headerSafe(c) {
				c = '_'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || isUnicodeSpaceOrControl(r) {
			dst = append(dst, '_')
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}

// isUnicodeSpaceOrControl reports non-ASCII runes that would read as whitespace or control
// characters in a header (C1 controls, NBSP, the Unicode space and line separators); the set is
// the tag validator's, so that a valid tag is always written unchanged.
func isUnicodeSpaceOrControl(r rune) bool { return r >= utf8.RuneSelf && devotag.SpaceOrControl(r) }

const hexDigits = "0123456789abcdef"

// appendMessage appends msg sanitised as AppendLine describes.
func appendMessage(dst []byte, msg []byte) []byte {
	start := 0
	for i := 0; i < len(msg); {
		// Event JSON is mostly printable ASCII: skip it eight bytes at a time. A word holds a
		// byte below ' ' exactly when subtracting 0x20 from each byte sets a high bit (the lowest
		// such byte does so without a borrow), and a byte of 0x80 or above has its own high bit.
		for i+8 <= len(msg) {
			w := binary.LittleEndian.Uint64(msg[i:])
			if ((w-0x2020202020202020)|w)&0x8080808080808080 != 0 {
				break
			}
			i += 8
		}
		if i == len(msg) {
			break
		}
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

// ValidateTag checks Devo's tag rules with the one validator the configuration uses too
// (devotag.Validate): 2–6 dot-separated non-empty levels, at most MaxTagLen bytes, valid UTF-8, no
// whitespace, no control characters and no ':' (which would end the tag in a syslog header).
// Every error wraps ErrInvalidTag.
func ValidateTag(tag string) error { return devotag.Validate(tag) }
