package delivery

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// A job for a slow endpoint that finds the slow budget spent, when
// MaxNaked deferred jobs are out already, is not attempted and not naked:
// it is stored again as a scheduled message with the same attempt number
// and its trace context, and acked, so it waits outside the consumer's
// ack-pending set. It is counted by reason. When its time comes it is
// delivered like any job, as attempt 1.
func TestDeferredBeyondMaxNakedIsScheduled(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{SlowBudget: 1, DeferDelay: time.Second, DeferMax: 2 * time.Second, MaxNaked: 1})
	fx.d.deferred.takeNaked("other", 1) // one deferred job is out naked already
	rc := newReceiver(t, status(http.StatusOK))
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"}})
	// The host is known slow, and another tenant's request to it holds the
	// whole slow budget.
	fx.d.gate.mu.Lock()
	fx.d.gate.slow.mark(host(sub.URL), time.Now())
	fx.d.gate.mu.Unlock()
	held, r := fx.d.gate.acquire(t.Context(), "other", sub.URL, 0)
	if held == nil {
		t.Fatalf("the budget's one request refused (%s)", r.reason)
	}
	q := fx.queue(t, sub)

	log := fx.consume(t)
	s := log.Wait(t, 1)[0]
	if s.Err != nil || s.Outcome.Verdict() != natsx.Retry || s.Outcome.Reason() != deferSlow {
		t.Fatalf("outcome %s settled with %v, want retry (endpoint_slow) with a scheduled copy", s.Outcome, s.Err)
	}
	if n := len(rc.requests()); n != 0 {
		t.Errorf("receiver got %d requests, want none: a deferred job is not attempted", n)
	}
	fx.scheduledCopy(t, q, 0, true) // attempt 0: no attempt was made
	if n := consumerAckPending(t, fx); n != 0 {
		t.Errorf("%d jobs ack pending, want 0: a deferred job waits in the stream", n)
	}
	if got := scrape(t, fx); !strings.Contains(got, `scanwire_deliveries_deferred_total{reason="endpoint_slow"} 1`) {
		t.Errorf("deferral not counted by reason; metrics:\n%s", got)
	}

	// The budget is free again and the host answered quickly: the copy,
	// due within DeferMax and a half, is delivered as attempt 1.
	held.release(false)
	s = log.Wait(t, 2)[1]
	if s.Err != nil || s.Outcome.Verdict() != natsx.Done {
		t.Fatalf("outcome %s settled with %v, want done", s.Outcome, s.Err)
	}
	if reqs := rc.requests(); len(reqs) != 1 || reqs[0].Header.Get("Webhook-Id") != q.job.WebhookID {
		t.Errorf("receiver got %d requests, want the job %s once", len(reqs), q.job.WebhookID)
	}
	if recs := fx.attemptsOf(t, sub); len(recs) != 1 || recs[0].Attempt != 1 {
		t.Errorf("attempt records %+v, want one, attempt 1", recs)
	}
}

// Deferred jobs are naked (no message written) up to MaxNaked of them at
// once, a quarter of that per tenant; beyond that they are stored as
// scheduled messages, so naked jobs never fill MaxAckPending.
func TestNakedDeferralsBounded(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{MaxNaked: 8, DeferDelay: time.Minute})
	rc := newReceiver(t, status(http.StatusOK))
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"}})
	for range 3 {
		fx.queue(t, sub)
	}
	msgs := fx.fetch(t, 3)
	var verdicts []natsx.Verdict
	for _, msg := range msgs {
		meta, err := msg.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		job, err := jobs.Decode(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		o := fx.d.deferJob(msg, meta, job, refusal{reason: deferTenantShare})
		if o.Reason() != deferTenantShare {
			t.Errorf("outcome %s, want reason tenant_share", o)
		}
		verdicts = append(verdicts, o.Verdict())
	}
	if want := []natsx.Verdict{natsx.Defer, natsx.Defer, natsx.Retry}; !slices.Equal(verdicts, want) {
		t.Errorf("verdicts %v, want %v: two naked (the tenant's quarter of MaxNaked), then scheduled", verdicts, want)
	}
}

// Scheduled deferrals are spread out to fall due at most
// scheduledDeferralRate a second: with a thousand out already, the next
// waits ten seconds at least, whatever its endpoint's own delay.
func TestScheduledDeferralsSpreadOut(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{MaxNaked: 1})
	fx.d.deferred.takeNaked("other", 1)
	for range 999 {
		fx.d.deferred.takeSlot("acme", time.Now())
	}
	rc := newReceiver(t, status(http.StatusOK))
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"}})
	q := fx.queue(t, sub)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = natsx.Consume(ctx, fx.consumer(t), func(_ context.Context, msg jetstream.Msg) natsx.Outcome {
			meta, _ := msg.Metadata()
			job, _ := jobs.Decode(msg.Data())
			return fx.d.deferJob(msg, meta, job, refusal{reason: deferSlow, slow: true, slowFor: time.Second})
		}, natsx.Options{Workers: 1, JS: fx.js})
	}()
	t.Cleanup(func() { cancel(); <-done })
	_, due := fx.scheduledCopy(t, q, 0, false)
	if d := time.Until(due); d < 9*time.Second || d > 12*time.Second {
		t.Errorf("due in %s, want about 10s: the thousandth scheduled deferral at 100 a second", d)
	}
}

// done reports whether the delivery consumer has handed out every job and
// had each acked or terminated: DELIVERIES keeps jobs once done (see
// natsx.Topology), so what is left to do is the consumer's.
func (fx *fixture) done(t *testing.T) bool {
	t.Helper()
	info, err := fx.consumer(t).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending == 0 && info.NumAckPending == 0
}

// consumerAckPending is the test consumer's count of jobs handed out and
// not yet settled.
// scheduledCopy waits until job q is replaced by one scheduled copy on
// retries.<webhook id>.<attempt> (and, with settled, the delivery consumer
// has nothing left of it), checks what every such copy is: the job with
// attempt as its attempt count, its trace, due on the job's copy subject
// at an "@at" time. It returns the copy and when it is due.
func (fx *fixture) scheduledCopy(t *testing.T, q queued, attempt int, settled bool) (*jobs.Job, time.Time) {
	t.Helper()
	var left []*jetstream.RawStreamMsg
	natsxtest.Eventually(t, "the job to be replaced by its scheduled copy", func() bool {
		left = natsxtest.Messages(t, fx.js, natsx.StreamDeliveries, "retries.")
		return len(left) == 1 && (!settled || fx.done(t))
	})
	m := left[0]
	if want := jobs.RetrySubject(q.job.WebhookID, attempt); m.Subject != want {
		t.Fatalf("DELIVERIES holds %s, want the scheduled copy on %s", m.Subject, want)
	}
	copied, err := jobs.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if copied.Attempt != attempt || copied.WebhookID != q.job.WebhookID || copied.EventID != q.job.EventID {
		t.Errorf("scheduled copy %+v, want job %s with attempt %d", copied, q.job.WebhookID, attempt)
	}
	if got := m.Header.Get("traceparent"); got != q.tp {
		t.Errorf("scheduled copy's traceparent %q, want the job's %q", got, q.tp)
	}
	if got, want := m.Header.Get(jetstream.ScheduleTargetHeader), q.job.CopySubject(); got != want {
		t.Errorf("copy scheduled to %q, want %q", got, want)
	}
	at, ok := strings.CutPrefix(m.Header.Get(jetstream.ScheduleHeader), "@at ")
	due, err := time.Parse(time.RFC3339, at)
	if !ok || err != nil {
		t.Fatalf("schedule %q, want @at <RFC 3339 time>", m.Header.Get(jetstream.ScheduleHeader))
	}
	return copied, due
}

func consumerAckPending(t *testing.T, fx *fixture) int {
	t.Helper()
	info, err := fx.consumer(t).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending
}

// scrape reads the fixture's metrics as Prometheus would.
func scrape(t *testing.T, fx *fixture) string {
	t.Helper()
	srv := httptest.NewServer(fx.tel.Handler)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// One tenant's deferrals spend neither another tenant's naked budget nor
// its place in the scheduled spacing: with a hostile tenant's quarter of
// the naked budget and a thousand scheduled deferrals out, a healthy
// tenant's job is still naked, and once the naked budget is spent its
// scheduled copy is due as soon as its own delay allows.
func TestDeferralsArePerTenant(t *testing.T) {
	t.Parallel()
	var c deferrals
	for c.takeNaked("hostile", 8) {
	}
	if c.nakedBy["hostile"] != 2 {
		t.Fatalf("a tenant took %d of a naked budget of 8, want a quarter (2)", c.nakedBy["hostile"])
	}
	if !c.takeNaked("healthy", 8) {
		t.Error("a healthy tenant found the naked budget spent by another's backlog")
	}
	now := time.Now()
	for range 1000 {
		c.takeSlot("hostile", now)
	}
	if due := c.takeSlot("hostile", now); due.Sub(now) != 10*time.Second {
		t.Errorf("the hostile tenant's 1,001st scheduled deferral is due in %s, want 10s (100 a second)", due.Sub(now))
	}
	if due := c.takeSlot("healthy", now); !due.Equal(now) {
		t.Errorf("a healthy tenant's scheduled deferral is due in %s, want now: spaced behind another's backlog", due.Sub(now))
	}
	c.releaseNaked("healthy")
	if _, ok := c.nakedBy["healthy"]; ok {
		t.Error("a tenant with nothing out still has an entry")
	}
}
