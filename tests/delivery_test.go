package tests

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// An event published on NATS reaches each matching subscription exactly
// once, signed by the Standard Webhooks rule, and no one else.
func TestEventReachesEachMatchingSubscriptionOnce(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	findings := newReceiver(t, nil)
	finished := newReceiver(t, nil)
	otherTenant := newReceiver(t, nil)
	subF := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: findings.URL, Events: []string{"finding.*"}})
	subS := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: finished.URL, Events: []string{"scan.finished"}})
	p.subscribe(t, subscriptions.Subscription{Tenant: "globex", URL: otherTenant.URL, Events: []string{"finding.*", "scan.finished"}})

	title := `Reflected XSS in <script> & "quotes" — ünïcode`
	highID := p.publish(t, "acme", events.TypeFindingHigh, "scan-1", finding("scan-1", "xss", 7.5, title))
	p.publish(t, "acme", events.TypeScanStarted, "scan-1", map[string]any{"scan_id": "scan-1", "target": "app.example.com"})
	doneID := p.publish(t, "acme", events.TypeScanFinished, "scan-1", map[string]any{"scan_id": "scan-1", "target": "app.example.com", "status": "completed"})

	eventually(t, 10*time.Second, func() bool { return findings.count() >= 1 && finished.count() >= 1 })
	p.settle(t)
	if n := findings.count(); n != 1 {
		t.Errorf("findings receiver got %d requests, want 1", n)
	}
	if n := finished.count(); n != 1 {
		t.Errorf("scan.finished receiver got %d requests, want 1", n)
	}
	if n := otherTenant.count(); n != 0 {
		t.Errorf("another tenant's receiver got %d requests, want 0", n)
	}

	for _, c := range []struct {
		r       *receiver
		sub     *subscriptions.Subscription
		eventID string
		typ     string
	}{{findings, subF, highID, events.TypeFindingHigh}, {finished, subS, doneID, events.TypeScanFinished}} {
		got := c.r.requests()[0]
		if err := verifyStandardWebhook(c.sub.Secrets[0].Secret, got.Header, got.Body); err != nil {
			t.Errorf("%s: signature: %v", c.typ, err)
		}
		if ct := got.Header.Get("Content-Type"); ct != "application/cloudevents+json; charset=utf-8" {
			t.Errorf("%s: content-type %q", c.typ, ct)
		}
		if ua := got.Header.Get("User-Agent"); !strings.HasPrefix(ua, "scanwire/") {
			t.Errorf("%s: user-agent %q", c.typ, ua)
		}
		var ce map[string]any
		if err := json.Unmarshal(got.Body, &ce); err != nil {
			t.Fatalf("%s: body is not JSON: %v", c.typ, err)
		}
		if ce["id"] != c.eventID || ce["type"] != c.typ || ce["tenant"] != "acme" || ce["subject"] != "scan-1" || ce["specversion"] != "1.0" {
			t.Errorf("%s: structured CloudEvent attributes wrong: %v", c.typ, ce)
		}
		if want := webhookID("acme", c.eventID, c.sub.ID); got.Header.Get("webhook-id") != want {
			t.Errorf("%s: webhook-id %q, want %q", c.typ, got.Header.Get("webhook-id"), want)
		}
	}
	var ce struct {
		Data struct {
			Title string `json:"title"`
		} `json:"data"`
	}
	_ = json.Unmarshal(findings.requests()[0].Body, &ce)
	if ce.Data.Title != title {
		t.Errorf("title arrived as %q, want %q", ce.Data.Title, title)
	}
}

// A receiver answering 500, 500, 200 gets three attempts with one
// webhook-id, each freshly timestamped and validly signed.
func TestRetryUntilSuccessKeepsWebhookIDAndResigns(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	r := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"finding.high"},
		Retry: subscriptions.Retry{Schedule: []string{"1s", "1s", "1s"}}})
	p.publish(t, "acme", events.TypeFindingHigh, "scan-2", finding("scan-2", "sqli", 9.1, "SQL injection"))

	eventually(t, 15*time.Second, func() bool { return r.count() >= 3 })
	p.settle(t)
	got := r.requests()
	if len(got) != 3 {
		t.Fatalf("got %d attempts, want 3", len(got))
	}
	var lastTS int64
	for i, g := range got {
		if err := verifyStandardWebhook(sub.Secrets[0].Secret, g.Header, g.Body); err != nil {
			t.Errorf("attempt %d: %v", i+1, err)
		}
		if g.Header.Get("webhook-id") != got[0].Header.Get("webhook-id") {
			t.Errorf("attempt %d: webhook-id %q differs from the first %q", i+1, g.Header.Get("webhook-id"), got[0].Header.Get("webhook-id"))
		}
		ts, _ := strconv.ParseInt(g.Header.Get("webhook-timestamp"), 10, 64)
		if i > 0 && ts <= lastTS {
			t.Errorf("attempt %d: timestamp %d not fresh (previous %d)", i+1, ts, lastTS)
		}
		lastTS = ts
		if i > 0 && g.At.Sub(got[i-1].At) < 900*time.Millisecond {
			t.Errorf("attempt %d came %s after the previous; the schedule says 1s", i+1, g.At.Sub(got[i-1].At))
		}
	}
	if dl := p.dlq(t); len(dl) != 0 {
		t.Errorf("a delivered job was dead-lettered: %+v", dl)
	}
}

// A receiver that always fails ends in DLQ with the reason, after the
// schedule is spent; a healthy subscription of the same event is unaffected.
func TestAlwaysFailingReceiverEndsInDLQ(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	broken := newReceiver(t, func(int) int { return http.StatusBadGateway })
	healthy := newReceiver(t, nil)
	bad := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: broken.URL, Events: []string{"scan.*"},
		Retry: subscriptions.Retry{Schedule: []string{"100ms", "200ms"}}})
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: healthy.URL, Events: []string{"scan.*"}})

	id := p.publish(t, "acme", events.TypeScanStarted, "scan-3", map[string]any{"scan_id": "scan-3", "target": "app.example.com"})
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 1 })
	p.settle(t)

	if n := broken.count(); n != 3 {
		t.Errorf("broken receiver got %d attempts, want 3 (1 + 2 retries)", n)
	}
	if n := healthy.count(); n != 1 {
		t.Errorf("healthy receiver got %d requests, want 1", n)
	}
	dl := p.dlq(t)[0]
	if dl.Job.SubscriptionID != bad.ID || dl.Job.EventID != id || dl.Job.WebhookID != webhookID("acme", id, bad.ID) {
		t.Errorf("dead letter names the wrong job: %+v", dl.Job)
	}
	if dl.LastStatus != http.StatusBadGateway || dl.Attempts != 3 {
		t.Errorf("dead letter last_status=%d attempts=%d, want 502 and 3", dl.LastStatus, dl.Attempts)
	}
	if want := "retries exhausted after 3 attempts: HTTP 502"; dl.Reason != want {
		t.Errorf("reason %q, want %q", dl.Reason, want)
	}
}

// A job whose subscription was deleted meanwhile is dead-lettered with that
// reason rather than dropped.
func TestJobForDeletedSubscriptionIsDeadLettered(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	r := newReceiver(t, func(int) int { return http.StatusServiceUnavailable })
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"},
		Retry: subscriptions.Retry{Schedule: []string{"1s", "1s", "1s", "1s"}}})
	p.publish(t, "acme", events.TypeScanStarted, "scan-4", map[string]any{"scan_id": "scan-4", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() >= 1 })
	if err := p.Store.Delete(t.Context(), "acme", sub.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 1 })
	if got := p.dlq(t)[0].Reason; got != "subscription deleted" {
		t.Errorf("reason %q, want %q", got, "subscription deleted")
	}
}

// A replayed job that fails again goes through its whole schedule again
// and back to the DLQ: its retries are not mistaken by the server's
// dedupe for those of its first life.
func TestReplayedJobThatFailsAgainIsDeadLetteredAgain(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	r := newReceiver(t, func(int) int { return http.StatusInternalServerError })
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"},
		Retry: subscriptions.Retry{Schedule: []string{"1s"}}})
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 1 })
	entries, err := p.DLQ.List(t.Context(), "acme", "", 10)
	if err != nil || len(entries) != 1 {
		t.Fatalf("dlq: %v %+v", err, entries)
	}
	if _, err := p.DLQ.Replay(t.Context(), "acme", entries[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() bool { return len(p.dlq(t)) == 1 && r.count() == 4 })
	p.settle(t)
	if n := r.count(); n != 4 {
		t.Errorf("%d attempts, want 2 in each life", n)
	}
	if dl := p.dlq(t); len(dl) != 1 || dl[0].Attempts != 2 {
		t.Errorf("dead letters after the replay: %+v", dl)
	}
}
