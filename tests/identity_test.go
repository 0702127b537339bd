package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// A CloudEvents id is unique per source only. Two tenants, and two
// scanners of one tenant, that send the same id all have their events
// delivered, each under its own webhook-id; an exact repeat (same tenant,
// source and id) is still a duplicate, through NATS and through the API.
func TestEventIdentityIsPerTenantAndSource(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme, globex := newReceiver(t, nil), newReceiver(t, nil)
	acmeSub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: acme.URL, Events: []string{"scan.started"}})
	globexSub := p.subscribe(t, subscriptions.Subscription{Tenant: "globex", URL: globex.URL, Events: []string{"scan.started"}})

	const id = "evt-shared-1"
	publish := func(tenant, source, scan string) bool {
		t.Helper()
		e := events.New(tenant, source, events.TypeScanStarted, scan, fmt.Appendf(nil, `{"scan_id":%q,"target":"t"}`, scan))
		e.SetID(id)
		subject, _ := events.Subject(tenant, scan, events.TypeScanStarted)
		ack, err := events.Publish(context.Background(), p.JS, subject, &e)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Duplicate
	}
	post := func(key, tenant, source, scan string) bool {
		t.Helper()
		var out struct {
			Duplicate bool `json:"duplicate"`
		}
		body := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":%q,"type":"scan.started","subject":%q,"tenant":%q,`+
			`"datacontenttype":"application/json","data":{"scan_id":%q,"target":"t"}}`, id, source, scan, tenant, scan)
		if code := p.api(t, key).do("POST", "/v1/events", body, &out, "Content-Type", "application/cloudevents+json"); code != 202 {
			t.Fatalf("POST /v1/events as %s from %s: %d, want 202", tenant, source, code)
		}
		return out.Duplicate
	}

	if publish("acme", "//scanners/a", "s1") || publish("acme", "//scanners/b", "s2") || publish("globex", "//scanners/a", "s3") {
		t.Fatal("an event with another tenant's or source's id was taken for a duplicate (NATS)")
	}
	if post(acmeKey, "acme", "//scanners/c", "s4") || post(globexKey, "globex", "//scanners/c", "s5") {
		t.Fatal("an event with another tenant's or source's id was taken for a duplicate (API)")
	}
	if !publish("acme", "//scanners/a", "s1") || !post(globexKey, "globex", "//scanners/c", "s5") {
		t.Error("an exact repeat (same tenant, source and id) was not a duplicate")
	}

	eventually(t, 10*time.Second, func() bool { return acme.count() >= 3 && globex.count() >= 2 })
	p.settle(t)
	if acme.count() != 3 || globex.count() != 2 {
		t.Fatalf("acme got %d and globex %d webhooks, want 3 and 2 (one per distinct event)", acme.count(), globex.count())
	}
	want := map[string]string{ // webhook-id -> scan
		jobs.WebhookID(events.Key("acme", "//scanners/a", id), acmeSub.ID):     "s1",
		jobs.WebhookID(events.Key("acme", "//scanners/b", id), acmeSub.ID):     "s2",
		jobs.WebhookID(events.Key("acme", "//scanners/c", id), acmeSub.ID):     "s4",
		jobs.WebhookID(events.Key("globex", "//scanners/a", id), globexSub.ID): "s3",
		jobs.WebhookID(events.Key("globex", "//scanners/c", id), globexSub.ID): "s5",
	}
	for _, r := range append(acme.requests(), globex.requests()...) {
		var ce struct {
			ID      string `json:"id"`
			Subject string `json:"subject"`
		}
		if err := json.Unmarshal(r.Body, &ce); err != nil {
			t.Fatal(err)
		}
		wh := r.Header.Get("webhook-id")
		if scan, ok := want[wh]; !ok || scan != ce.Subject || ce.ID != id {
			t.Errorf("webhook-id %s for scan %s (event %s): not the (tenant, source, id) of that event", wh, ce.Subject, ce.ID)
		}
		delete(want, wh)
	}
}
