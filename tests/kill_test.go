package tests

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// killHelperEnv hands TestKillHelperProcess its data directory and NATS
// address, "<dir>|<host:port>".
const killHelperEnv = "SCANWIRE_KILL_HELPER"

// TestKillHelperProcess is not a test of its own: it is the scanwire
// process TestKillNineReconciles runs and kills, fan-out and delivery on
// an embedded server, until it is killed.
func TestKillHelperProcess(t *testing.T) {
	dir, addr, ok := strings.Cut(os.Getenv(killHelperEnv), "|")
	if !ok {
		t.Skip("the process TestKillNineReconciles kills")
	}
	cfg := baseConfig(t)
	cfg.Server = natsx.ServerConfig{DataDir: dir, Listen: addr}
	// What was in flight at the kill comes back after its AckWait: short
	// ones keep the test short.
	cfg.Fanout.AckWait, cfg.Delivery.Timeout = 5*time.Second, 2*time.Second
	start(t, cfg, dir, nil)
	select {}
}

// A kill -9 in the middle of a flood loses nothing and makes no job twice
// (issue 12, point 3): the process is killed with events being fanned out
// and jobs being delivered, and started again on its data directory. Every
// event reaches the receiver; each (event, subscription) has exactly one
// job in DELIVERIES, whatever fan-out had stored before its acks were lost;
// a webhook arrives twice only if it was in flight at the kill.
func TestKillNineReconciles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts, kills and restarts a process")
	}
	t.Parallel()
	dir, addr := t.TempDir(), freeAddr(t)
	child := startKillHelper(t, dir, addr)
	client := startClient(t, addr)
	r := newReceiver(t, nil)
	sub := client.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"*"}})
	// The process has the subscription once an event reaches it (one
	// fanned out before its cache had it reaches no one).
	eventually(t, 30*time.Second, func() bool {
		client.publish(t, "acme", events.TypeScanStarted, "warm-up", map[string]any{"scan_id": "warm-up", "target": "app.example.com"})
		deadline := time.Now().Add(time.Second)
		for r.count() == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		return r.count() > 0
	})

	// A backlog, published at once, so that the kill finds fan-out and
	// delivery both at work.
	const scans, perScan = 30, 20
	want := map[string]bool{}
	for i := range scans * perScan {
		scan := fmt.Sprintf("k%d", i%scans)
		m := eventMsg(t, "acme", events.TypeFindingHigh, scan, finding(scan, fmt.Sprintf("t%d", i), 7.5, "kill"))
		want[webhookID("acme", m.Header.Get("ce-id"), sub.ID)] = true
		if _, err := client.JS.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-client.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("the events were not all stored within 30s")
	}
	arrived := func() int {
		n := 0
		for _, g := range r.requests() {
			if want[g.Header.Get("webhook-id")] {
				n++
			}
		}
		return n
	}
	eventually(t, 30*time.Second, func() bool { return arrived() > len(want)/4 })
	if err := child.Process.Kill(); err != nil { // SIGKILL: no shutdown, no ack sent
		t.Fatal(err)
	}
	_ = child.Wait()
	killedAt := arrived()
	startKillHelper(t, dir, addr)

	got := map[string]bool{}
	eventually(t, 60*time.Second, func() bool {
		for _, g := range r.requests() {
			if id := g.Header.Get("webhook-id"); want[id] {
				got[id] = true
			}
		}
		return len(got) == len(want)
	})
	perID := map[string]int{}
	for _, g := range r.requests() {
		perID[g.Header.Get("webhook-id")]++
	}
	repeats := 0
	for id, n := range perID {
		if n > 1 {
			repeats++
		}
		if n > 2 {
			t.Errorf("webhook %s arrived %d times", id, n)
		}
	}
	// What fan-out stored: one job per event, copies (.r) aside.
	stored := map[string]int{}
	for _, m := range natsxtest.Messages(t, client.JS, natsx.StreamDeliveries, "deliveries.acme."+sub.ID+".") {
		if !strings.HasSuffix(m.Subject, ".r") {
			stored[m.Header.Get(jobs.HeaderWebhookID)]++
		}
	}
	for id := range want {
		if stored[id] != 1 {
			t.Errorf("webhook %s has %d jobs, want 1", id, stored[id])
		}
	}
	t.Logf("killed after %d of %d webhooks had arrived; %d arrived twice", killedAt, len(want), repeats)
}

// startKillHelper runs TestKillHelperProcess on dir and addr and waits
// until its consumers exist; the test kills it when it ends.
func startKillHelper(t *testing.T, dir, addr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelperProcess$")
	cmd.Env = append(os.Environ(), killHelperEnv+"="+dir+"|"+addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var js jetstream.JetStream
	eventually(t, 30*time.Second, func() bool {
		nc, err := natsx.Connect("nats://"+addr, "kill-probe", nil, slog.New(slog.DiscardHandler))
		if err != nil {
			return false
		}
		t.Cleanup(nc.Close)
		js, err = natsx.JetStream(nc)
		return err == nil
	})
	awaitConsumers(t, js, []string{app.ServiceFanout, app.ServiceDelivery})
	return cmd
}

// startClient is a scanwire process with no services joined to the NATS
// server at addr, as the CLI is: it writes subscriptions and publishes.
func startClient(t *testing.T, addr string) *pipeline {
	t.Helper()
	cfg := baseConfig(t)
	cfg.NATSURL = "nats://" + addr
	cfg.Services = nil
	return start(t, cfg, "", nil)
}

// freeAddr is a loopback address no one listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
