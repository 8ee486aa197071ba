package config

import (
	"errors"
	"fmt"
	"strings"
)

// Error kinds. KindInitVariables is the Devo collector's kind for the rules its error table numbers
// (IDs 1–35); KindConfig is dtfleet's kind for the rules that table has no ID for (ID 0).
const (
	KindInitVariables = "InitVariablesError"
	KindConfig        = "ConfigError"
)

// Error is one configuration or definitions problem. ID is the Devo collector's error ID (1–19 for
// the definitions, 20–35 for the user's file) or 0 for a rule the seed's table does not number.
// Path is the offending key path (for example "inputs.darktrace.credentials.public_token"); Msg
// says what is wrong and what is expected. A seed-numbered Msg already names the path, as the
// Devo collector's messages do.
type Error struct {
	ID   int
	Kind string
	Path string
	Msg  string
	// Line is the 1-based line in the YAML file the problem was found at, or 0 when unknown.
	Line int
}

// Error prints the problem as "InitVariablesError(24): <msg>" for a numbered rule and as
// "ConfigError: <path>: <msg>" for the others.
func (e *Error) Error() string {
	if e.ID > 0 {
		return fmt.Sprintf("%s(%d): %s", e.Kind, e.ID, e.Msg)
	}
	kind := e.Kind
	if kind == "" {
		kind = KindConfig
	}
	if e.Path == "" {
		return kind + ": " + e.Msg
	}
	return kind + ": " + e.Path + ": " + e.Msg
}

// Errors is every problem found in one configuration, in the order they were found. A non-empty
// Errors is what Load, Parse and LoadDefinitions return on invalid input.
type Errors []*Error

// Error prints one problem per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap exposes each problem to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// AsErrors returns the Errors carried by err (possibly wrapped), or nil when err carries none.
func AsErrors(err error) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var e *Error
	if errors.As(err, &e) {
		return Errors{e}
	}
	return nil
}

// seedErr builds a numbered InitVariablesError.
func seedErr(id int, path, msg string) *Error {
	return &Error{ID: id, Kind: KindInitVariables, Path: path, Msg: msg}
}

// cfgErr builds an unnumbered ConfigError.
func cfgErr(path, format string, args ...any) *Error {
	return &Error{Kind: KindConfig, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Seed messages of the Devo collector's error table, with the key path substituted.

func msgMissing(path string) string     { return path + " mandatory property is missing or empty" }
func msgNotDict(path string) string     { return path + " property must be a dictionary" }
func msgNotString(path string) string   { return path + " property must be a string" }
func msgNotInt(path string) string      { return path + " property must be an int" }
func msgQMissing(path string) string    { return `"` + path + `" mandatory property is missing or empty` }
func msgQNotDict(path string) string    { return `"` + path + `" property must be a dictionary` }
func msgQNotString(path string) string  { return `"` + path + `" property must be a string` }
func msgQNotInteger(path string) string { return `"` + path + `" property must be an integer` }
func msgQNegative(path string) string   { return `"` + path + `" property can not be a negative value` }
