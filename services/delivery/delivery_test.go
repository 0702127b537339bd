package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
	"github.com/scanwire/scanwire/internal/tenants"
)

// fixture is one delivery service over its own embedded nats-server: the
// streams and buckets of DefaultTopology, a subscription store and a
// running cache over the real bucket, the attempt log, the HTTP client of
// production (egress dialer, otelhttp) and the OTel SDK.
type fixture struct {
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	policy   *egress.Policy
	store    *subscriptions.Store
	subs     *subscriptions.Cache
	tenants  *tenants.Store
	attempts *attempts.Log
	tel      *telemetry.Telemetry
	client   *http.Client
	cfg      Config
	d        *Delivery
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	js := natsxtest.JetStream(t)
	log := slog.New(slog.DiscardHandler)
	fx := &fixture{js: js, kv: natsxtest.KeyValue(t, js, natsx.BucketSubscriptions), policy: &egress.Policy{AllowPrivate: true}, cfg: cfg}
	fx.store = subscriptions.NewStore(fx.kv, fx.policy)
	fx.subs = subscriptions.NewCache(fx.kv, fx.policy, log)
	fx.tenants = tenants.NewStore(natsxtest.KeyValue(t, js, natsx.BucketTenants))
	fx.attempts = attempts.NewLog(js, log)

	tp := sdktrace.NewTracerProvider()
	tel, err := telemetry.New(t.Context(), telemetry.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	fx.tel = tel
	fx.client = NewHTTPClient(cfg.Defaults().Timeout, fx.policy.DialContext, tel.TracerProvider())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = fx.subs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		fx.client.CloseIdleConnections()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = tel.Shutdown(sctx)
		_ = tp.Shutdown(sctx)
	})
	select {
	case <-fx.subs.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("subscription cache not ready in 10s")
	}
	fx.d = fx.delivery(fx.subs)
	return fx
}

// delivery builds a delivery service of the fixture over the cache subs.
func (fx *fixture) delivery(subs *subscriptions.Cache) *Delivery {
	return New(fx.js, Deps{Subs: subs, Store: fx.store, Tenants: fx.tenants, Client: fx.client, Attempts: fx.attempts,
		Telemetry: fx.tel}, slog.New(slog.DiscardHandler), fx.cfg)
}

// subscribe stores a subscription and waits until the cache has it.
func (fx *fixture) subscribe(t *testing.T, s subscriptions.Subscription) *subscriptions.Subscription {
	t.Helper()
	created, err := fx.store.Create(t.Context(), s)
	if err != nil {
		t.Fatalf("create subscription: %v", err)
	}
	natsxtest.Eventually(t, "the cache to hold "+created.ID, func() bool {
		_, ok := fx.subs.Get(created.Tenant, created.ID)
		return ok
	})
	return created
}

// queued is a job stored in DELIVERIES, with the trace context fan-out
// would have given it.
type queued struct {
	job   *jobs.Job
	trace trace.SpanContext
	tp    string // its traceparent header
}

// queue stores a job for sub as fan-out does: a scan.finished event in
// structured mode, on its own subject, with a producer span's traceparent.
func (fx *fixture) queue(t *testing.T, sub *subscriptions.Subscription) queued {
	t.Helper()
	scan := "s-" + strings.ToLower(subscriptions.NewID()[len("sub_"):])
	e := events.New(sub.Tenant, "//scanners/test", events.TypeScanFinished, scan,
		fmt.Appendf(nil, `{"scan_id":%q,"target":"app.example.com","status":"completed"}`, scan))
	structured, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	j := &jobs.Job{WebhookID: jobs.WebhookID(e.ID(), sub.ID), Tenant: sub.Tenant, SourceTenant: sub.Tenant, SubscriptionID: sub.ID,
		EventID: e.ID(), EventType: e.Type(), ScanID: scan, Event: structured, Queued: time.Now().UTC()}
	m, err := j.Msg()
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := fx.tel.Tracer.Start(t.Context(), "queue "+m.Subject, trace.WithSpanKind(trace.SpanKindProducer))
	telemetry.Inject(ctx, m.Header)
	span.End()
	if _, err := fx.js.PublishMsg(t.Context(), m); err != nil {
		t.Fatalf("queue job: %v", err)
	}
	return queued{job: j, trace: span.SpanContext(), tp: m.Header.Get("traceparent")}
}

// consumer is the delivery consumer of Run (the test fetches from it or
// runs the consume loop over it; a fixture has one).
func (fx *fixture) consumer(t *testing.T) jetstream.Consumer {
	t.Helper()
	cons, err := fx.js.CreateOrUpdateConsumer(t.Context(), natsx.StreamDeliveries, jetstream.ConsumerConfig{
		Durable: "delivery-test", FilterSubject: "deliveries.>", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: fx.d.ackWait(), MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

// fetch returns n jobs as the consumer hands them out, for direct calls of
// the handler.
func (fx *fixture) fetch(t *testing.T, n int) []jetstream.Msg {
	t.Helper()
	cons := fx.consumer(t)
	var out []jetstream.Msg
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		batch, err := cons.Fetch(n-len(out), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
	}
	if len(out) != n {
		t.Fatalf("fetched %d jobs, want %d", len(out), n)
	}
	return out
}

// consume runs the real consume loop over fx.d's handler and settled
// hook, as Run does, recording each settlement.
func (fx *fixture) consume(t *testing.T) *natsxtest.Settled {
	t.Helper()
	return natsxtest.Consume(t, fx.js, fx.consumer(t), fx.d.handle, fx.d.settled)
}

// attemptsOf flushes the attempt log and returns the records of sub.
func (fx *fixture) attemptsOf(t *testing.T, sub *subscriptions.Subscription) []attempts.Attempt {
	t.Helper()
	fx.attempts.Flush(t.Context())
	recs, err := fx.attempts.List(t.Context(), attempts.Query{Tenant: sub.Tenant, SubscriptionID: sub.ID})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// receiver is a real HTTP server that records every request and answers
// with answer.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	got      []*http.Request
	inFlight int
}

func newReceiver(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, r.Clone(context.Background()))
		rc.inFlight++
		rc.mu.Unlock()
		defer func() { rc.mu.Lock(); rc.inFlight--; rc.mu.Unlock() }()
		answer(w, r)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func status(code int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// hang answers only once release is closed (or the client gives up).
func hang(release <-chan struct{}) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
		}
	}
}

func (rc *receiver) requests() []*http.Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

func (rc *receiver) hanging() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.inFlight
}

// A 2xx finishes the job: it leaves DELIVERIES, the attempt is recorded as
// delivered, and the request was signed and carried the job's trace.
func TestDeliveredOn200(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{})
	rc := newReceiver(t, status(http.StatusOK))
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"}})
	q := fx.queue(t, sub)

	log := fx.consume(t)
	s := log.Wait(t, 1)[0]
	if s.Err != nil || s.Outcome.Verdict() != natsx.Done {
		t.Fatalf("outcome %s settled with %v, want done", s.Outcome, s.Err)
	}
	reqs := rc.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	h := reqs[0].Header
	if got := h.Get("Webhook-Id"); got != q.job.WebhookID {
		t.Errorf("webhook-id %q, want %q", got, q.job.WebhookID)
	}
	if sig := h.Get("Webhook-Signature"); !strings.HasPrefix(sig, "v1,") {
		t.Errorf("webhook-signature %q, want a standard-webhooks v1 signature", sig)
	}
	if got := h.Get("X-Scanwire-Tenant"); got != "acme" {
		t.Errorf("X-Scanwire-Tenant %q, want acme", got)
	}
	if tp := h.Get("Traceparent"); !strings.Contains(tp, q.trace.TraceID().String()) {
		t.Errorf("receiver's traceparent %q is not in the job's trace %s", tp, q.trace.TraceID())
	}

	var recs []attempts.Attempt
	natsxtest.Eventually(t, "the attempt record", func() bool { recs = fx.attemptsOf(t, sub); return len(recs) > 0 })
	if len(recs) != 1 {
		t.Fatalf("%d attempt records, want 1: %+v", len(recs), recs)
	}
	if r := recs[0]; r.Outcome != attempts.OutcomeDelivered || r.Status != http.StatusOK || r.Attempt != 1 ||
		r.WebhookID != q.job.WebhookID || r.EventID != q.job.EventID {
		t.Errorf("attempt record %+v, want attempt 1 of %s delivered with 200", r, q.job.WebhookID)
	}
	natsxtest.Eventually(t, "the job to be done", func() bool { return fx.done(t) })
}

// A 503 stores the next attempt as a scheduled message on the retry
// subject, due after the schedule's first delay, carrying the attempt
// count and the job's trace context; the job itself is acked.
func TestRetryScheduledOn503(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{})
	rc := newReceiver(t, status(http.StatusServiceUnavailable))
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"},
		Retry: subscriptions.Retry{Schedule: []string{"1m", "2m", "3m"}}})
	q := fx.queue(t, sub)

	log := fx.consume(t)
	s := log.Wait(t, 1)[0]
	if s.Err != nil || s.Outcome.Verdict() != natsx.Retry || s.Outcome.Reason() == nil || s.Outcome.Reason().String() != "attempt_failed" {
		t.Fatalf("outcome %s settled with %v, want retry (attempt_failed)", s.Outcome, s.Err)
	}
	_, due := fx.scheduledCopy(t, q, 1, true)
	if d := time.Until(due); d < 50*time.Second || d > 62*time.Second {
		t.Errorf("retry due in %s, want about the schedule's first delay of 1m", d)
	}

	var recs []attempts.Attempt
	natsxtest.Eventually(t, "the attempt record", func() bool { recs = fx.attemptsOf(t, sub); return len(recs) > 0 })
	if r := recs[0]; len(recs) != 1 || r.Outcome != attempts.OutcomeRetry || r.Status != http.StatusServiceUnavailable || r.RetryIn != "1m0s" {
		t.Errorf("attempt records %+v, want one retry after a 503, retry_in 1m0s", recs)
	}
	// The failing streak is recorded on the subscription.
	natsxtest.Eventually(t, "the subscription's failing streak", func() bool {
		s, _, err := fx.store.Get(t.Context(), "acme", sub.ID)
		return err == nil && s.FailingSince != nil
	})
}

// A 410 dead-letters the job (code "gone") and disables the subscription;
// the next job for it is dead-lettered as disabled without a request.
func TestGoneDeadLettersAndDisables(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{})
	rc := newReceiver(t, status(http.StatusGone))
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"},
		Retry: subscriptions.Retry{Schedule: []string{"1m", "2m", "3m"}}})
	q := fx.queue(t, sub)

	log := fx.consume(t)
	s := log.Wait(t, 1)[0]
	if s.Err != nil || s.Outcome.Verdict() != natsx.Reject || s.Outcome.Reason() != dlq.ReasonGone {
		t.Fatalf("outcome %s settled with %v, want reject (gone)", s.Outcome, s.Err)
	}
	var dead []*jetstream.RawStreamMsg
	natsxtest.Eventually(t, "the dead letter", func() bool {
		dead = natsxtest.Messages(t, fx.js, natsx.StreamDLQ, "")
		return len(dead) > 0
	})
	if len(dead) != 1 || dead[0].Subject != dlq.Subject("acme", sub.ID) {
		t.Fatalf("DLQ holds %d messages (first on %s), want one on %s", len(dead), dead[0].Subject, dlq.Subject("acme", sub.ID))
	}
	var raw map[string]any
	if err := json.Unmarshal(dead[0].Data, &raw); err != nil || raw["code"] != "gone" {
		t.Errorf("dead letter %s: code %v (%v), want \"gone\"", dead[0].Data, raw["code"], err)
	}
	var dl dlq.DeadLetter
	if err := json.Unmarshal(dead[0].Data, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.Code != dlq.ReasonGone || dl.LastStatus != http.StatusGone || dl.Attempts != 1 || dl.Job.WebhookID != q.job.WebhookID {
		t.Errorf("dead letter %+v, want job %s gone after 1 attempt with 410", dl, q.job.WebhookID)
	}
	stored, _, err := fx.store.Get(t.Context(), "acme", sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !stored.Disabled || !strings.Contains(stored.DisabledReason, "410") {
		t.Errorf("subscription disabled=%v (%q), want disabled for the 410", stored.Disabled, stored.DisabledReason)
	}
	natsxtest.Eventually(t, "the job to be done", func() bool { return fx.done(t) })

	// Once the cache knows, the next job is not sent at all.
	natsxtest.Eventually(t, "the cache to see the subscription disabled", func() bool {
		s, ok := fx.subs.Get("acme", sub.ID)
		return ok && s.Disabled
	})
	fx.queue(t, sub)
	s = log.Wait(t, 2)[1]
	if s.Err != nil || s.Outcome.Verdict() != natsx.Reject || s.Outcome.Reason() != dlq.ReasonSubscriptionDisabled {
		t.Errorf("next job: outcome %s settled with %v, want reject (subscription_disabled)", s.Outcome, s.Err)
	}
	if n := len(rc.requests()); n != 1 {
		t.Errorf("receiver got %d requests, want only the first", n)
	}
}

// A job whose subscription was deleted is dead-lettered with that reason
// and never sent.
func TestDeletedSubscriptionDeadLetters(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{})
	rc := newReceiver(t, status(http.StatusOK))
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"}})
	q := fx.queue(t, sub)
	if err := fx.store.Delete(t.Context(), "acme", sub.ID); err != nil {
		t.Fatal(err)
	}
	natsxtest.Eventually(t, "the cache to drop the subscription", func() bool {
		_, ok := fx.subs.Get("acme", sub.ID)
		return !ok
	})

	dl, n := fx.consumeDeadLetter(t, dlq.ReasonSubscriptionDeleted)
	if n != 1 || dl.Code != dlq.ReasonSubscriptionDeleted || dl.Job.WebhookID != q.job.WebhookID {
		t.Errorf("DLQ holds %d entries, first %+v; want one subscription_deleted for %s", n, dl, q.job.WebhookID)
	}
	if n := len(rc.requests()); n != 0 {
		t.Errorf("receiver got %d requests for a deleted subscription", n)
	}
}

// consumeDeadLetter runs the consume loop until it has settled one job,
// which must be dead-lettered for want, and returns the first entry of the
// DLQ and how many it holds.
func (fx *fixture) consumeDeadLetter(t *testing.T, want dlq.Reason) (dlq.DeadLetter, int) {
	t.Helper()
	log := fx.consume(t)
	s := log.Wait(t, 1)[0]
	if s.Err != nil || s.Outcome.Verdict() != natsx.Reject || s.Outcome.Reason() != want {
		t.Fatalf("outcome %s settled with %v, want reject (%s)", s.Outcome, s.Err, want)
	}
	var dead []*jetstream.RawStreamMsg
	natsxtest.Eventually(t, "the dead letter", func() bool {
		dead = natsxtest.Messages(t, fx.js, natsx.StreamDLQ, "")
		return len(dead) > 0
	})
	var dl dlq.DeadLetter
	if err := json.Unmarshal(dead[0].Data, &dl); err != nil {
		t.Fatal(err)
	}
	return dl, len(dead)
}

// A subscription document broken by hand in the bucket is not served: its
// job is dead-lettered as subscription_invalid, with the document's
// problem as the reason, and nothing is sent.
func TestInvalidSubscriptionDeadLetters(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{})
	rc := newReceiver(t, status(http.StatusOK))
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"}})
	q := fx.queue(t, sub)
	if _, err := fx.kv.Put(t.Context(), subscriptions.Key("acme", sub.ID), []byte(`{"id":"`+sub.ID+`","tenant":"acme"}`)); err != nil {
		t.Fatal(err)
	}
	natsxtest.Eventually(t, "the cache to drop the broken document", func() bool {
		_, ok := fx.subs.Get("acme", sub.ID)
		return !ok
	})

	dl, _ := fx.consumeDeadLetter(t, dlq.ReasonSubscriptionInvalid)
	if dl.Code != dlq.ReasonSubscriptionInvalid || dl.Job.WebhookID != q.job.WebhookID || !strings.Contains(dl.Reason, "invalid") {
		t.Errorf("dead letter %+v; want subscription_invalid for %s, naming the problem", dl, q.job.WebhookID)
	}
	if n := len(rc.requests()); n != 0 {
		t.Errorf("receiver got %d requests for an invalid subscription", n)
	}
}

// A subscription created a moment ago, which this replica's cache has not
// seen yet, is read from the store: the job is delivered, not
// dead-lettered as deleted.
func TestSubscriptionNotYetCachedIsDelivered(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{})
	rc := newReceiver(t, status(http.StatusNoContent))
	sub, err := fx.store.Create(t.Context(), subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	q := fx.queue(t, sub)
	// This replica's cache is one that has not caught up (it never will:
	// it does not run), as another replica's fresh write finds it.
	behind := subscriptions.NewCache(fx.kv, fx.policy, slog.New(slog.DiscardHandler))
	d := fx.delivery(behind)
	if _, ok := behind.Get("acme", sub.ID); ok {
		t.Fatal("the lagging cache already has the subscription; the test proves nothing")
	}
	msg := fx.fetch(t, 1)[0]
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if o := d.handle(ctx, msg); o.Verdict() != natsx.Done {
		t.Fatalf("outcome %s, want done", o)
	}
	reqs := rc.requests()
	if len(reqs) != 1 || reqs[0].Header.Get("Webhook-Id") != q.job.WebhookID {
		t.Errorf("receiver got %d requests, want the job %s", len(reqs), q.job.WebhookID)
	}
	if n := len(natsxtest.Messages(t, fx.js, natsx.StreamDLQ, "")); n != 0 {
		t.Errorf("DLQ holds %d entries, want none", n)
	}
}

// A subscription re-enabled a moment ago, which this replica's cache still
// holds as disabled, is read from the store: the job is delivered, not
// dead-lettered as disabled.
func TestSubscriptionReenabledAfterTheCacheIsDelivered(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{})
	rc := newReceiver(t, status(http.StatusNoContent))
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"}})
	disable := func(off bool) {
		t.Helper()
		if _, err := fx.store.Change(t.Context(), "acme", sub.ID, func(s *subscriptions.Subscription) error {
			s.Disabled, s.DisabledReason = off, ""
			if off {
				s.DisabledReason = "paused by hand"
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	disable(true)
	// A cache that saw the subscription disabled and then stopped following
	// the bucket: it lags every change after that.
	stale := subscriptions.NewCache(fx.kv, fx.policy, slog.New(slog.DiscardHandler))
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = stale.Run(ctx) }()
	natsxtest.Eventually(t, "the stale cache to hold the subscription disabled", func() bool {
		s, ok := stale.Get("acme", sub.ID)
		return ok && s.Disabled
	})
	stop()
	<-done
	disable(false)
	q := fx.queue(t, sub)

	msg := fx.fetch(t, 1)[0]
	if o := fx.delivery(stale).handle(t.Context(), msg); o.Verdict() != natsx.Done {
		t.Fatalf("outcome %s, want done", o)
	}
	if reqs := rc.requests(); len(reqs) != 1 || reqs[0].Header.Get("Webhook-Id") != q.job.WebhookID {
		t.Errorf("receiver got %d requests, want the job %s", len(reqs), q.job.WebhookID)
	}
}

// When every slot of a host is held by a hung receiver, a further job for
// it is deferred (not attempted, not holding a worker) within SlotWait;
// once the requests end, the host's entry is gone.
func TestCongestedEndpointDefers(t *testing.T) {
	t.Parallel()
	const slotWait = time.Second
	fx := newFixture(t, Config{PerEndpoint: 2, SlotWait: slotWait, DeferDelay: 200 * time.Millisecond, Timeout: 10 * time.Second})
	release := make(chan struct{})
	var once sync.Once
	rc := newReceiver(t, hang(release))
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the receiver closes
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"}})
	for range 3 {
		fx.queue(t, sub)
	}
	msgs := fx.fetch(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	hung := make(chan natsx.Outcome, 2)
	for _, m := range msgs[:2] {
		go func() { hung <- fx.d.handle(ctx, m) }()
	}
	natsxtest.Eventually(t, "both slots to be held by the hung receiver", func() bool { return rc.hanging() == 2 })
	if n := fx.d.gate.state().hosts; n != 1 {
		t.Errorf("%d endpoint entries while one host is busy, want 1", n)
	}

	start := time.Now()
	o := fx.d.handle(ctx, msgs[2])
	took := time.Since(start)
	if o.Verdict() != natsx.Defer || o.Reason() == nil || o.Reason().String() != "endpoint_congested" {
		t.Errorf("outcome %s, want defer (endpoint_congested)", o)
	}
	if took > slotWait+500*time.Millisecond {
		t.Errorf("deferring took %s, want about SlotWait (%s) at most", took, slotWait)
	}
	if n := len(rc.requests()); n != 2 {
		t.Errorf("receiver got %d requests, want 2: a deferred job is not attempted", n)
	}
	if n := fx.d.gate.state().hosts; n != 1 {
		t.Errorf("%d endpoint entries after the deferral, want still 1 (two workers hold it)", n)
	}

	once.Do(func() { close(release) })
	for range 2 {
		select {
		case o := <-hung:
			if o.Verdict() != natsx.Done {
				t.Errorf("released attempt: outcome %s, want done", o)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("released attempts did not end in 10s")
		}
	}
	natsxtest.Eventually(t, "the endpoint and tenant entries to go", func() bool {
		st := fx.d.gate.state()
		return st.hosts == 0 && st.tenants == 0
	})
}

// An attempt ends by the handler's deadline (derived from AckWait in the
// consume loop), not by the longer per-attempt Timeout.
func TestAttemptBoundedByHandlerDeadline(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, Config{Timeout: 10 * time.Second})
	release := make(chan struct{})
	var once sync.Once
	rc := newReceiver(t, hang(release))
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	sub := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rc.URL + "/hook", Events: []string{"*"},
		Retry: subscriptions.Retry{Schedule: []string{"1m"}}})
	q := fx.queue(t, sub)
	msg := fx.fetch(t, 1)[0]

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	o := fx.d.handle(ctx, msg)
	took := time.Since(start)
	if took >= 5*time.Second {
		t.Errorf("attempt took %s with a 300ms deadline and a 10s timeout", took)
	}
	if o.Verdict() != natsx.Retry {
		t.Errorf("outcome %s, want retry: the attempt timed out", o)
	}
	if n := len(rc.requests()); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
	var recs []attempts.Attempt
	natsxtest.Eventually(t, "the attempt record", func() bool { recs = fx.attemptsOf(t, sub); return len(recs) > 0 })
	if r := recs[0]; r.WebhookID != q.job.WebhookID || r.Status != 0 || !strings.Contains(r.Error, "timeout") {
		t.Errorf("attempt record %+v, want a timeout without a status", r)
	}
}
