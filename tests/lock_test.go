package tests

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// Two processes on one data directory (issue 11: both reported ready,
// then one stopped writing while publishes still succeeded, and after a
// restart a subscription was gone and events came twice). The second now
// fails at once, naming the first's pid; the first keeps working; once it
// stops, a new one starts on the directory.
func TestSecondPipelineOnOneDataDirFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startPipeline(t, dir)
	r := newReceiver(t, nil)
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"}})

	cfg := baseConfig(t)
	cfg.Server = natsx.ServerConfig{DataDir: dir, Listen: "127.0.0.1:0"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	second, err := app.Start(ctx, cfg)
	if err == nil {
		_ = second.Close(context.Background())
		t.Fatal("a second pipeline started on a data directory in use")
	}
	if want := fmt.Sprintf("data directory %s is in use by pid %d", dir, os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("second pipeline: %v\nwant it to say %q", err, want)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("the second pipeline took %s to fail; it must fail at once", took)
	}

	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() == 1 })

	p.stop(t)
	p = startPipeline(t, dir)
	if _, ok := p.Subs.Get(sub.Tenant, sub.ID); !ok {
		t.Fatal("the subscription did not survive the restart")
	}
	p.publish(t, "acme", events.TypeScanStarted, "s2", map[string]any{"scan_id": "s2", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() == 2 })
	p.settle(t)
	if n := uniqueIDs(r); n != 2 || r.count() != 2 {
		t.Errorf("%d requests for %d webhooks, want 2 of 2", r.count(), n)
	}
}
