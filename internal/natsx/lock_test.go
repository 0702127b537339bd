//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package natsx

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A second lock on a held directory fails at once and names the holder;
// once released, the directory can be taken again.
func TestLockDataDirExcludesASecondHolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pid := readPID(filepath.Join(dir, LockFile)); pid != os.Getpid() {
		t.Errorf("lock file holds pid %d, want %d", pid, os.Getpid())
	}
	_, err = LockDataDir(dir)
	var inUse *DataDirInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second lock: got %v, want a DataDirInUseError", err)
	}
	if want := fmt.Sprintf("data directory %s is in use by pid %d", dir, os.Getpid()); err.Error() != want {
		t.Errorf("second lock: %q, want %q", err, want)
	}
	if err := first.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := first.Unlock(); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
	again, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	_ = again.Unlock()
}

// A lock file left by a process that no longer runs (kill -9 leaves the
// file and its pid) does not block a start.
func TestStaleLockFileDoesNotBlock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, LockFile), []byte("999999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("stale lock file blocked the lock: %v", err)
	}
	defer l.Unlock()
	if pid := readPID(filepath.Join(dir, LockFile)); pid != os.Getpid() {
		t.Errorf("lock file holds pid %d, want ours (%d)", pid, os.Getpid())
	}
}

// lockHelperEnv makes this test binary a process that locks the directory
// it names and waits to be killed (TestLockHelperProcess).
const lockHelperEnv = "SCANWIRE_TEST_LOCK_HELPER_DIR"

func TestLockHelperProcess(t *testing.T) {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		t.Skip("helper process of TestLockIsReleasedWhenItsProcessIsKilled")
	}
	if _, err := LockDataDir(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	time.Sleep(time.Minute)
	os.Exit(0)
}

// Another process's lock is seen, with its pid, and a kill -9 of that
// process frees the directory: the kernel drops a flock with its process.
func TestLockIsReleasedWhenItsProcessIsKilled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	path := filepath.Join(dir, LockFile)
	for deadline := time.Now().Add(10 * time.Second); readPID(path) != cmd.Process.Pid; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the helper process did not lock the directory within 10s")
		}
	}
	_, err := LockDataDir(dir)
	if err == nil || !strings.Contains(err.Error(), "in use by pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("lock held by another process: got %v, want in use by pid %d", err, cmd.Process.Pid)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()
	l, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after kill -9 of its holder: %v", err)
	}
	_ = l.Unlock()
}

// StartServer refuses a directory that is locked, before it starts
// anything, and releases its own lock once its server has shut down.
func TestStartServerLocksItsDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	held, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := StartServer(ServerConfig{DataDir: dir, Listen: "127.0.0.1:0"}, log); err == nil || !strings.Contains(err.Error(), "is in use by pid") {
		t.Fatalf("server on a locked directory: got %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused server touched the store: %v", err)
	}
	_ = held.Unlock()

	ns, err := StartServer(ServerConfig{DataDir: dir, Listen: "127.0.0.1:0"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDataDir(dir); err == nil {
		t.Fatal("the running server's directory could be locked")
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l, err := LockDataDir(dir)
		if err == nil {
			_ = l.Unlock()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock not released after the server shut down: %v", err)
		}
	}
}
