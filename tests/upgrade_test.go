package tests

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// A data directory of an earlier release, whose DELIVERIES is a work queue
// holding a job on the old subject (deliveries.<tenant>.<subscription>),
// starts: the stream is migrated to limits retention and the job is
// delivered, with its webhook-id.
func TestUpgradeFromAWorkQueueDeliversItsJobs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := newReceiver(t, nil)
	old := startPipeline(t, dir, withServices(), withNATSKeys())
	sub := old.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"}})
	ctx := context.Background()
	var cfg jetstream.StreamConfig
	for _, c := range natsx.DefaultTopology().StreamConfigs() {
		if c.Name == natsx.StreamDeliveries {
			cfg = c
		}
	}
	if err := old.JS.DeleteStream(ctx, natsx.StreamDeliveries); err != nil {
		t.Fatal(err)
	}
	cfg.Retention, cfg.MaxAge = jetstream.WorkQueuePolicy, 0 // as earlier releases made it
	if _, err := old.JS.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	e := events.New("acme", testSource, events.TypeScanStarted, "s-old", []byte(`{"scan_id":"s-old","target":"app.example.com"}`))
	structured, err := events.Structured(&e)
	if err != nil {
		t.Fatal(err)
	}
	j := jobs.Job{WebhookID: jobs.WebhookID(events.KeyOf(&e), sub.ID), Tenant: "acme", SourceTenant: "acme", SubscriptionID: sub.ID,
		EventID: e.ID(), EventType: e.Type(), ScanID: "s-old", Event: structured, Queued: time.Now().UTC()}
	body, _ := json.Marshal(j)
	m := nats.NewMsg("deliveries.acme." + sub.ID) // the old subject
	m.Data = body
	m.Header.Set(nats.MsgIdHdr, j.WebhookID)
	if _, err := old.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	old.stop(t)

	p := startPipeline(t, dir, withServices(app.ServiceFanout, app.ServiceDelivery), withNATSKeys())
	eventually(t, 20*time.Second, func() bool { return r.count() == 1 })
	if got := r.requests()[0].Header.Get("webhook-id"); got != j.WebhookID {
		t.Errorf("webhook-id %q, want the old job's %q", got, j.WebhookID)
	}
	s, err := p.JS.Stream(ctx, natsx.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Retention; got != jetstream.LimitsPolicy {
		t.Errorf("DELIVERIES retention %v after the upgrade, want limits", got)
	}
}
