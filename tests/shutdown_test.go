package tests

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// Ctrl-C with a receiver that never answers took 11.6 s and ended with
// "services did not stop in time" (issue 11), past the 10 s that run
// promises, because the attempt in flight ran to its 15 s timeout. Now the
// stop cuts it at its deadline: Close returns in time, without an error,
// and the job is not lost. It comes back after its AckWait, to the next
// start, without having spent an attempt: the attempt after the restart is
// attempt 1, and nothing was retried or dead-lettered.
func TestStopWithHungReceiverEndsInTimeAndKeepsTheJob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	release := make(chan struct{})
	r := newReceiverWith(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			<-release // never answers, as far as the pipeline is concerned
		}
		w.WriteHeader(http.StatusNoContent)
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the receiver closes
	fullTimeout := func(c *app.Config) { c.Delivery.Timeout = 15 * time.Second }

	p := startPipeline(t, dir, fullTimeout)
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"}})
	id := p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	err := p.Close(ctx)
	took := time.Since(began)
	p.App = nil
	if err != nil {
		t.Errorf("Close: %v", err)
	}
	if took > 10*time.Second {
		t.Errorf("Close took %s, over its 10s deadline", took)
	}
	t.Logf("Close took %s with a request in flight", took.Round(time.Millisecond))
	once.Do(func() { close(release) })

	p = startPipeline(t, dir, fullTimeout)
	want := webhookID("acme", id, sub.ID)
	// The job comes back once its AckWait (2 s + 15 s + 10 s) has run out.
	eventually(t, 45*time.Second, func() bool { return r.count() >= 2 })
	p.settle(t)
	got := r.requests()
	for _, g := range got {
		if g.Header.Get("webhook-id") != want {
			t.Errorf("request with webhook-id %q, want %q", g.Header.Get("webhook-id"), want)
		}
	}
	if len(got) != 2 {
		t.Errorf("%d requests, want 2: the cut one and its redelivery", len(got))
	}
	var recs []attempts.Attempt
	eventually(t, 5*time.Second, func() bool {
		recs, err = p.Attempts.List(context.Background(), attempts.Query{Tenant: "acme", SubscriptionID: sub.ID})
		return err == nil && len(recs) > 0
	})
	if len(recs) != 1 || recs[0].Attempt != 1 || recs[0].Outcome != attempts.OutcomeDelivered {
		t.Errorf("attempt log %+v, want one record: attempt 1, delivered (the cut attempt spends nothing)", recs)
	}
	if dl := p.dlq(t); len(dl) > 0 {
		t.Errorf("dead letters after a stop: %+v", dl)
	}
}
