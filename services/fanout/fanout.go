// Package fanout turns each scan event into one delivery job per matching
// subscription. It is the only reader of SCAN_EVENTS. An invalid event is
// copied to REJECTED with its reason; a valid one is paired for per-scan
// callbacks (internal/callbacks), matched against the subscriptions of its
// tenant and of the tenant's partner, held to the per-scan limits
// (internal/limits), and queued as one job per admitted subscription.
package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/scanwire/scanwire/internal/callbacks"
	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
	"github.com/scanwire/scanwire/internal/tenants"
)

// Config tunes the fan-out. Zero values take the defaults.
type Config struct {
	// Consumer is the durable consumer name; replicas share it, so each
	// event is fanned out by one of them.
	Consumer string
	// Workers is how many events are processed at once.
	Workers int
	// AckWait is how long an event may be in flight before JetStream gives
	// it to another replica.
	AckWait time.Duration
}

func (c Config) withDefaults() Config {
	if c.Consumer == "" {
		c.Consumer = "fanout"
	}
	if c.Workers <= 0 {
		// Most of an event's time is spent waiting for the server to
		// fsync its limit record and jobs, not computing: many events in
		// flight keep the disk busy.
		c.Workers = 256
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	return c
}

// ConsumerName is the durable consumer a fan-out with cfg uses.
func ConsumerName(cfg Config) string { return cfg.withDefaults().Consumer }

// Fanout is the fan-out service.
type Fanout struct {
	js        jetstream.JetStream
	subs      *subscriptions.Cache
	store     *subscriptions.Store
	tenants   *tenants.Cache
	limits    *limits.Limiter
	callbacks *callbacks.Registry
	egress    *egress.Policy
	lookups   chan struct{} // callback URL lookups in flight (see read)
	writes    *natsx.Writes
	tel       *telemetry.Telemetry
	log       *slog.Logger
	cfg       Config
}

// Deps are what fan-out works with.
type Deps struct {
	Subs *subscriptions.Cache
	// Store confirms what the cache lacks for a webhook.test event (the
	// cache may lag the store). nil: the cache decides alone.
	Store     *subscriptions.Store
	Tenants   *tenants.Cache // partners
	Limits    *limits.Limiter
	Callbacks *callbacks.Registry
	// Egress judges callback URLs (nil: no egress checks).
	Egress *egress.Policy
	// Writes is told whether jobs and copies were stored (readiness).
	Writes    *natsx.Writes
	Telemetry *telemetry.Telemetry
}

// New returns a fan-out over js.
func New(js jetstream.JetStream, d Deps, log *slog.Logger, cfg Config) *Fanout {
	return &Fanout{js: js, subs: d.Subs, store: d.Store, tenants: d.Tenants, limits: d.Limits, callbacks: d.Callbacks, egress: d.Egress, lookups: make(chan struct{}, maxLookups), writes: d.Writes, tel: d.Telemetry,
		log: log.With("service", "fanout"), cfg: cfg.withDefaults()}
}

// Run consumes SCAN_EVENTS until ctx ends. An event is acked only once all
// of its jobs are stored (or it is stored in REJECTED); on a failure of
// ours it comes back after a backoff, and a second pass stores none of the
// jobs the first one stored: they are in the record of their subscription
// and scan (internal/limits).
func (f *Fanout) Run(ctx context.Context) error {
	cons, err := natsx.Bind(ctx, f.js, natsx.StreamScanEvents, jetstream.ConsumerConfig{
		Durable:     f.cfg.Consumer,
		Description: "scanwire fan-out",
		AckPolicy:   jetstream.AckExplicitPolicy,
		// Every wait of the handler (limits, callbacks, the jobs' acks)
		// ends before it: see natsx.Consume.
		AckWait:       f.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 4 * f.cfg.Workers,
	}, f.log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started: not a failure
		}
		return fmt.Errorf("fanout consumer: %w", err)
	}
	select {
	case <-f.subs.Ready():
	case <-ctx.Done():
		return nil
	}
	f.log.Info("fan-out started", "consumer", f.cfg.Consumer, "workers", f.cfg.Workers)
	err = natsx.Consume(ctx, cons, f.handle, natsx.Options{Workers: f.cfg.Workers, JS: f.js, Log: f.log, Settled: f.settled, Writes: f.writes})
	f.log.Info("fan-out stopped")
	return err
}

// incoming is a valid event with what fan-out reads of it, parsed once.
type incoming struct {
	e    *event.Event
	addr events.Address
	data struct {
		Target         string   `json:"target"`
		CVSS           *float64 `json:"cvss_score"`
		Type           string   `json:"type"`            // finding type, for the limits
		CallbackURL    string   `json:"callback_url"`    // scan.started
		SubscriptionID string   `json:"subscription_id"` // webhook.test
	}
	structured []byte // the event in structured JSON, as jobs carry it
	key        string // events.Key: the event's identity across tenants and sources
}

// failure names a failure of ours that sends an event back for a retry.
type failure string

const (
	failMetadata  failure = "metadata_unreadable"
	failCallbacks failure = "callbacks_unavailable"
	failLimits    failure = "limits_unavailable"
	failJobs      failure = "jobs_not_stored"
	failStore     failure = "subscriptions_unavailable"
)

func (r failure) String() string { return string(r) }

// handle decides one event's fate: rejected with its reason, fanned out,
// or sent back after a failure of ours.
func (f *Fanout) handle(ctx context.Context, msg jetstream.Msg) natsx.Outcome {
	ctx = telemetry.Extract(ctx, msg.Headers())
	ctx, span := f.tel.Tracer.Start(ctx, "fanout "+msg.Subject(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", msg.Subject())))
	defer span.End()

	in, reason, err := f.read(ctx, msg)
	if in.e != nil {
		span.SetAttributes(attribute.String("scanwire.tenant", events.Tenant(in.e)), attribute.String("scanwire.scan_id", in.e.Subject()),
			attribute.String("scanwire.event_type", in.e.Type()), attribute.String("scanwire.event_id", in.e.ID()))
	}
	if err != nil {
		span.SetStatus(codes.Error, "rejected: "+reason.String())
		return f.reject(ctx, msg, in.addr.Tenant, reason, err)
	}
	f.tel.Metrics.EventsAccepted.Add(ctx, 1, metric.WithAttributes(attribute.String("type", in.e.Type())))
	if err := f.pairCallback(ctx, in); err != nil {
		return f.fail(ctx, span, msg, failCallbacks, fmt.Errorf("callback of %s: %w", in.e.ID(), err))
	}
	matched, reason, err := f.match(ctx, in)
	switch {
	case reason != "":
		span.SetStatus(codes.Error, "rejected: "+reason.String())
		return f.reject(ctx, msg, in.addr.Tenant, reason, err)
	case err != nil:
		return f.fail(ctx, span, msg, failStore, fmt.Errorf("match %s: %w", in.e.ID(), err))
	}
	if err := f.queue(ctx, in, matched); err != nil {
		var limited *limitsError
		switch {
		case natsx.TooLarge(err):
			// The event's own fault, and it would be every time: looping
			// on it would hold a slot of every tenant's consumer.
			span.SetStatus(codes.Error, "rejected: "+events.RejectTooLarge.String())
			return f.reject(ctx, msg, in.addr.Tenant, events.RejectTooLarge, fmt.Errorf("its job cannot be stored: %w", err))
		case errors.As(err, &limited):
			return f.fail(ctx, span, msg, failLimits, fmt.Errorf("limits of %s: %w", in.e.ID(), err))
		}
		return f.fail(ctx, span, msg, failJobs, fmt.Errorf("fan out %s: %w", in.e.ID(), err))
	}
	return natsx.Finished()
}

// maxLookups bounds the callback URL lookups in flight. A lookup can take
// seconds (a tenant's slow name server) and holds a worker meanwhile: past
// this many, a callback URL gets the checks that need no DNS, and delivery
// judges the address it dials as it always does.
const maxLookups = 16

// read decodes and validates a message. An error is the event's fault,
// named by the reason: the caller rejects it. A callback_url the egress
// policy would never deliver to is refused with its event, by the check
// POST /v1/events and `scanwire publish` make (egress.CheckCallbackURL).
func (f *Fanout) read(ctx context.Context, msg jetstream.Msg) (*incoming, events.RejectReason, error) {
	in := &incoming{}
	var err error
	if in.addr, err = events.ParseSubject(msg.Subject()); err != nil {
		return in, events.RejectBadSubject, err
	}
	if in.e, err = events.FromMsg(msg.Headers(), msg.Data()); err != nil {
		return in, events.RejectUndecodable, err
	}
	if in.structured, err = events.ValidateEncoded(in.addr, in.e); err != nil {
		return in, events.RejectInvalid, err
	}
	_ = json.Unmarshal(in.e.Data(), &in.data) // valid: the fields have their schema's types
	if u := in.data.CallbackURL; u != "" && in.e.Type() == events.TypeScanStarted && f.egress != nil {
		if err := f.checkCallbackURL(ctx, u); err != nil {
			return in, events.RejectCallbackURL, &events.InvalidError{Problems: []events.Problem{{Field: "data/callback_url", Message: err.Error()}}}
		}
	}
	in.key = events.KeyOf(in.e)
	return in, "", nil
}

// checkCallbackURL is egress.CheckCallbackURL within the lookup budget.
func (f *Fanout) checkCallbackURL(ctx context.Context, u string) error {
	select {
	case f.lookups <- struct{}{}:
		defer func() { <-f.lookups }()
		return f.egress.CheckCallbackURL(ctx, u)
	default:
		return f.egress.CheckURLStatic(u)
	}
}

// queue stores one job per matched subscription, each at most once (in
// the record of its subscription and scan, see admit), and waits until the
// server has confirmed every one (within ctx: the event's AckWait). A
// finding's job is stored only if the subscription's limits admit it.
func (f *Fanout) queue(ctx context.Context, in *incoming, subs []*subscriptions.Subscription) error {
	mctx, span := f.tel.Tracer.Start(ctx, "match")
	defer span.End()
	span.SetAttributes(attribute.Int("scanwire.matches", len(subs)))
	if len(subs) == 0 {
		return nil
	}
	e, now := in.e, time.Now().UTC()
	var acks []jetstream.PubAckFuture
	var admitted sync.WaitGroup
	defer admitted.Wait() // on an early return too: no writer outlives its event
	admits := make([]error, len(subs))
	for i, s := range subs {
		j := jobs.Job{
			WebhookID:      jobs.WebhookID(in.key, s.ID),
			Tenant:         s.Tenant,
			SourceTenant:   in.addr.Tenant,
			SubscriptionID: s.ID,
			EventID:        e.ID(),
			EventType:      e.Type(),
			ScanID:         in.addr.ScanID,
			Event:          in.structured,
			Queued:         now,
		}
		if events.IsFinding(e.Type()) {
			j.FindingType = in.data.Type
		}
		m, err := j.Msg()
		if err != nil {
			return err
		}
		// Each job carries the context of its own producer span: every
		// attempt at it, retries included, is a child of it, in this trace.
		jctx, jspan := f.tel.Tracer.Start(ctx, "queue "+m.Subject, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(attribute.String("scanwire.subscription_id", s.ID), attribute.String("scanwire.webhook_id", j.WebhookID)))
		telemetry.Inject(jctx, m.Header)
		jspan.End()
		if e.Type() != events.TypeWebhookTest {
			// In the record of its subscription and scan, once; a
			// finding only if its limits admit it (internal/limits).
			admitted.Go(func() { admits[i] = f.admit(mctx, s, in, m) })
			continue
		}
		// A test is asked for by hand, each with an id of its own: only a
		// redelivery repeats one, within minutes.
		m.Header.Set(nats.MsgIdHdr, j.WebhookID)
		ack, err := f.js.PublishMsgAsync(m, jetstream.WithStallWait(stallWait(ctx)))
		if err != nil {
			return fmt.Errorf("queue job for %s: %w", s.ID, err)
		}
		acks = append(acks, ack)
	}
	err := waitAcks(ctx, acks)
	admitted.Wait()
	err = errors.Join(append(admits, err)...)
	if ctx.Err() == nil {
		f.writes.Observe(err)
	}
	return err
}

// limitsError is a finding's limits that could not be decided.
type limitsError struct{ err error }

func (e *limitsError) Error() string { return e.err.Error() }
func (e *limitsError) Unwrap() error { return e.err }

// match returns who gets the event. A webhook.test event goes to the one
// subscription it names (asked for through the API or `scanwire subs
// test`), whatever event types that subscription takes. A test is never
// dropped unseen: when the cache lacks the subscription, the store
// decides (the cache may lag it, a moment after a create); one that does
// not exist rejects the event with that reason, and one stored but invalid
// is queued anyway, for delivery to dead-letter with the document's
// problem. A failure to read the store is an error with no reason.
func (f *Fanout) match(ctx context.Context, in *incoming) ([]*subscriptions.Subscription, events.RejectReason, error) {
	tenant, typ := in.addr.Tenant, in.e.Type()
	if typ == events.TypeWebhookTest {
		id := in.data.SubscriptionID
		if s, ok := f.subs.Get(tenant, id); ok {
			return []*subscriptions.Subscription{s}, "", nil
		}
		if f.store == nil {
			return nil, "", nil
		}
		if !events.ValidToken(id) { // not a key the store could look up
			return nil, events.RejectNoSubscription, fmt.Errorf("webhook.test names no subscription (data.subscription_id %q)", id)
		}
		s, rev, err := f.store.Get(ctx, tenant, id)
		switch {
		case err == nil:
			return []*subscriptions.Subscription{s}, "", nil
		case errors.Is(err, subscriptions.ErrNotFound):
			return nil, events.RejectNoSubscription, fmt.Errorf("webhook.test for subscription %q: tenant %s has no such subscription", id, tenant)
		case rev != 0:
			return []*subscriptions.Subscription{{ID: id, Tenant: tenant}}, "", nil
		}
		return nil, "", err
	}
	facts := subscriptions.Facts{Target: in.data.Target, ScanID: in.e.Subject()}
	if in.data.CVSS != nil {
		facts.CVSS, facts.HasCVSS = *in.data.CVSS, true
	}
	subs := f.subs.Match(tenant, typ, facts)
	// A partner hears its customers' events where it asked to; the other
	// way round, and between customers, nothing is shared.
	if partner := f.tenants.Partner(tenant); partner != "" {
		for _, s := range f.subs.Match(partner, typ, facts) {
			if s.IncludeCustomerEvents {
				subs = append(subs, s)
			}
		}
	}
	return subs, "", nil
}

// pairCallback tells the callback registry of a scan's start (with a
// callback URL) and of every scan's end, so that the two meet whichever
// comes first.
func (f *Fanout) pairCallback(ctx context.Context, in *incoming) error {
	switch {
	case in.e.Type() == events.TypeScanStarted && in.data.CallbackURL != "":
		return f.callbacks.Started(ctx, in.addr.Tenant, in.addr.ScanID, in.data.CallbackURL)
	case in.e.Type() == events.TypeScanFinished:
		return f.callbacks.Finished(ctx, in.addr.Tenant, in.addr.ScanID, in.e.ID(), in.structured)
	}
	return nil
}

// admit stores m, the job of in for s, in the record of s and its scan,
// unless it is there already; a finding only if the subscription's
// per-scan limits admit it. The decision is the same every time the event
// is seen, so a redelivered event is admitted (or suppressed) again, never
// counted or stored twice.
func (f *Fanout) admit(ctx context.Context, s *subscriptions.Subscription, in *incoming, m *nats.Msg) error {
	scope := limits.Scope{Tenant: s.Tenant, SubscriptionID: s.ID, Source: in.addr.Tenant, ScanID: in.addr.ScanID}
	job := limits.Entry{EventKey: in.key, Type: in.data.Type, Job: m}
	if !events.IsFinding(in.e.Type()) {
		return f.limits.Queue(ctx, scope, job)
	}
	perScan, perType := s.Limits.FindingsPerScan, s.Limits.FindingsPerType
	if perScan == 0 {
		perScan = subscriptions.DefaultFindingsPerScan
	}
	if perType == 0 {
		perType = subscriptions.DefaultFindingsPerType
	}
	dec, err := f.limits.Admit(ctx, scope, perScan, perType, job)
	if err != nil {
		return wrapLimits(err)
	}
	if !dec.Admitted {
		f.tel.Metrics.LimitSuppressed.Add(ctx, 1, metric.WithAttributes(attribute.String("subscription_id", s.ID)))
		f.log.DebugContext(ctx, "finding suppressed", "subscription_id", s.ID, "scan_id", in.addr.ScanID, "event_id", in.e.ID(), "reason", dec.Reason)
	}
	return nil
}

// wrapLimits marks a failure to decide or store a job as the limits' (a
// job the stream can never take stays what it is).
func wrapLimits(err error) error {
	if err == nil || natsx.TooLarge(err) {
		return err
	}
	return &limitsError{err}
}

// waitAcks waits for the server to confirm every job, until ctx's deadline
// (derived from the event's AckWait).
func waitAcks(ctx context.Context, acks []jetstream.PubAckFuture) error {
	for _, a := range acks {
		select {
		case <-a.Ok():
		case err := <-a.Err():
			return fmt.Errorf("store job: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("store job: no ack from the server in time: %w", ctx.Err())
		}
	}
	return nil
}

// stallWait is how long an async publish may wait for room in the window:
// at most 5s, and never past ctx's deadline.
func stallWait(ctx context.Context) time.Duration {
	wait := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		wait = max(min(wait, time.Until(d)), time.Millisecond)
	}
	return wait
}

// reject answers an invalid event: its copy goes to REJECTED with the
// reason, then the event is terminated. An invalid event is never retried
// forever and never lost.
func (f *Fanout) reject(ctx context.Context, msg jetstream.Msg, tenant string, reason events.RejectReason, err error) natsx.Outcome {
	if !events.ValidToken(tenant) {
		tenant = "_invalid"
	}
	meta, merr := msg.Metadata()
	if merr != nil {
		return natsx.Failed(failMetadata, merr)
	}
	f.log.InfoContext(ctx, "event rejected", "subject", msg.Subject(), "seq", meta.Sequence.Stream, "reason", reason.String(), "err", err.Error())
	return natsx.RejectAs(reason, err, rejectedCopy(msg, meta.Sequence.Stream, tenant, reason, err))
}

// maxReasonLen bounds the reason header of a rejected copy: a reason that
// quotes the event cannot make the copy too large to store.
const maxReasonLen = 4 << 10

// rejectedCopy is what REJECTED keeps of an invalid event: its headers and
// body as the scanner sent them, with the reason. It always fits in
// REJECTED: whatever of the original would not fit beside the reason
// (headers near JetStream's 64 KiB cap) is left out and named in
// HeaderOmitted, and stays readable in SCAN_EVENTS under its sequence.
func rejectedCopy(msg jetstream.Msg, seq uint64, tenant string, reason events.RejectReason, err error) *nats.Msg {
	rm := nats.NewMsg(events.RejectedSubject(tenant))
	for k, v := range msg.Headers() {
		// The original's Nats-Msg-Id and expectations are for SCAN_EVENTS.
		if !strings.HasPrefix(strings.ToLower(k), "nats-") {
			rm.Header[k] = v
		}
	}
	rm.Data = msg.Data()
	ours := nats.Header{}
	ours.Set(events.HeaderRejectReason, headerValue(err.Error(), maxReasonLen))
	ours.Set(events.HeaderRejectCode, reason.String())
	ours.Set(events.HeaderOriginalSubject, msg.Subject())
	ours.Set(events.HeaderOriginalSeq, strconv.FormatUint(seq, 10))
	ours.Set(nats.MsgIdHdr, "rejected."+strconv.FormatUint(seq, 10))
	var omitted []string
	if n := natsx.HeaderSize(rm.Header); n+natsx.HeaderSize(ours) > natsx.MaxHeaderSize {
		rm.Header = nats.Header{}
		omitted = append(omitted, fmt.Sprintf("headers (%d bytes)", n))
	}
	if n := len(rm.Data); n+natsx.HeaderSize(rm.Header)+natsx.HeaderSize(ours) > natsx.MaxMsgSize {
		rm.Data = nil
		omitted = append(omitted, fmt.Sprintf("body (%d bytes)", n))
	}
	for k, v := range ours {
		rm.Header[k] = v
	}
	if len(omitted) > 0 {
		rm.Header.Set(events.HeaderOmitted, strings.Join(omitted, ", ")+"; the original is SCAN_EVENTS seq "+strconv.FormatUint(seq, 10))
	}
	return rm
}

// headerValue makes s a header value: one line, at most max bytes, cut on
// a rune boundary.
func headerValue(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// fail sends an event back after a failure of ours (not the event's); the
// consume loop waits longer each time, so a NATS outage is not a hot loop.
func (f *Fanout) fail(ctx context.Context, span trace.Span, msg jetstream.Msg, reason failure, err error) natsx.Outcome {
	span.SetStatus(codes.Error, err.Error())
	f.log.WarnContext(ctx, "event will be retried", "subject", msg.Subject(), "reason", reason.String(), "err", err)
	return natsx.Failed(reason, err)
}

// settled counts what became of each event once the consume loop has
// settled it.
func (f *Fanout) settled(ctx context.Context, _ jetstream.Msg, o natsx.Outcome, err error) {
	if err == nil && o.Verdict() == natsx.Reject {
		f.tel.Metrics.EventsRejected.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", o.Reason().String())))
	}
}
