package main

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// runBinary runs the dtfleet binary in dir and returns its exit status, stdout and stderr.
func runBinary(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(dtfleetBinary(t), args...)
	cmd.Dir = dir
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// TestStatusNeverOpensAHeldStore runs `dtfleet run` and then status and replay with
// configurations that cannot reach its listener: they must refuse with a message naming the store
// rather than start a second JetStream server on it; with the right listener status works, and
// once run stopped status opens the store itself.
func TestStatusNeverOpensAHeldStore(t *testing.T) {
	t.Parallel()
	env := newProcEnv(t, 1)
	env.gate.release()
	store := filepath.Join(env.dir, "data")
	out := filepath.Join(env.dir, "out.log")
	addr := freeAddr(t)
	runCfg, _ := env.config(t, "run", fmt.Sprintf("{store_dir: %s, listen: %q}", store, addr), out)
	noneCfg, _ := env.config(t, "none", fmt.Sprintf("{store_dir: %s, listen: none}", store), out)
	wrongCfg, _ := env.config(t, "wrong", fmt.Sprintf("{store_dir: %s, listen: %q}", store, freeAddr(t)), out)

	run := startProc(t, env.dir, "run", "run", "-c", runCfg)
	run.waitLog(t, "embedded NATS ready", nil)
	if log := readFile(t, run.log); !strings.Contains(log, `"msg":"dtfleet version: `) || !strings.Contains(log, ", OS: "+runtime.GOOS+"/"+runtime.GOARCH) {
		t.Errorf("run logged no start-up line with version, build and OS:\n%s", log)
	}

	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"status, listen none", "with nats.listen: none nothing else can reach it", []string{"status", "-c", noneCfg}},
		{"status, wrong listener", "does not answer", []string{"status", "-c", wrongCfg}},
		{"replay, listen none", "with nats.listen: none nothing else can reach it",
			[]string{"replay", "-c", noneCfg, "--service", "modelbreaches", "--from", env.start.Format("2006-01-02T15:04:05Z"), "--to", env.end.Format("2006-01-02T15:04:05Z")}},
		{"failed list, listen none", "is in use by another dtfleet process", []string{"failed", "list", "-c", noneCfg}},
	} {
		code, _, stderr := runBinary(t, env.dir, tc.args...)
		if code == 0 || !strings.Contains(stderr, store) || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr:\n%s", tc.name, code, stderr)
		}
	}
	if code, stdout, stderr := runBinary(t, env.dir, "status", "-c", runCfg); code != 0 || !strings.Contains(stdout, "coordinator leader") {
		t.Errorf("status through the listener: exit %d\n%s%s", code, stdout, stderr)
	}
	run.stopGracefully(t)
	if code, stdout, stderr := runBinary(t, env.dir, "status", "-c", noneCfg); code != 0 || !strings.Contains(stdout, "coordinator leader") {
		t.Errorf("status on the stopped fleet's store: exit %d\n%s%s", code, stdout, stderr)
	}
}
