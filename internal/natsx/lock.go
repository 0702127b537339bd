package natsx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// LockFile is the file in a data directory whose lock says which process
// owns the directory. It holds that process's pid, for people: the lock
// itself is the kernel's (flock), so a process killed with -9 leaves a
// file that no longer locks anything, and the next start takes it over.
const LockFile = "scanwire.lock"

// DataDirInUseError says that another process (or another server of this
// one) holds a data directory. PID is 0 when the holder's pid could not
// be read (it was just starting).
type DataDirInUseError struct {
	Dir string
	PID int
}

func (e *DataDirInUseError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("data directory %s is in use by another process", e.Dir)
	}
	return fmt.Sprintf("data directory %s is in use by pid %d", e.Dir, e.PID)
}

// DataDirLock is the exclusive hold of one process on a data directory.
//
// Two JetStream servers writing one store corrupt it without either
// noticing at once: both start and report ready, then one stops writing
// ("Critical write error") while publishes still succeed, and after a
// restart streams and consumers have lost or repeated state. So whoever
// starts a server on a directory locks it first and keeps the lock until
// the server has shut down.
//
// The lock is flock(2) on Linux, macOS and the BSDs: the kernel releases it
// when the process ends, however it ends. Elsewhere (Windows) LockDataDir
// records the pid but excludes nobody; see lock_other.go.
type DataDirLock struct {
	dir  string
	mu   sync.Mutex
	file *os.File // nil once unlocked
}

// LockDataDir takes the lock of dir (creating dir if need be) and writes
// this process's pid into it. It does not wait: when another process, or
// another lock of this process, holds dir, it fails at once with a
// *DataDirInUseError naming the holder's pid. Unlock releases it.
func LockDataDir(dir string) (*DataDirLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", abs, err)
	}
	path := filepath.Join(abs, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		_ = f.Close()
		if errors.Is(err, errLocked) {
			return nil, &DataDirInUseError{Dir: abs, PID: readPID(path)}
		}
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	// Ours now: whatever pid a killed holder left is replaced.
	if err := writePID(f); err != nil {
		_ = unlockFile(f)
		_ = f.Close()
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	return &DataDirLock{dir: abs, file: f}, nil
}

// Dir is the locked directory, as an absolute path.
func (l *DataDirLock) Dir() string { return l.dir }

// Unlock releases the lock; another process may take dir from then on.
// The file stays (removing it would let two processes lock two different
// files of the same name), emptied of the pid. Calling Unlock again does
// nothing.
func (l *DataDirLock) Unlock() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file == nil {
		return nil
	}
	_ = l.file.Truncate(0)
	err := errors.Join(unlockFile(l.file), l.file.Close())
	l.file = nil
	return err
}

// errLocked is what lockFile returns when someone else holds the lock.
var errLocked = errors.New("locked")

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return err
	}
	return nil
}

// readPID is the pid a holder wrote, or 0.
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
