package fleet

import (
	"log/slog"
	"runtime/debug"
)

// envMemoryLimit is the Go runtime's own setting of the soft memory limit, read at start-up.
const envMemoryLimit = "GOMEMLIMIT"

// setMemoryLimit applies globals.memory_limit_in_mb (limitMB, in MiB; 0: none) as the process's
// soft memory limit and logs what it set, and returns the function that puts back the limit it
// replaced. When GOMEMLIMIT is set (getenv reports it non-empty), the runtime already applied it
// at start-up and it wins: setMemoryLimit leaves the limit alone and logs that the variable
// decides. With limitMB 0 it leaves the runtime's limit (none, unless GOMEMLIMIT) alone too.
//
// The limit is process-wide: fleets run side by side in one process (tests) share it, and the
// restore of the one that returns first puts back the limit it found.
func setMemoryLimit(limitMB int, getenv func(string) string, logger *slog.Logger) (restore func()) {
	nop := func() {}
	if env := getenv(envMemoryLimit); env != "" {
		logger.Info("soft memory limit from the GOMEMLIMIT environment variable; globals.memory_limit_in_mb is not used",
			"GOMEMLIMIT", env, "limit_mib", mib(debug.SetMemoryLimit(-1)), "memory_limit_in_mb", limitMB)
		return nop
	}
	if limitMB <= 0 {
		logger.Info("no soft memory limit (globals.memory_limit_in_mb: 0): the heap may grow to twice its live set")
		return nop
	}
	// The limit covers all the memory the Go runtime maps (heap, stacks, its own metadata), so
	// the process's RSS is about this plus the binary's code.
	prev := debug.SetMemoryLimit(int64(limitMB) << 20)
	logger.Info("soft memory limit set", "limit_mib", limitMB, "from", "globals.memory_limit_in_mb")
	return func() { debug.SetMemoryLimit(prev) }
}

// mib converts a runtime memory limit to MiB for the log; the runtime's "no limit" is -1.
func mib(limit int64) int64 {
	if limit == 1<<63-1 { // math.MaxInt64: no limit
		return -1
	}
	return limit >> 20
}
