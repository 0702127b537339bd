//go:build unix

package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// freePort is a port of 127.0.0.1 nothing listens on (a moment ago).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Issue 13.1: with SCANWIRE_KEYS_FILE, `run` reads the keys again on
// SIGHUP: a tenant's key removed is refused at its next NATS connection
// and HTTP request, one added is let in, without a restart.
func TestKeysFileReloadsOnSIGHUP(t *testing.T) {
	// This test sends the process SIGHUP: caught here as well, so that no
	// moment without run's handler ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	const acmeKey, globexKey = "acme-file-key-0123456789", "globex-file-key-0123456789"
	file := filepath.Join(t.TempDir(), "keys.env")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# keys\nSCANWIRE_ADMIN_KEY=admin-file-key-0123456789\nSCANWIRE_API_KEYS='acme=" + acmeKey + "'\n")
	t.Setenv(envKeysFile, file)
	t.Setenv("SCANWIRE_ADMIN_KEY", "")
	t.Setenv("SCANWIRE_API_KEYS", "")
	natsAddr, httpAddr := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(t, ctx, "run", "--data", t.TempDir(), "--nats-listen", natsAddr, "--http", httpAddr, "--services", "gateway")
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})

	connects := func(user, key string) bool {
		nc, err := nats.Connect("nats://"+natsAddr, nats.UserInfo(user, key), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
		}
		return err == nil
	}
	get := func(key string) int {
		req, _ := http.NewRequest("GET", "http://"+httpAddr+"/v1/subscriptions", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if !waitFor(20*time.Second, func() bool { return connects("acme", acmeKey) && get(acmeKey) == 200 }) {
		t.Fatal("acme's key from the file does not connect")
	}
	if connects("globex", globexKey) || get(globexKey) != 401 {
		t.Fatal("globex connected before its key was in the file")
	}

	write("SCANWIRE_ADMIN_KEY=admin-file-key-0123456789\nSCANWIRE_API_KEYS=globex=" + globexKey + "\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { return connects("globex", globexKey) && get(globexKey) == 200 }) {
		t.Error("globex's key added to the file is not taken after SIGHUP")
	}
	if connects("acme", acmeKey) || get(acmeKey) != 401 {
		t.Error("acme's key removed from the file still connects after SIGHUP")
	}

	// A file that does not parse leaves the keys as they were.
	write("acme:" + acmeKey + "\n")
	_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	if !connects("globex", globexKey) || connects("acme", acmeKey) {
		t.Error("a broken keys file changed the keys")
	}
	if _, err := loadKeys(); err == nil || strings.Contains(err.Error(), acmeKey) {
		t.Errorf("a broken keys file: %v", err)
	}
}

// Keys come one way: a keys file and the key variables together are an
// error naming both, never a key.
func TestKeysFileAndVariablesConflict(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys.env")
	if err := os.WriteFile(file, []byte("SCANWIRE_ADMIN_KEY=admin-file-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envKeysFile, file)
	t.Setenv("SCANWIRE_API_KEYS", "acme=acme-env-key-0123456789")
	t.Setenv("SCANWIRE_ADMIN_KEY", "")
	_, err := loadKeys()
	if err == nil || !strings.Contains(err.Error(), envKeysFile) || !strings.Contains(err.Error(), "SCANWIRE_API_KEYS") || strings.Contains(err.Error(), "0123456789") {
		t.Errorf("both ways: %v", err)
	}
}

// SCANWIRE_REPLICAS sets --replicas when the flag is not given, and a value
// that is not a count is an error naming the variable. (Replicas a lone
// server cannot have are refused at start, naming the count asked for:
// which shows where it came from.)
func TestReplicasFromTheEnvironment(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"three", nil, "SCANWIRE_REPLICAS"},
		{"-1", nil, "SCANWIRE_REPLICAS"},
		{"3", nil, "--replicas 3: the NATS cluster has 1 server(s)"},
		{"3", []string{"--replicas", "2"}, "--replicas 2: the NATS cluster has 1 server(s)"},
	} {
		t.Setenv("SCANWIRE_REPLICAS", tc.env)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := runCLI(t, ctx, append([]string{"run", "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0", "--http", "127.0.0.1:0"}, tc.args...)...)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SCANWIRE_REPLICAS=%q %v: %v, want %q", tc.env, tc.args, err, tc.want)
		}
	}
}
