package main

import (
	"embed"
	"strings"
)

// helpFS holds the long help of the commands, one help/NAME.txt per command, kept out of the Go
// files so that they stay flags and wiring.
//
//go:embed help/*.txt
var helpFS embed.FS

// help returns the long help of the command name ("" for a missing file, which TestHelpTexts
// catches).
func help(name string) string {
	b, _ := helpFS.ReadFile("help/" + name + ".txt")
	return strings.TrimSuffix(string(b), "\n")
}
