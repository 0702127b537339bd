//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package natsx

import "os"

// lockFile excludes nobody on this system: scanwire locks data directories
// with flock(2), which Windows and the other systems built here lack.
// There, the pid in the lock file is only a note, and keeping one process
// per data directory is the operator's job.
func lockFile(*os.File) error { return nil }

func unlockFile(*os.File) error { return nil }
