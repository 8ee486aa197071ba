//go:build unix

package bus

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockStore takes the exclusive flock on dir/LockFile that says this process runs the embedded
// server on dir. The lock lives as long as the returned file: the kernel drops it when the
// process exits, so a crash leaves no stale lock, only a stale file that the next start reuses.
func lockStore(dir string) (*os.File, error) {
	path := lockPath(dir)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening the store lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &StoreLockedError{Dir: dir, Holder: readHolder(path)}
		}
		return nil, fmt.Errorf("locking the store %s: %w", path, err)
	}
	// Who holds the lock, for the message of the process that is refused.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(holderLine()), 0)
	}
	return f, nil
}
