package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/services/delivery"
)

// `scanwire subs craete` and `scanwire dlq lst` printed help and exited 0
// (issue 11). Every command that groups subcommands now fails on one it
// does not have, with a suggestion when one is close.
func TestUnknownSubcommandFails(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"subs", "craete"}, "unknown command \"craete\" for \"scanwire subs\"\n\nDid you mean this?\n\tcreate"},
		{[]string{"dlq", "lst"}, "unknown command \"lst\" for \"scanwire dlq\"\n\nDid you mean this?\n\tlist"},
		{[]string{"rejected", "lst"}, "Did you mean this?\n\tlist"},
		{[]string{"tenants", "sett"}, "Did you mean this?\n\tset"},
		{[]string{"scans", "stat"}, "Did you mean this?\n\tstats"},
		{[]string{"sbus"}, "Did you mean this?\n\tsubs"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if _, err := runCLI(t, context.Background(), tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
	// Whoever adds a command group gets the same.
	var walk func(path []string, c *cobra.Command)
	walk = func(path []string, c *cobra.Command) {
		if !c.HasSubCommands() {
			return
		}
		args := append(append([]string{}, path...), "no-such-command")
		if _, err := runCLI(t, context.Background(), args...); err == nil || !strings.Contains(err.Error(), `unknown command "no-such-command"`) {
			t.Errorf("scanwire %s: got %v, want an unknown command error", strings.Join(args, " "), err)
		}
		if out, err := runCLI(t, context.Background(), path...); err != nil || !strings.Contains(out, "Available Commands:") {
			t.Errorf("scanwire %s: got %v, want its help and no error:\n%s", strings.Join(path, " "), err, out)
		}
		for _, sub := range c.Commands() {
			walk(append(append([]string{}, path...), sub.Name()), sub)
		}
	}
	walk(nil, newRootCmd())
}

func TestVersionFlag(t *testing.T) {
	t.Parallel()
	out, err := runCLI(t, context.Background(), "--version")
	if want := "scanwire version " + delivery.Version + "\n"; err != nil || out != want {
		t.Errorf("--version: %q, %v; want %q", out, err, want)
	}
}

// `--timeout 5` or `--overlap 1d` got Go's parser's words, and `--retry 5`
// the schema's regular expression (issue 11); each now names the units.
func TestDurationFlagsNameTheirUnits(t *testing.T) {
	t.Parallel()
	nowhere := "--nats=nats://127.0.0.1:1"
	for _, args := range [][]string{
		{"run", "--timeout", "5"},
		{"run", "--sync-interval", "1d"},
		{"run", "--auto-disable-after", "5 days"},
		{"demo", "--interval", "2"},
		{"subs", "rotate-secret", nowhere, "sub_1", "--overlap", "1d"},
		{"subs", "test", nowhere, "sub_1", "--wait", "30"},
		{"subs", "create", nowhere, "--tenant", "acme", "--url", "https://93.184.216.34", "--events", "*", "--retry", "5s,5"},
		{"subs", "update", nowhere, "sub_1", "--retry", "1d"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, err := runCLI(t, context.Background(), args...)
			if err == nil || !strings.Contains(err.Error(), "one of ms, s, m or h") {
				t.Errorf("got %v, want the units named", err)
			}
		})
	}
}

// `demo --scans -1` ran (issue 11); negative counts and durations, and
// zero where zero means nothing, are refused before anything starts.
func TestCountsAndDurationsOutOfRangeAreRefused(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--scans", "-1"}, `invalid argument "-1" for "--scans" flag: must not be negative`},
		{[]string{"demo", "--interval", "0s"}, "--interval: must be positive"},
		{[]string{"demo", "--interval", "-2s"}, "must not be negative"},
		{[]string{"run", "--delivery-workers", "0"}, "--delivery-workers: must be at least 1, got 0"},
		{[]string{"run", "--fanout-workers", "-3"}, "must not be negative"},
		{[]string{"run", "--timeout", "0s"}, "--timeout: must be positive"},
		{[]string{"run", "--timeout", "3m"}, "at most 2m0s, got 3m0s"},
		{[]string{"run", "--auto-disable-after", "0s"}, "--auto-disable-after: must be positive"},
		{[]string{"run", "--sync-interval", "-1s"}, "must not be negative"},
		{[]string{"attempts", "--subscription", "sub_1", "--limit", "-1"}, "must not be negative"},
		{[]string{"subs", "create", "--tenant", "acme", "--url", "https://93.184.216.34", "--events", "*", "--retry", "0s"}, `"0s" is not a positive duration`},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			dir := t.TempDir()
			args := append(tt.args, "--nats=nats://127.0.0.1:1")
			if tt.args[0] == "run" || tt.args[0] == "demo" {
				args = append(tt.args, "--data", dir, "--nats-listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
			}
			if _, err := runCLI(t, context.Background(), args...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 0 {
				t.Errorf("refused, yet it wrote %s", entries[0].Name())
			}
		})
	}
}

// A second `run` on a data directory in use fails at once, naming the
// holder's pid, before it starts a server or writes to the store.
func TestSecondRunOnOneDataDirFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := fanoutOnly
	cfg.Server = natsx.ServerConfig{DataDir: dir, Listen: "127.0.0.1:0"}
	cfg.Topology = natsx.DefaultTopology()
	cfg.Log = slog.New(slog.DiscardHandler)
	a, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })

	began := time.Now()
	_, err = runCLI(t, context.Background(), "run", "--data", dir, "--nats-listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	want := fmt.Sprintf("data directory %s is in use by pid %d", dir, os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second run: %v, want %q", err, want)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("the second run took %s to fail", took)
	}
	// The first still works.
	if _, err := runCLI(t, context.Background(), "subs", "list", "--nats", a.ClientURL()); err != nil {
		t.Errorf("the first process stopped answering: %v", err)
	}

	// Refused before it starts a server: the store is not even created.
	held := t.TempDir()
	lock, err := natsx.LockDataDir(held)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if _, err := runCLI(t, context.Background(), "run", "--data", held, "--nats-listen", "127.0.0.1:0", "--http", "127.0.0.1:0"); err == nil {
		t.Fatal("run started on a locked directory")
	}
	if _, err := os.Stat(filepath.Join(held, "jetstream")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused run created its store: %v", err)
	}
}

// SCANWIRE_NATS, set for the client commands, made run and demo skip their
// embedded server and fail with "no servers available" (issue 11). They
// now join an external NATS only when --nats is given.
func TestPipelineJoinsExternalNATSOnlyWithTheFlag(t *testing.T) {
	t.Setenv("SCANWIRE_NATS", "nats://127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := runCLI(t, ctx, "demo", "--scans", "1", "--interval", "50ms", "--flaky=false", "--data", t.TempDir())
	if err != nil || !strings.Contains(out, "5 deliveries verified") {
		t.Fatalf("demo with SCANWIRE_NATS set: %v\n%s", err, out)
	}
	_, err = runCLI(t, ctx, "run", "--nats", "nats://127.0.0.1:1", "--http", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "nats://127.0.0.1:1") {
		t.Errorf("run --nats to nowhere: %v, want the URL named", err)
	}
}

// Logs say nothing of an error that is nil and round durations.
func TestLogsOmitNilErrorsAndRoundDurations(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	g := &globals{logFormat: "text", logLevel: "debug"}
	log, err := g.logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var noErr error
	log.Info("attempt", "status", 503, "err", noErr, "retry_in", 1234567891*time.Nanosecond, "latency", 345678*time.Nanosecond)
	out := buf.String()
	for _, bad := range []string{"err=", "<nil>", "1.234567891s"} {
		if strings.Contains(out, bad) {
			t.Errorf("log line has %q: %s", bad, out)
		}
	}
	for _, want := range []string{"status=503", "retry_in=1.235s", "latency=346µs"} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %q: %s", want, out)
		}
	}
	if got := describe(attempts.Attempt{Status: 503, Outcome: "retry", RetryIn: "1m3.417592716s"}); got != "HTTP 503, retry (retry in 1m3.418s)" {
		t.Errorf("describe: %q", got)
	}
}
