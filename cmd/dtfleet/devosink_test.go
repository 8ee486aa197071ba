package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
)

// runDevoSink starts `dtfleet devo-sink args...` and returns the listeners it printed, a cancel
// function, and a channel with the command's error once it returns.
func runDevoSink(t *testing.T, wantListeners int, args ...string) (map[string]string, context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	root := newRootCmd()
	root.SetOut(pw)
	root.SetErr(io.Discard)
	root.SetArgs(append([]string{"--log-level", "error", "devo-sink"}, args...))
	done := make(chan error, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		pw.Close()
		done <- err
	}()
	listeners := map[string]string{}
	sc := bufio.NewScanner(pr)
	for len(listeners) < wantListeners && sc.Scan() {
		kind, addr, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("unexpected output line %q", sc.Text())
		}
		listeners[kind] = addr
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if len(listeners) < wantListeners {
		cancel()
		t.Fatalf("devo-sink printed %v and stopped: %v", listeners, <-done)
	}
	return listeners, cancel, done
}

func TestDevoSinkWritesFilesByTag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pki, err := devotest.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ls, cancel, done := runDevoSink(t, 3, "--listen", "127.0.0.1:0", "--tls", "--ca", pki.CA, "--cert", pki.ServerCert,
		"--key", pki.ServerKey, "--relay-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--out", dir)
	if ls["tls"] == "" || ls["relay"] == "" || !strings.HasPrefix(ls["http"], "http://") {
		t.Fatalf("listeners %v", ls)
	}
	c, err := net.Dial("tcp", ls["relay"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("<14>2024-05-01 12:34:56.789 h my.app.sink: {\"a\":1}\n<14>2024-05-01 12:34:56.789 h my.app.sink: {\"a\":2}\n")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("waiting for the sink's EOF: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("devo-sink: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "my.app.sink.log"))
	if err != nil || string(got) != "{\"a\":1}\n{\"a\":2}\n" {
		t.Fatalf("my.app.sink.log = %q, %v", got, err)
	}
}

func TestDevoSinkFlagErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"no out", []string{"--listen", "127.0.0.1:0"}},
		{"no listener", []string{"--out", "x"}},
		{"tls without files", []string{"--listen", "127.0.0.1:0", "--tls", "--out", "x"}},
		{"files without tls", []string{"--listen", "127.0.0.1:0", "--ca", "ca.crt", "--out", "x"}},
		{"two plain listeners", []string{"--listen", "127.0.0.1:0", "--relay-listen", "127.0.0.1:0", "--out", "x"}},
	}
	for _, tt := range tests {
		root := newRootCmd()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(append([]string{"devo-sink"}, tt.args...))
		err := root.ExecuteContext(t.Context())
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%s: err %v; want exit status 2", tt.name, err)
		}
	}
}
