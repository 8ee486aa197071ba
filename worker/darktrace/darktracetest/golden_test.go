package darktracetest

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// TestGolden pins the generated dataset: the first events of each service for fixed options, and
// the snapshots at a fixed clock. A change in generation shows up here (run with -update to accept
// it on purpose).
func TestGolden(t *testing.T) {
	t.Parallel()
	opts := Options{
		Seed:  1,
		Start: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		End:   time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
		Now:   func() time.Time { return time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC) },
	}
	h := NewHandler(opts)
	for _, svc := range config.Services {
		t.Run(svc, func(t *testing.T) {
			t.Parallel()
			evs := h.Events(svc, opts.Start, opts.Start.Add(2*time.Hour))
			var got bytes.Buffer
			for i, ev := range evs {
				if i == 3 {
					break
				}
				got.Write(ev)
				got.WriteByte('\n')
			}
			path := filepath.Join("testdata", "golden", svc+".jsonl")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Len() == 0 || !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("%s differs from %s (run go test -update to accept):\n%.500s", svc, path, got.String())
			}
		})
	}
}
