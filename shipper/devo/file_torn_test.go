package devo

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dtfleet/dtfleet/internal/config"
)

// TestFileOutputDropsTornLine checks that a file output opened on a file whose last line was torn
// (the process was killed in the middle of a Send) drops the fragment, so that the next confirmed
// batch starts on a line of its own and complete lines before the fragment stay untouched.
func TestFileOutputDropsTornLine(t *testing.T) {
	t.Parallel()
	good := string(AppendLine(nil, 1_700_000_000_000, "h", "my.app.t", []byte(`{"a":1}`)))
	long := strings.Repeat("x", 70<<10) // longer than one read block of dropTornLine
	tests := []struct {
		name, before, kept string
	}{
		{"empty", "", ""},
		{"complete lines", good + good, good + good},
		{"torn after complete lines", good + `<14>2024-05-01 00:00:00.000 h my.app.t: {"pb`, good},
		{"only a torn line", `<14>2024-05-01 00:00`, ""},
		{"long torn line", good + "<14>" + long, good},
		{"long complete line then torn", good + long + "\n" + "<14>2024", good + long + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "devo.log")
			if err := os.WriteFile(path, []byte(tt.before), 0o640); err != nil {
				t.Fatal(err)
			}
			out, err := NewOutput("file_1", config.Output{Type: config.OutputFile, Config: config.OutputConfig{Path: path, Hostname: "h"}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			b := &Batch{Tag: "my.app.t", Events: []Event{{Time: 1_700_000_000_000, Msg: []byte(`{"a":1}`)}}}
			if err := out.Send(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.kept + good; string(got) != want {
				t.Errorf("file after reopening and one Send:\n got %.200q\nwant %.200q", got, want)
			}
		})
	}
}
