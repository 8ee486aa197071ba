package layout

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const module = "github.com/dtfleet/dtfleet"

// imports maps every package directory of the repository (relative, slash-separated) to the
// project packages its non-test files import.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		if _, ok := out[rel]; !ok {
			out[rel] = nil
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == module || strings.HasPrefix(p, module+"/") {
				out[rel] = append(out[rel], strings.TrimPrefix(strings.TrimPrefix(p, module), "/"))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// under reports whether pkg is dir or inside it.
func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

// rule is one import rule: no package under from (except those under allowIn) may import a
// package under to.
type rule struct {
	name     string
	from, to string
}

func TestImportRules(t *testing.T) {
	t.Parallel()
	roles := []string{"coordinator", "worker", "shipper"}
	var rules []rule
	for _, a := range roles {
		for _, b := range roles {
			if a != b {
				rules = append(rules, rule{"roles meet only on the bus", a, b})
			}
		}
		rules = append(rules, rule{"internal packages serve the roles, not the reverse", "proto", a})
	}
	rules = append(rules,
		rule{"the Darktrace client does not import event processing", "worker/darktrace", "worker/events"},
		rule{"nothing imports the command", "coordinator", "cmd"},
		rule{"nothing imports the command", "worker", "cmd"},
		rule{"nothing imports the command", "shipper", "cmd"},
		rule{"nothing imports the command", "internal", "cmd"},
		rule{"nothing imports the command", "proto", "cmd"},
	)
	leaves := []string{"proto", "internal/jsonscan", "internal/devotag"}

	graph := imports(t)
	if len(graph) < 10 {
		t.Fatalf("found only %d packages; is the walk rooted at the repository?", len(graph))
	}
	for pkg, deps := range graph {
		for _, dep := range deps {
			for _, r := range rules {
				if under(pkg, r.from) && under(dep, r.to) {
					t.Errorf("%s imports %s: %s", pkg, dep, r.name)
				}
			}
			for _, leaf := range leaves {
				if pkg == leaf {
					t.Errorf("%s imports %s: it is a leaf and imports no project package", pkg, dep)
				}
			}
		}
	}
}

// TestRuleCatchesViolation checks the walk and the rules on a package made for the purpose, so
// that the rules cannot pass by seeing nothing.
func TestRuleCatchesViolation(t *testing.T) {
	t.Parallel()
	graph := imports(t)
	for _, want := range []string{"coordinator", "worker", "shipper", "proto", "cmd/dtfleet"} {
		if _, ok := graph[want]; !ok {
			t.Errorf("package %s not found by the walk", want)
		}
	}
	found := false
	for _, dep := range graph["cmd/dtfleet"] {
		if under(dep, "coordinator") || under(dep, "internal") {
			found = true
		}
	}
	if !found {
		t.Errorf("cmd/dtfleet imports no project package according to the walk: %v", graph["cmd/dtfleet"])
	}
	if _, err := os.Stat("../../go.mod"); err != nil {
		t.Fatalf("repository root not found: %v", err)
	}
}
