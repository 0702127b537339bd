package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// A name that passed at write time but resolves to the metadata address
// at delivery time (DNS rebinding) is refused at dial time and
// dead-lettered as "egress blocked", not retried.
func TestDialTimeGuardDeadLettersRebinding(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	// Written straight into the bucket, as an operator could: the static
	// checks pass (it is a name), only the dial can catch it.
	s := subscriptions.Subscription{ID: subscriptions.NewID(), Tenant: "acme", URL: "https://rebind.example.net/hook",
		Events: []string{"scan.started"}, Profile: "standard-webhooks", Retry: subscriptions.Retry{Schedule: []string{"1s", "1s"}},
		Secrets: []subscriptions.Secret{{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}}
	doc, _ := json.Marshal(s)
	kv, err := p.JS.KeyValue(context.Background(), natsx.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), subscriptions.Key("acme", s.ID), doc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { _, ok := p.Subs.Get("acme", s.ID); return ok })
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 1 })
	dl := p.dlq(t)[0]
	if !strings.HasPrefix(dl.Reason, "egress blocked") || !strings.Contains(dl.Reason, "169.254.169.254") || dl.Attempts != 1 {
		t.Errorf("dead letter %+v, want egress blocked after one attempt", dl)
	}
	// Through the store, the same URL is refused at write time.
	if _, err := p.Store.Create(context.Background(), subscriptions.Subscription{Tenant: "acme", URL: "https://rebind.example.net/hook", Events: []string{"*"}}); err == nil ||
		!strings.Contains(err.Error(), "subscription.url") {
		t.Errorf("write-time check: %v", err)
	}
}

// A receiver that redirects (here to a private address) is not followed:
// the 302 counts as a failed attempt.
func TestRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	private := newReceiver(t, nil)
	r := newReceiverWith(t, func(_ int, w http.ResponseWriter) {
		w.Header().Set("Location", private.URL+"/stolen")
		w.WriteHeader(http.StatusFound)
	})
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"},
		Retry: subscriptions.Retry{Schedule: []string{"1s"}}})
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 1 })
	if dl := p.dlq(t)[0]; dl.LastStatus != http.StatusFound || dl.Attempts != 2 {
		t.Errorf("dead letter %+v, want two attempts ending in 302", dl)
	}
	if n := private.count(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}

// Without --allow-private-targets the API refuses private and http URLs
// with 422 naming the url field.
func TestAPIRefusesPrivateTargets(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway(), func(c *app.Config) { c.AllowPrivateTargets = false })
	acme := p.api(t, acmeKey)
	for _, u := range []string{"http://hooks.example.com/x", "https://10.0.0.1/x", "https://internal.example.net/x", "https://[::ffff:169.254.169.254]/", "https://2852039166/"} {
		var e map[string]any
		if code := acme.do("POST", "/v1/subscriptions", map[string]any{"url": u, "events": []string{"*"}}, &e); code != 422 || e["field"] != "url" {
			t.Errorf("%s: %d %v", u, code, e)
		}
	}
	if code := acme.do("POST", "/v1/subscriptions", map[string]any{"url": "https://hooks.example.com/x", "events": []string{"*"}}, nil); code != 201 {
		t.Errorf("a public https URL: %d", code)
	}
}
