package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestHelpTexts checks that every help/NAME.txt is used by the command NAME (its path with
// dashes: failed-clear) and that no command
// lost its long help in the move to help/.
func TestHelpTexts(t *testing.T) {
	t.Parallel()
	entries, err := helpFS.ReadDir("help")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*cobra.Command{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		byName[strings.ReplaceAll(strings.TrimPrefix(c.CommandPath(), "dtfleet "), " ", "-")] = c
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd())
	for _, e := range entries {
		name := e.Name()[:len(e.Name())-len(".txt")]
		c, ok := byName[name]
		if !ok {
			t.Errorf("help/%s has no command %s", e.Name(), name)
			continue
		}
		if c.Long == "" || c.Long != help(name) {
			t.Errorf("command %s does not show help/%s", name, e.Name())
		}
	}
}
