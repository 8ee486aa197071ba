package bus

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LockFile is the file in nats.store_dir whose flock the process running the embedded server
// on that store holds (`dtfleet run`): a second server on the same store would corrupt it.
const LockFile = "dtfleet.lock"

// StoreLockedError says another process runs the embedded server on Dir.
type StoreLockedError struct {
	Dir    string
	Holder string // "host <name> pid <n>" from the lock file, or ""
}

func (e *StoreLockedError) Error() string {
	who := "another dtfleet process"
	if e.Holder != "" {
		who += " (" + e.Holder + ")"
	}
	return fmt.Sprintf("nats.store_dir %s is in use by %s: its embedded NATS server owns the store", e.Dir, who)
}

func lockPath(dir string) string { return filepath.Join(dir, LockFile) }

func holderLine() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("host %s pid %d", host, os.Getpid())
}

func readHolder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
