package events

import "github.com/dtfleet/dtfleet/internal/config"

// KeyFromHead names an event too large to read from head, the start of its compact JSON (the
// part the scanner kept, see darktrace.Request.TooLarge): the key Process would give it for
// modelbreaches ("mb:<pbid>") and aianalyst_incidentevents ("ai:<id>"), and "ag:<codeid>" for
// antigena (the action; its state, which completes the dedupe key, comes from fields that may
// lie beyond head). It reports false when the key field is not among the top-level members that
// head holds whole (a value cut off by head's end is never guessed at: a truncated 12345 must not
// read as 123), when head is not the start of an object, and for the snapshot services, whose
// keys do not come from the event.
func KeyFromHead(service string, head []byte) (string, bool) {
	var (
		field, prefix string
		parse         = parseID
	)
	switch service {
	case config.ServiceModelBreaches:
		field, prefix = "pbid", "mb:"
	case config.ServiceIncidentEvents:
		field, prefix, parse = "id", "ai:", parseTextID
	case config.ServiceAntigena:
		field, prefix = "codeid", "ag:"
	default:
		return "", false
	}
	if len(head) == 0 || head[0] != '{' {
		return "", false
	}
	for i := 1; i < len(head); {
		if head[i] != '"' {
			return "", false // '}' of an empty object, or not compact JSON
		}
		end, ok := skipHeadString(head, i)
		if !ok || end >= len(head) || head[end] != ':' {
			return "", false
		}
		name := head[i+1 : end-1]
		i = end + 1
		vend, ok := skipHeadValue(head, i)
		if !ok {
			return "", false
		}
		if string(name) == field {
			k, ok := parse(head[i:vend])
			if !ok {
				return "", false
			}
			return prefix + k, true
		}
		if vend >= len(head) || head[vend] != ',' {
			return "", false
		}
		i = vend + 1
	}
	return "", false
}

// skipHeadString returns the index just past the string starting at head[i] (a '"'), and false
// when head ends inside it.
func skipHeadString(head []byte, i int) (int, bool) {
	for j := i + 1; j < len(head); j++ {
		switch head[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

// skipHeadValue returns the index just past the compact JSON value starting at head[i], and false
// when head ends inside it. A scalar counts as whole only when a delimiter follows it in head.
func skipHeadValue(head []byte, i int) (int, bool) {
	if i >= len(head) {
		return 0, false
	}
	switch head[i] {
	case '"':
		return skipHeadString(head, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(head); j++ {
			switch head[j] {
			case '"':
				end, ok := skipHeadString(head, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		for j := i; j < len(head); j++ {
			switch head[j] {
			case ',', '}', ']':
				return j, true
			}
		}
		return 0, false
	}
}
