package fanout

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/scanwire/scanwire/internal/callbacks"
	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
	"github.com/scanwire/scanwire/internal/tenants"
)

// fixture is one fan-out over its own embedded nats-server: the streams
// and buckets of DefaultTopology, a subscription store and a running
// cache over the real bucket, the real limiter and callback registry, and
// the OTel SDK.
type fixture struct {
	js     jetstream.JetStream
	store  *subscriptions.Store
	subs   *subscriptions.Cache
	limits *limits.Limiter
	tel    *telemetry.Telemetry
	f      *Fanout
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	js := natsxtest.JetStream(t)
	log := slog.New(slog.DiscardHandler)
	policy := &egress.Policy{AllowPrivate: true}
	subsKV := natsxtest.KeyValue(t, js, natsx.BucketSubscriptions)
	fx := &fixture{
		js:     js,
		store:  subscriptions.NewStore(subsKV, policy),
		subs:   subscriptions.NewCache(subsKV, policy, log),
		limits: limits.New(js, natsxtest.KeyValue(t, js, natsx.BucketLimits)),
	}
	tenantsC := tenants.NewCache(natsxtest.KeyValue(t, js, natsx.BucketTenants), log)

	tp := sdktrace.NewTracerProvider()
	tel, err := telemetry.New(t.Context(), telemetry.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	fx.tel = tel

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = fx.subs.Run(ctx) })
	wg.Go(func() { _ = tenantsC.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = tel.Shutdown(sctx)
		_ = tp.Shutdown(sctx)
	})
	for _, ready := range []<-chan struct{}{fx.subs.Ready(), tenantsC.Ready()} {
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			t.Fatal("caches not ready in 10s")
		}
	}
	fx.f = New(js, Deps{Subs: fx.subs, Tenants: tenantsC, Limits: fx.limits,
		Callbacks: callbacks.New(natsxtest.KeyValue(t, js, natsx.BucketCallbacks), js),
		Egress:    policy, Telemetry: tel}, log, Config{})
	return fx
}

// subscribe stores a subscription and waits until the cache has it.
func (fx *fixture) subscribe(t *testing.T, s subscriptions.Subscription) *subscriptions.Subscription {
	t.Helper()
	if s.URL == "" {
		s.URL = "http://127.0.0.1:9/hook"
	}
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

// published is an event stored in SCAN_EVENTS.
type published struct {
	subject string
	id      string
	key     string // events.Key
	seq     uint64
	trace   trace.SpanContext // of the span the scanner published under
	data    []byte
}

// publish stores a valid CloudEvent as a scanner does, under a span of its
// own so that the trace can be followed into the jobs.
func (fx *fixture) publish(t *testing.T, tenant, typ, scan string, data map[string]any) published {
	t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	e := events.New(tenant, "//scanners/test", typ, scan, b)
	subject, err := events.Subject(tenant, scan, typ)
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := fx.tel.Tracer.Start(t.Context(), "scanner")
	defer span.End()
	ack, err := events.Publish(ctx, fx.js, subject, &e)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return published{subject: subject, id: e.ID(), key: events.KeyOf(&e), seq: ack.Sequence, trace: span.SpanContext(), data: b}
}

// publishRaw stores m as given, for what no well-behaved scanner sends.
func (fx *fixture) publishRaw(t *testing.T, m *nats.Msg) published {
	t.Helper()
	ack, err := fx.js.PublishMsg(t.Context(), m)
	if err != nil {
		t.Fatalf("publish raw: %v", err)
	}
	return published{subject: m.Subject, seq: ack.Sequence, data: m.Data}
}

// fetch returns the event at seq of SCAN_EVENTS as a consumer delivers it
// (with its metadata), for a direct call of the handler.
func (fx *fixture) fetch(t *testing.T, p published) jetstream.Msg {
	t.Helper()
	c, err := fx.js.OrderedConsumer(t.Context(), natsx.StreamScanEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{p.subject}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: p.seq,
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if meta, err := m.Metadata(); err != nil || meta.Sequence.Stream != p.seq {
			t.Fatalf("fetched seq %v (%v), want %d", meta, err, p.seq)
		}
		return m
	}
	t.Fatalf("event %d of %s not fetched: %v", p.seq, p.subject, batch.Error())
	return nil
}

// handle runs the handler as the consume loop would, under a deadline.
func (fx *fixture) handle(t *testing.T, m jetstream.Msg) natsx.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	return fx.f.handle(ctx, m)
}

// consume runs the real consume loop (natsx.Consume, which settles the
// outcomes) over the fan-out's handler and its settled hook, as Run does,
// and records every outcome once it is settled.
func (fx *fixture) consume(t *testing.T) *natsxtest.Settled {
	t.Helper()
	cons, err := fx.js.CreateOrUpdateConsumer(t.Context(), natsx.StreamScanEvents, jetstream.ConsumerConfig{
		Durable: "fanout-test", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return natsxtest.Consume(t, fx.js, cons, fx.f.handle, fx.f.settled)
}

func subjects(msgs []*jetstream.RawStreamMsg) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Subject
	}
	slices.Sort(out)
	return out
}

// sample reads one sample of the Prometheus exposition, or -1 when it is
// not there. series is the metric name with its labels, as exposed:
// `scanwire_events_rejected_total{reason="invalid"}`.
func sample(t *testing.T, tel *telemetry.Telemetry, series string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return -1
}

func finding(scan string, cvss float64, findingID string) map[string]any {
	return map[string]any{"scan_id": scan, "target": "app.example.com", "finding_id": findingID,
		"type": "xss", "title": "Reflected XSS", "cvss_score": cvss}
}

// An invalid event is rejected with its reason: the outcome names it, and
// the consume loop's settle stores the event in REJECTED, headers and body
// as sent plus the reason, then terminates it. Nothing is queued.
func TestInvalidEventsAreRejectedWithTheirReason(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"*"}})

	lowHigh := fx.publish(t, "acme", events.TypeFindingHigh, "s1", finding("s1", 4.1, "f-1"))
	notCE := nats.NewMsg("scans.acme.s2.finding.high")
	notCE.Data = []byte("this is not a CloudEvent")
	undecodable := fx.publishRaw(t, notCE)
	shortSubject := nats.NewMsg("scans.acme.s3")
	shortSubject.Data = []byte(`{}`)
	badSubject := fx.publishRaw(t, shortSubject)
	metadataURL := fx.publish(t, "acme", events.TypeScanStarted, "s4",
		map[string]any{"scan_id": "s4", "target": "app.example.com", "callback_url": "http://169.254.169.254/latest/meta-data"})

	cases := []struct {
		name     string
		ev       published
		reason   events.RejectReason
		label    string
		rejected string // subject of the copy
		mentions string // in the human-readable reason
	}{
		{"finding.high with a medium score", lowHigh, events.RejectInvalid, "invalid", "rejected.acme", "cvss_score"},
		{"not a CloudEvent", undecodable, events.RejectUndecodable, "undecodable", "rejected.acme", "not a CloudEvent"},
		{"subject without a kind", badSubject, events.RejectBadSubject, "bad_subject", "rejected._invalid", "scans.acme.s3"},
		{"callback_url to cloud metadata", metadataURL, events.RejectCallbackURL, "callback_url_refused", "rejected.acme", "169.254.169.254"},
	}

	// The handler's own answer, called directly.
	for _, c := range cases {
		o := fx.handle(t, fx.fetch(t, c.ev))
		if o.Verdict() != natsx.Reject {
			t.Errorf("%s: outcome %s, want reject", c.name, o)
			continue
		}
		if r, ok := o.Reason().(events.RejectReason); !ok || r != c.reason || r.String() != c.label {
			t.Errorf("%s: reason %v (%T), want %s", c.name, o.Reason(), o.Reason(), c.label)
		}
	}

	// The same events through the consume loop, which settles them.
	log := fx.consume(t)
	natsxtest.Eventually(t, "every event to be settled", func() bool { return len(log.All()) == len(cases) })
	for _, s := range log.All() {
		if s.Err != nil || s.Outcome.Verdict() != natsx.Reject {
			t.Errorf("%s settled as %s with %v, want a reject settled without error", s.Subject, s.Outcome.Verdict(), s.Err)
		}
	}
	rejected := natsxtest.Messages(t, fx.js, natsx.StreamRejected, "rejected.")
	if len(rejected) != len(cases) {
		t.Fatalf("REJECTED holds %d messages (%v), want %d", len(rejected), subjects(rejected), len(cases))
	}
	for _, c := range cases {
		i := slices.IndexFunc(rejected, func(m *jetstream.RawStreamMsg) bool {
			return m.Header.Get(events.HeaderOriginalSubject) == c.ev.subject
		})
		if i < 0 {
			t.Errorf("%s: no copy in REJECTED with %s %q", c.name, events.HeaderOriginalSubject, c.ev.subject)
			continue
		}
		m := rejected[i]
		if m.Subject != c.rejected {
			t.Errorf("%s: copy on %s, want %s", c.name, m.Subject, c.rejected)
		}
		if got := m.Header.Get(events.HeaderRejectCode); got != c.label {
			t.Errorf("%s: %s %q, want %q", c.name, events.HeaderRejectCode, got, c.label)
		}
		if got := m.Header.Get(events.HeaderRejectReason); !strings.Contains(got, c.mentions) {
			t.Errorf("%s: %s %q, want it to mention %q", c.name, events.HeaderRejectReason, got, c.mentions)
		}
		if got, want := m.Header.Get(events.HeaderOriginalSeq), strconv.FormatUint(c.ev.seq, 10); got != want {
			t.Errorf("%s: %s %q, want %q", c.name, events.HeaderOriginalSeq, got, want)
		}
		if string(m.Data) != string(c.ev.data) {
			t.Errorf("%s: copy body %q, want the event's %q", c.name, m.Data, c.ev.data)
		}
		if c.ev.id != "" && m.Header.Get("ce-id") != c.ev.id {
			t.Errorf("%s: copy lost the event's ce-id header: %v", c.name, m.Header)
		}
	}
	// Terminated, not handed back: nothing pending, nothing redelivered.
	natsxtest.Eventually(t, "the fan-out consumer to be empty", func() bool {
		c, err := fx.js.Consumer(t.Context(), natsx.StreamScanEvents, "fanout-test")
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	if n := len(natsxtest.Messages(t, fx.js, natsx.StreamDeliveries, "")); n != 0 {
		t.Errorf("DELIVERIES holds %d jobs for rejected events, want none", n)
	}
	for _, c := range cases {
		if got := sample(t, fx.tel, `scanwire_events_rejected_total{reason="`+c.label+`"}`); got != 1 {
			t.Errorf("rejection metric for %s is %v, want 1", c.label, got)
		}
	}
}

// A valid event becomes one job per matching subscription, each on its
// subscription's subject, carrying the event and the scanner's trace.
func TestValidEventQueuesOneJobPerMatchingSubscription(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	all := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"*"}})
	findings := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"finding.*"}})
	fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"scan.finished"}})                                          // other type
	fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"finding.high"}, Filter: subscriptions.Filter{MinCVSS: 9}}) // filtered out
	fx.subscribe(t, subscriptions.Subscription{Tenant: "globex", Events: []string{"*"}})                                                    // other tenant

	ev := fx.publish(t, "acme", events.TypeFindingHigh, "s1", finding("s1", 7.5, "f-1"))
	if o := fx.handle(t, fx.fetch(t, ev)); o.Verdict() != natsx.Done {
		t.Fatalf("outcome %s, want done", o)
	}
	queued := natsxtest.Messages(t, fx.js, natsx.StreamDeliveries, "deliveries.")
	want := []string{all.ID, findings.ID}
	slices.Sort(want)
	var got []string
	for _, m := range queued {
		j, err := jobs.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if j.EventID != ev.id || j.EventType != events.TypeFindingHigh || j.ScanID != "s1" || j.Tenant != "acme" ||
			j.SourceTenant != "acme" || j.WebhookID != jobs.WebhookID(ev.key, j.SubscriptionID) || j.Attempt != 0 {
			t.Errorf("job %+v does not describe event %s for its subscription", j, ev.id)
		}
		got = append(got, j.SubscriptionID)
		// In its subscription's record of the scan, under its finding
		// type, with its webhook id.
		if want := "deliveries.acme." + j.SubscriptionID + ".acme.s1." + j.FindingType; m.Subject != want || j.FindingType == "" ||
			m.Header.Get(jobs.HeaderWebhookID) != j.WebhookID {
			t.Errorf("job on %s with webhook id %q, want %s and %s", m.Subject, m.Header.Get(jobs.HeaderWebhookID), want, j.WebhookID)
		}
		var stored struct {
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(j.Event, &stored); err != nil || stored.ID != ev.id {
			t.Errorf("job's event %s is not event %s in structured mode (%v)", j.Event, ev.id, err)
		}
		// One trace from the scanner to the job: the job's traceparent
		// names the scanner's trace (and a span of fan-out's, not the
		// scanner's own).
		tp := m.Header.Get("traceparent")
		if !strings.Contains(tp, ev.trace.TraceID().String()) || strings.Contains(tp, ev.trace.SpanID().String()) {
			t.Errorf("job traceparent %q, want a fan-out span in trace %s", tp, ev.trace.TraceID())
		}
	}
	if slices.Sort(got); !slices.Equal(got, want) {
		t.Errorf("jobs for subscriptions %v, want exactly %v", got, want)
	}
}

// A webhook.test event goes to the one subscription its data names, even
// one that does not take webhook.test, and to no other, even one that
// takes every event type.
func TestWebhookTestGoesOnlyToTheNamedSubscription(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"*"}})
	named := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"scan.finished"}})
	other := fx.subscribe(t, subscriptions.Subscription{Tenant: "globex", Events: []string{"*"}})

	ev := fx.publish(t, "acme", events.TypeWebhookTest, "test-1", map[string]any{"subscription_id": named.ID, "message": "hello"})
	if o := fx.handle(t, fx.fetch(t, ev)); o.Verdict() != natsx.Done {
		t.Fatalf("outcome %s, want done", o)
	}
	if got := subjects(natsxtest.Messages(t, fx.js, natsx.StreamDeliveries, "")); len(got) != 1 || !strings.HasPrefix(got[0], "deliveries.acme."+named.ID+".") {
		t.Errorf("jobs on %v, want one for %s", got, named.ID)
	}
	// Handled again (a redelivery), it stores no second job: a test's job
	// carries its webhook id as dedupe id.
	if o := fx.handle(t, fx.fetch(t, ev)); o.Verdict() != natsx.Done {
		t.Fatalf("outcome %s handled again, want done", o)
	}
	if n := len(natsxtest.Messages(t, fx.js, natsx.StreamDeliveries, "")); n != 1 {
		t.Errorf("DELIVERIES holds %d jobs after the test was handled twice, want 1", n)
	}

	// A test naming another tenant's subscription reaches no one.
	ev = fx.publish(t, "acme", events.TypeWebhookTest, "test-2", map[string]any{"subscription_id": other.ID})
	if o := fx.handle(t, fx.fetch(t, ev)); o.Verdict() != natsx.Done {
		t.Fatalf("outcome %s, want done", o)
	}
	if n := len(natsxtest.Messages(t, fx.js, natsx.StreamDeliveries, "")); n != 1 {
		t.Errorf("DELIVERIES holds %d jobs after a test naming another tenant's subscription, want still 1", n)
	}
}

// With findings_per_scan 2, the third finding of a scan is suppressed; an
// event handled again gets the same decision and no second job.
func TestFindingLimitsAndRedelivery(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	capped := fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"finding.*"},
		Limits: subscriptions.Limits{FindingsPerScan: 2}})

	var evs []published
	var msgs []jetstream.Msg
	for i := range 3 {
		ev := fx.publish(t, "acme", events.TypeFindingHigh, "s1", finding("s1", 7.5, "f-"+strconv.Itoa(i)))
		evs = append(evs, ev)
		msgs = append(msgs, fx.fetch(t, ev))
	}
	for i, m := range msgs {
		if o := fx.handle(t, m); o.Verdict() != natsx.Done {
			t.Fatalf("finding %d: outcome %s, want done (a suppressed finding is finished, not failed)", i, o)
		}
	}
	jobIDs := func() []string {
		var out []string
		for _, m := range natsxtest.Messages(t, fx.js, natsx.StreamDeliveries, "deliveries.acme."+capped.ID+".") {
			j, err := jobs.Decode(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, j.EventID)
		}
		slices.Sort(out)
		return out
	}
	first := jobIDs()
	if want := []string{evs[0].id, evs[1].id}; !slices.Equal(first, want) {
		t.Fatalf("jobs for events %v, want the first two findings %v", first, want)
	}
	stats := func() limits.Stats {
		st, err := fx.limits.ScanStats(t.Context(), "acme", "s1")
		if err != nil || len(st) != 1 {
			t.Fatalf("scan stats %+v, %v; want one record", st, err)
		}
		return st[0]
	}
	if st := stats(); st.Admitted != 2 || st.Suppressed != 1 {
		t.Fatalf("limits recorded %d admitted, %d suppressed; want 2 and 1", st.Admitted, st.Suppressed)
	}

	// Every event again, as after a fan-out crash before the ack.
	for i, m := range msgs {
		if o := fx.handle(t, m); o.Verdict() != natsx.Done {
			t.Fatalf("finding %d again: outcome %s, want done", i, o)
		}
	}
	if again := jobIDs(); !slices.Equal(again, first) {
		t.Errorf("after handling every event twice, jobs for %v, want still %v", again, first)
	}
	if st := stats(); st.Admitted != 2 || st.Suppressed != 1 {
		t.Errorf("after handling every event twice, limits recorded %d admitted, %d suppressed; want still 2 and 1", st.Admitted, st.Suppressed)
	}
	if got := sample(t, fx.tel, `scanwire_limit_suppressed_total{subscription_id="`+capped.ID+`"}`); got != 2 {
		t.Errorf("suppression metric %v, want 2 (the third finding, seen twice)", got)
	}
}

// The handler honours its context's deadline: with no time left, an event
// that has work to do fails (and comes back later) at once rather than
// hanging or claiming success.
func TestExpiredDeadlineFailsTheEvent(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"*"}})
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()

	// A finding: the limits cannot be decided.
	ev := fx.publish(t, "acme", events.TypeFindingHigh, "s1", finding("s1", 7.5, "f-1"))
	m := fx.fetch(t, ev)
	start := time.Now()
	o := fx.f.handle(expired, m)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("handler took %s with an expired deadline", took)
	}
	if o.Verdict() != natsx.Fail || o.Reason() == nil || o.Reason().String() != "limits_unavailable" {
		t.Errorf("finding: outcome %s, want fail (limits_unavailable)", o)
	}
	if n := len(natsxtest.Messages(t, fx.js, natsx.StreamDeliveries, "")); n != 0 {
		t.Errorf("%d jobs stored for a finding whose limits were never decided", n)
	}

	// A scan event: no limits, so the jobs are published and their acks
	// are what cannot be awaited. The job may reach the stream (a later
	// redelivery stores it no second time), but the event is not done.
	ev = fx.publish(t, "acme", events.TypeScanStarted, "s2", map[string]any{"scan_id": "s2", "target": "app.example.com"})
	m = fx.fetch(t, ev)
	start = time.Now()
	o = fx.f.handle(expired, m)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("handler took %s with an expired deadline", took)
	}
	switch {
	case o.Verdict() == natsx.Done:
		// Legitimate only if the server's ack won the race with the
		// deadline: then the job is stored.
		if n := len(natsxtest.Messages(t, fx.js, natsx.StreamDeliveries, "")); n != 1 {
			t.Errorf("scan.started finished with %d jobs stored, want 1", n)
		}
	case o.Verdict() != natsx.Fail || o.Reason() == nil || o.Reason().String() != "jobs_not_stored":
		t.Errorf("scan.started: outcome %s, want fail (jobs_not_stored)", o)
	}
}

// The backstop behind the size limit: a valid event whose job the stream
// can never take (here DELIVERIES is made to take 1 KiB) is rejected with
// too_large, its copy in REJECTED, not retried for ever holding a slot.
func TestJobTheStreamCannotTakeRejectsTheEvent(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	s, err := fx.js.Stream(t.Context(), natsx.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 1 << 10
	if _, err := fx.js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	fx.subscribe(t, subscriptions.Subscription{Tenant: "acme", Events: []string{"*"}})
	data := finding("s1", 7.5, "f-1")
	data["evidence"] = strings.Repeat("e", 2<<10)
	ev := fx.publish(t, "acme", events.TypeFindingHigh, "s1", data)
	log := fx.consume(t)
	if got := log.Wait(t, 1)[0]; got.Err != nil || got.Outcome.Verdict() != natsx.Reject || got.Outcome.Reason() != events.RejectTooLarge {
		t.Fatalf("outcome %s settled with %v, want reject (too_large)", got.Outcome, got.Err)
	}
	rejected := natsxtest.Messages(t, fx.js, natsx.StreamRejected, "")
	if len(rejected) != 1 || rejected[0].Header.Get(events.HeaderOriginalSubject) != ev.subject ||
		rejected[0].Header.Get(events.HeaderRejectCode) != events.RejectTooLarge.String() {
		t.Errorf("REJECTED holds %d copies, want the event's with code too_large", len(rejected))
	}
}

// resolveTo resolves every name to one address.
type resolveTo netip.Addr

func (r resolveTo) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.Addr(r)}, nil
}

// A callback URL is judged with its addresses while the lookup budget has
// room; past it (lookups held by a slow name server) with the checks that
// need no DNS only, so no worker waits for a lookup, and delivery judges
// the address it dials.
func TestCallbackLookupsAreBounded(t *testing.T) {
	t.Parallel()
	f := &Fanout{egress: &egress.Policy{Resolver: resolveTo(netip.MustParseAddr("10.1.2.3"))}, lookups: make(chan struct{}, 1)}
	const u = "https://cb.example.com/done"
	if err := f.checkCallbackURL(t.Context(), u); err == nil {
		t.Error("a name that resolves only to a private address passed with the budget free")
	}
	f.lookups <- struct{}{} // the one lookup allowed is held
	if err := f.checkCallbackURL(t.Context(), u); err != nil {
		t.Errorf("with the budget spent: %v, want the static checks only", err)
	}
	if err := f.checkCallbackURL(t.Context(), "https://127.0.0.1/cb"); err == nil {
		t.Error("with the budget spent, a blocked literal address passed")
	}
}
