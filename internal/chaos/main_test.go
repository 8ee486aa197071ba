package chaos

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(withBinaryCleanup{m})
}

// withBinaryCleanup runs the tests, then removes the binaries the suite built.
type withBinaryCleanup struct{ m *testing.M }

func (c withBinaryCleanup) Run() int {
	code := c.m.Run()
	if binaries.dir != "" {
		_ = os.RemoveAll(binaries.dir)
	}
	return code
}
