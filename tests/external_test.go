package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// Two processes joined to one external NATS (`scanwire run --nats URL
// --services fanout,delivery`, twice) share the work: every event is
// delivered, once.
func TestTwoReplicasOnExternalNATSDeliverOnce(t *testing.T) {
	t.Parallel()
	ns, err := natsx.StartServer(natsx.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	var replicas []*app.App
	for range 2 {
		a, err := app.Start(context.Background(), app.Config{
			NATSURL:  ns.ClientURL(),
			Topology: natsx.DefaultTopology(),
			Services: []string{app.ServiceFanout, app.ServiceDelivery}, AllowPrivateTargets: true,
			Log: testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close(context.Background()) })
		awaitConsumers(t, a.JS, []string{app.ServiceFanout, app.ServiceDelivery})
		replicas = append(replicas, a)
	}
	p := &pipeline{App: replicas[0]}
	r := newReceiver(t, nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("receiver: %d requests, %d distinct; %s", r.count(), uniqueIDs(r), p.consumers())
		}
	})
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.*"}})
	eventually(t, 5*time.Second, func() bool { _, ok := replicas[1].Subs.Get("acme", sub.ID); return ok })

	const n = 100
	for i := range n {
		scan := fmt.Sprintf("s%d", i)
		p.publish(t, "acme", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t"})
	}
	eventually(t, 20*time.Second, func() bool { return uniqueIDs(r) == n })
	p.settle(t)
	if got := r.count(); got != n {
		t.Errorf("%d requests for %d events: some were delivered twice", got, n)
	}
}
