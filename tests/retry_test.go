package tests

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// 429 with Retry-After: 2 makes the next attempt wait about two seconds,
// whatever the schedule says.
func TestRetryAfterIsHonoured(t *testing.T) {
	// Serial: it bounds the gap from above (4s), which a loaded machine running the other tests could stretch.
	p := startPipeline(t, "")
	var r *receiver
	r = newReceiverWith(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"},
		Retry: subscriptions.Retry{Schedule: []string{"100ms"}}})
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() == 2 })
	got := r.requests()
	if gap := got[1].At.Sub(got[0].At); gap < 1900*time.Millisecond || gap > 4*time.Second {
		t.Errorf("second attempt came %s after a Retry-After of 2s", gap)
	}
}

// 410 Gone disables the subscription with a reason and dead-letters the
// job; no further attempts are made, and later events are dead-lettered
// as "subscription disabled", not dropped.
func TestGoneDisablesAndDeadLetters(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	r := newReceiver(t, func(int) int { return http.StatusGone })
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"},
		Retry: subscriptions.Retry{Schedule: []string{"100ms", "100ms"}}})
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 1 })
	eventually(t, 5*time.Second, func() bool { s, _ := p.Subs.Get("acme", sub.ID); return s != nil && s.Disabled })
	s, _ := p.Subs.Get("acme", sub.ID)
	if !strings.Contains(s.DisabledReason, "410 Gone") {
		t.Errorf("disabled_reason %q", s.DisabledReason)
	}
	if dl := p.dlq(t)[0]; dl.LastStatus != 410 || dl.Attempts != 1 || !strings.Contains(dl.Reason, "410 Gone") {
		t.Errorf("dead letter %+v", dl)
	}
	p.publish(t, "acme", events.TypeScanStarted, "s2", map[string]any{"scan_id": "s2", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 2 })
	p.settle(t)
	if n := r.count(); n != 1 {
		t.Errorf("%d requests to a gone endpoint, want 1", n)
	}
	if reason := p.dlq(t)[1].Reason; !strings.HasPrefix(reason, "subscription disabled") {
		t.Errorf("later event dead-lettered with %q", reason)
	}
}

// A subscription whose deliveries keep failing longer than the
// auto-disable period is disabled with the reason.
func TestFailingStreakAutoDisables(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", func(c *app.Config) { c.Delivery.AutoDisableAfter = 1500 * time.Millisecond })
	var healthy atomic.Bool
	r := newReceiver(t, func(int) int {
		if healthy.Load() {
			return http.StatusOK
		}
		return http.StatusInternalServerError
	})
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"},
		Retry: subscriptions.Retry{Schedule: []string{"1s", "1s", "1s", "1s"}}})
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 15*time.Second, func() bool { s, _ := p.Subs.Get("acme", sub.ID); return s != nil && s.Disabled })
	s, _ := p.Subs.Get("acme", sub.ID)
	if !strings.Contains(s.DisabledReason, "deliveries failing since") {
		t.Errorf("disabled_reason %q", s.DisabledReason)
	}
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 1 })
	if reason := p.dlq(t)[0].Reason; !strings.HasPrefix(reason, "subscription disabled") {
		t.Errorf("job dead-lettered with %q", reason)
	}

	// Re-enabled, the dead-lettered event is replayable: nothing was lost.
	healthy.Store(true)
	cur, rev, err := p.Store.Get(t.Context(), "acme", sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur.Disabled, cur.DisabledReason, cur.FailingSince = false, "", nil
	if _, err := p.Store.Update(t.Context(), *cur, rev); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { s, _ := p.Subs.Get("acme", sub.ID); return s != nil && !s.Disabled })
	entries, err := p.DLQ.List(t.Context(), "acme", "", 10)
	if err != nil || len(entries) != 1 {
		t.Fatalf("dlq list: %v %+v", err, entries)
	}
	before := r.count()
	if _, err := p.DLQ.Replay(t.Context(), "acme", entries[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return r.count() > before })
	if got := r.requests()[before].Header.Get("webhook-id"); got != entries[0].Job.WebhookID {
		t.Errorf("replay webhook-id %q, want %q", got, entries[0].Job.WebhookID)
	}
}

// Endpoint A never answers and has a thousand jobs queued; endpoint B is
// healthy. B keeps receiving while A's requests hang.
func TestHungEndpointDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("isolation under a hung endpoint takes a few seconds")
	}
	p := startPipeline(t, "", func(c *app.Config) {
		c.Delivery.Workers = 16
		c.Delivery.PerEndpoint = 4
		// Longer than the test can take, however busy the machine: A's
		// requests never time out and come back as new ones, so the
		// requests A has received are the requests in flight to it.
		c.Delivery.Timeout = 5 * time.Minute
	})
	hang := make(chan struct{})
	var hung atomic.Int32
	a := newReceiverWith(t, func(_ int, w http.ResponseWriter) {
		hung.Add(1)
		<-hang
	})
	t.Cleanup(func() { close(hang) })
	b := newReceiver(t, nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("B got %d of 20; %s", b.count(), p.consumers())
		}
	})
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: a.URL, Events: []string{"finding.*"}})
	p.subscribe(t, subscriptions.Subscription{Tenant: "beta", URL: b.URL, Events: []string{"scan.started"}})
	// A thousand jobs for A, in one burst. One scan each: the findings
	// limits admit them all and their records are not contended.
	var queued []*nats.Msg
	for i := range 1000 {
		scan := fmt.Sprintf("s%d", i)
		queued = append(queued, eventMsg(t, "acme", events.TypeFindingHigh, scan, finding(scan, "t", 7, "x")))
	}
	publishBurst(t, p.JS, queued)
	// A holds what the gate leaves it: up to its per-host cap (4) while it
	// is not yet known slow, then the tenant's half of the slow budget (2)
	// once a request has hung for a second. Which, depends on how fast the
	// machine starts the first requests.
	eventually(t, 10*time.Second, func() bool { return hung.Load() >= 2 })
	var healthy []*nats.Msg
	for i := range 20 {
		scan := "b" + string(rune('a'+i))
		healthy = append(healthy, eventMsg(t, "beta", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t"}))
	}
	publishBurst(t, p.JS, healthy)
	eventually(t, 20*time.Second, func() bool { return b.count() == 20 })
	if n := hung.Load(); n > 4 {
		t.Errorf("%d requests in flight to the hung endpoint, cap is 4", n)
	}
}
