// Package delivery POSTs delivery jobs to subscribers. Each job is one
// attempt: a 2xx acks it; a failure stores the next attempt as a JetStream
// scheduled message due after the subscription's schedule delay (retry.go)
// and acks this one; a job that can never succeed, or whose schedule is
// spent, is copied to the DLQ with its reason and terminated
// (retry.go). The consume loop in natsx settles every job from the
// outcome handle returns; nothing here acks, naks or terms.
//
// Beside this file: http.go sends one attempt; endpoints.go decides which
// jobs may take a worker (a tenant's share, a budget for slow endpoints, a
// cap per host), slow.go remembers slow endpoints, and deferral.go hands
// the refused jobs back for later, so that no tenant and no set of hung
// endpoints can take the workers; health.go disables subscriptions whose
// endpoint is gone or keeps failing and prunes expired secrets.
package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/profiles"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
	"github.com/scanwire/scanwire/internal/tenants"
)

// Version is sent in the User-Agent of every webhook.
const Version = "0.1.0"

// Config tunes delivery. Zero values take the defaults.
type Config struct {
	// Consumer is the durable consumer name, shared by replicas.
	Consumer string
	// Workers is how many requests may be in flight at once.
	Workers int
	// Timeout bounds one attempt: connect, send, and read the response.
	Timeout time.Duration
	// MaxResponseBody is how much of a response is read (and recorded).
	MaxResponseBody int64
	// UserAgent is sent with profiles that do not name their own.
	UserAgent string
	// TenantShare caps the requests in flight to all the endpoints of one
	// tenant (the subscription's owner) together, however many hosts and
	// ports it points at (default Workers/2).
	TenantShare int
	// SlowBudget caps the requests in flight to slow endpoints, all
	// tenants together (default Workers/4); one tenant's slow endpoints
	// hold at most half of it. An endpoint is slow while a request to it
	// has been in flight longer than SlowAfter, or when its last attempt
	// took that long or timed out.
	SlowBudget int
	// SlowAfter is how long a request may take before its endpoint counts
	// as slow (default 1s).
	SlowAfter time.Duration
	// PerEndpoint caps the requests in flight to one host:port (default
	// Workers/4): a third guard beside the tenant share and the slow
	// budget.
	PerEndpoint int
	// SlotWait is how long a worker waits for room under the tenant share
	// or the per-endpoint cap while its requests keep finishing, before it
	// defers the job (see gate). A job for a slow or stuck endpoint or
	// tenant is deferred at once.
	SlotWait time.Duration
	// DeferDelay is how long a deferred job waits at least (default 1s):
	// a slow endpoint's job waits as long as its endpoint has been slow,
	// from DeferDelay up to DeferMax, any other DeferDelay, plus up to half
	// again of jitter.
	DeferDelay time.Duration
	// DeferMax caps the growing delay of a slow endpoint's deferred jobs
	// (default 30s).
	DeferMax time.Duration
	// MaxAckPending bounds the jobs handed out and not yet finished. Jobs
	// deferred with a nak count (at most MaxNaked of them); scheduled ones
	// and waiting retries do not.
	MaxAckPending int
	// MaxNaked bounds the deferred jobs handed back with a nak and not yet
	// due (default MaxAckPending/4); beyond it a deferred job is stored as
	// a scheduled message instead (see deferJob).
	MaxNaked int
	// AutoDisableAfter disables a subscription whose deliveries have kept
	// failing this long.
	AutoDisableAfter time.Duration
	// LaneAfter is how long an endpoint is slow before the subscription of
	// a job it holds up gets a lane of its own (lanes.go; default 10s).
	LaneAfter time.Duration
	// LaneWorkers is how many requests one lane makes at once (default
	// half the slow budget).
	LaneWorkers int
}

// Defaults returns c with every zero field set to its default, and the
// shares bounded by the workers.
func (c Config) Defaults() Config {
	if c.Consumer == "" {
		c.Consumer = "delivery"
	}
	if c.Workers <= 0 {
		c.Workers = 256
	}
	if c.Timeout <= 0 {
		c.Timeout = 15 * time.Second
	}
	if c.MaxResponseBody <= 0 {
		c.MaxResponseBody = 64 << 10
	}
	if c.UserAgent == "" {
		c.UserAgent = "scanwire/" + Version
	}
	if c.PerEndpoint <= 0 {
		c.PerEndpoint = max(1, c.Workers/4)
	}
	if c.TenantShare <= 0 {
		c.TenantShare = max(1, c.Workers/2)
	}
	if c.SlowBudget <= 0 {
		c.SlowBudget = max(1, c.Workers/4)
	}
	c.PerEndpoint = min(c.PerEndpoint, c.Workers)
	c.TenantShare = min(c.TenantShare, c.Workers)
	c.SlowBudget = min(c.SlowBudget, c.Workers)
	if c.SlowAfter <= 0 {
		c.SlowAfter = time.Second
	}
	if c.SlotWait <= 0 {
		c.SlotWait = 2 * time.Second
	}
	if c.DeferDelay <= 0 {
		c.DeferDelay = time.Second
	}
	if c.DeferMax <= 0 {
		c.DeferMax = 30 * time.Second
	}
	c.DeferMax = max(c.DeferMax, c.DeferDelay)
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 20_000
	}
	if c.MaxNaked <= 0 {
		c.MaxNaked = max(1, c.MaxAckPending/4)
	}
	if c.AutoDisableAfter <= 0 {
		c.AutoDisableAfter = 5 * 24 * time.Hour
	}
	if c.LaneAfter <= 0 {
		c.LaneAfter = 10 * time.Second
	}
	if c.LaneWorkers <= 0 {
		c.LaneWorkers = max(1, c.SlowBudget/2)
	}
	return c
}

// ConsumerName is the durable consumer a delivery service with cfg uses.
func ConsumerName(cfg Config) string { return cfg.Defaults().Consumer }

// Delivery is the delivery service.
type Delivery struct {
	js       jetstream.JetStream
	subs     *subscriptions.Cache
	store    *subscriptions.Store
	tenants  *tenants.Store
	client   *http.Client
	attempts *attempts.Log
	gate     *gate
	health   *health
	tel      *telemetry.Telemetry
	writes   *natsx.Writes
	// deferred counts the deferred jobs out, in all and per tenant (see
	// deferJob).
	deferred deferrals
	// lanes are the subscriptions with a consumer of their own (lanes.go);
	// nil without a lanes bucket.
	lanes     *lanes
	laneLoops sync.WaitGroup
	log       *slog.Logger
	cfg       Config
}

// Deps are what delivery works with.
type Deps struct {
	Subs *subscriptions.Cache
	// Store records a subscription's failing streak and disables it.
	Store *subscriptions.Store
	// Tenants holds the signing secrets of per-scan callbacks.
	Tenants *tenants.Store
	// Client sends the webhooks; it must not follow redirects (see
	// NewHTTPClient).
	Client *http.Client
	// Attempts records every attempt.
	Attempts  *attempts.Log
	Telemetry *telemetry.Telemetry
	// Writes is told whether retries, deferrals and dead letters were
	// stored (readiness).
	Writes *natsx.Writes
	// Lanes is the lanes bucket (natsx.BucketLanes); nil: no lanes.
	Lanes jetstream.KeyValue
}

// New returns a delivery service.
func New(js jetstream.JetStream, d Deps, log *slog.Logger, cfg Config) *Delivery {
	cfg = cfg.Defaults()
	log = log.With("service", "delivery")
	del := &Delivery{js: js, subs: d.Subs, store: d.Store, tenants: d.Tenants, client: d.Client, attempts: d.Attempts, tel: d.Telemetry,
		gate:   newGate(gateLimits{perEndpoint: cfg.PerEndpoint, share: cfg.TenantShare, slowBudget: cfg.SlowBudget, slowAfter: cfg.SlowAfter}, log),
		health: &health{store: d.Store, after: cfg.AutoDisableAfter, log: log}, writes: d.Writes, log: log, cfg: cfg}
	if d.Lanes != nil {
		del.lanes = &lanes{kv: d.Lanes, from: map[string]uint64{}, running: map[string]context.CancelFunc{}}
	}
	return del
}

// Run consumes DELIVERIES until ctx ends. Attempts in flight when ctx ends
// finish (bounded by Timeout) and are settled as usual.
func (d *Delivery) Run(ctx context.Context) error {
	cons, err := natsx.Bind(ctx, d.js, natsx.StreamDeliveries, jetstream.ConsumerConfig{
		Durable:       d.cfg.Consumer,
		Description:   "scanwire delivery workers",
		FilterSubject: "deliveries.>", // not the scheduled retries waiting their time
		AckPolicy:     jetstream.AckExplicitPolicy,
		// The handler's deadline is derived from it (natsx.Consume): the
		// slot wait and the attempt's timeout fit inside, so an attempt in
		// progress is never handed to a second worker.
		AckWait: d.ackWait(),
		// The subscription's schedule is the cap, not the server: a
		// server-side MaxDeliver would strand the job without a dead
		// letter.
		MaxDeliver:    -1,
		MaxAckPending: d.cfg.MaxAckPending,
	}, d.log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started: not a failure
		}
		return fmt.Errorf("delivery consumer: %w", err)
	}
	select {
	case <-d.subs.Ready():
	case <-ctx.Done():
		return nil
	}
	d.log.Info("delivery started", "consumer", d.cfg.Consumer, "workers", d.cfg.Workers, "timeout", d.cfg.Timeout,
		"tenant_share", d.cfg.TenantShare, "slow_budget", d.cfg.SlowBudget, "slow_after", d.cfg.SlowAfter, "per_endpoint", d.cfg.PerEndpoint,
		"max_naked", d.cfg.MaxNaked)
	var watch sync.WaitGroup
	if d.lanes != nil {
		watch.Go(func() { d.runLanes(ctx) })
	}
	err = natsx.Consume(ctx, cons, d.handle, natsx.Options{Workers: d.cfg.Workers, JS: d.js, Log: d.log, Settled: d.settled, Writes: d.writes})
	watch.Wait()
	d.laneLoops.Wait()
	d.log.Info("delivery stopped")
	return err
}

// ackWait is the delivery consumer's AckWait: a slot wait, one attempt,
// and ten seconds for the rest (recording, storing the next attempt).
func (d *Delivery) ackWait() time.Duration { return d.cfg.SlotWait + d.cfg.Timeout + 10*time.Second }

// handle makes one attempt at a job of the delivery consumer and says
// what becomes of it.
func (d *Delivery) handle(ctx context.Context, msg jetstream.Msg) natsx.Outcome {
	return d.process(ctx, msg, false)
}

// handleLane is handle for a lane's consumer (lanes.go).
func (d *Delivery) handleLane(ctx context.Context, msg jetstream.Msg) natsx.Outcome {
	return d.process(ctx, msg, true)
}

func (d *Delivery) process(ctx context.Context, msg jetstream.Msg, lane bool) natsx.Outcome {
	meta, err := msg.Metadata()
	if err != nil {
		d.log.Error("message without metadata", "subject", msg.Subject(), "err", err)
		return natsx.Failed(failMetadata, err)
	}
	job, err := jobs.Decode(msg.Data())
	if err != nil {
		return d.deadLetter(ctx, meta, &dlq.DeadLetter{Code: dlq.ReasonUndecodable, Reason: err.Error(), Raw: msg.Data()})
	}
	if !lane && d.lanes.owns(job.Tenant, job.SubscriptionID, meta.Sequence.Stream, msg.Subject()) {
		return natsx.Finished() // its lane delivers it
	}
	// The attempt number travels in the job, not in JetStream's delivery
	// count: a job deferred because its endpoint is busy, or handed back at
	// a shutdown, has not been attempted.
	attempt := job.Attempt + 1
	ctx, span := d.startSpan(ctx, msg, job, attempt)
	defer span.End()

	sub, out, ok := d.target(ctx, meta, job)
	if !ok {
		return out
	}
	d.health.pruneSecrets(ctx, sub)
	s, refused := d.gate.acquire(ctx, job.Tenant, sub.URL, d.cfg.SlotWait)
	if s == nil {
		// The endpoint is slow or stuck, or the tenant holds its share:
		// this job waits outside the workers, so that neither can take
		// them all.
		span.SetAttributes(attribute.String("scanwire.deferred", refused.reason.String()))
		if lane { // a nak: the lane's MaxAckPending bounds them
			return natsx.DeferFor(d.deferDelay(refused), refused.reason)
		}
		if refused.reason == deferSlow && refused.slowFor >= d.cfg.LaneAfter && d.lanes != nil {
			owned, opened, err := d.lanes.open(ctx, job.Tenant, job.SubscriptionID, meta.Sequence.Stream,
				fmt.Sprintf("endpoint %s slow for %s", host(sub.URL), refused.slowFor.Round(time.Second)))
			if opened {
				d.log.WarnContext(ctx, "endpoint slow: its subscription's jobs move to a lane of their own", "tenant", job.Tenant,
					"subscription_id", job.SubscriptionID, "host", host(sub.URL), "slow_for", refused.slowFor.Round(time.Second))
			}
			if err == nil && owned {
				return natsx.Finished() // the lane has it, from this job on
			}
			if err != nil && !errors.Is(err, errTooManyLanes) {
				d.log.ErrorContext(ctx, "no lane for a slow endpoint; its jobs are deferred", "err", err)
			}
		}
		d.log.DebugContext(ctx, "deferred", "webhook_id", job.WebhookID, "subscription_id", job.SubscriptionID, "tenant", job.Tenant,
			"reason", refused.reason.String(), "endpoint_slow_for", refused.slowFor.Round(time.Millisecond))
		return d.deferJob(msg, meta, job, refused)
	}
	res := d.attempt(ctx, sub, job)
	s.release(res.timedOut || res.latency >= d.cfg.SlowAfter)
	span.SetAttributes(attribute.Int("http.response.status_code", res.status), attribute.String("server.address", host(sub.URL)))
	if !res.ok() {
		span.SetStatus(codes.Error, res.describe())
	}
	return d.conclude(ctx, msg, meta, sub, job, attempt, res)
}

// startSpan starts the job's consumer span, a child of the producer span
// fan-out stored in its headers (retries keep it: see retry.go).
func (d *Delivery) startSpan(ctx context.Context, msg jetstream.Msg, job *jobs.Job, attempt int) (context.Context, trace.Span) {
	ctx = telemetry.Extract(ctx, msg.Headers())
	return d.tel.Tracer.Start(ctx, "deliver "+job.EventType, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("scanwire.tenant", job.SourceTenant), attribute.String("scanwire.scan_id", job.ScanID),
		attribute.String("scanwire.event_type", job.EventType), attribute.String("scanwire.event_id", job.EventID),
		attribute.String("scanwire.subscription_id", job.SubscriptionID), attribute.String("scanwire.webhook_id", job.WebhookID),
		attribute.Int("scanwire.attempt", attempt)))
}

// target finds whom the job goes to: its subscription, or for a per-scan
// callback a stand-in made of the callback URL and the tenant's secret.
// When there is no one to send to, ok is false and out says why.
func (d *Delivery) target(ctx context.Context, meta *jetstream.MsgMetadata, job *jobs.Job) (sub *subscriptions.Subscription, out natsx.Outcome, ok bool) {
	if job.CallbackURL != "" {
		sub, err := d.callbackTarget(ctx, job)
		if err != nil {
			d.log.ErrorContext(ctx, "callback secret unavailable; will retry", "webhook_id", job.WebhookID, "err", err)
			return nil, natsx.Failed(failCallbackSecret, err), false
		}
		return sub, out, true
	}
	sub, ok = d.subs.Get(job.Tenant, job.SubscriptionID)
	if (!ok || sub.Disabled) && d.store != nil {
		// Dead-lettering is not undone by itself, and the cache may lag the
		// store (a subscription created or re-enabled a moment ago, by
		// another replica): the store has the last word.
		s, rev, err := d.store.Get(ctx, job.Tenant, job.SubscriptionID)
		switch {
		case err == nil:
			sub, ok = s, true
		case errors.Is(err, subscriptions.ErrNotFound):
			ok = false
		case rev != 0: // stored, but not a document the pipeline serves
			return nil, d.deadLetter(ctx, meta, &dlq.DeadLetter{Job: *job, Code: dlq.ReasonSubscriptionInvalid,
				Reason: err.Error(), Attempts: job.Attempt}), false
		default:
			return nil, natsx.Failed(failStore, err), false
		}
	}
	switch {
	case !ok:
		return nil, d.deadLetter(ctx, meta, &dlq.DeadLetter{Job: *job, Code: dlq.ReasonSubscriptionDeleted,
			Reason: "subscription deleted", Attempts: job.Attempt}), false
	case sub.Disabled:
		return nil, d.deadLetter(ctx, meta, &dlq.DeadLetter{Job: *job, Code: dlq.ReasonSubscriptionDisabled,
			Reason: "subscription disabled: " + sub.DisabledReason, Attempts: job.Attempt}), false
	}
	return sub, out, true
}

// callbackTarget stands in a subscription for a per-scan callback: the
// job's URL, the pwnkemon profile and its retry schedule, the tenant's
// signing secret.
func (d *Delivery) callbackTarget(ctx context.Context, job *jobs.Job) (*subscriptions.Subscription, error) {
	secret, err := d.tenants.SigningSecret(ctx, job.Tenant)
	if err != nil {
		return nil, err
	}
	return &subscriptions.Subscription{ID: jobs.CallbackSubscription, Tenant: job.Tenant, URL: job.CallbackURL,
		Profile: profiles.Pwnkemon, Secrets: []subscriptions.Secret{{Secret: secret}}}, nil
}

// attempt renders and sends one request.
func (d *Delivery) attempt(ctx context.Context, sub *subscriptions.Subscription, job *jobs.Job) result {
	var e event.Event
	if err := json.Unmarshal(job.Event, &e); err != nil {
		return result{err: fmt.Errorf("stored event is not a CloudEvent: %w", err), permanent: true}
	}
	p, ok := profiles.Lookup(sub.Profile)
	if !ok {
		return result{err: fmt.Errorf("unknown profile %q", sub.Profile), permanent: true}
	}
	now := time.Now()
	req, err := p.Render(profiles.Delivery{
		WebhookID:  job.WebhookID,
		Event:      &e,
		Structured: job.Event,
		Secrets:    sub.LiveSecrets(now),
		Now:        now,
		UserAgent:  d.cfg.UserAgent,
	})
	if err != nil {
		return result{err: fmt.Errorf("render %s request: %w", sub.Profile, err), permanent: true}
	}
	// Which tenant the event came from: the subscriber's own, or, for a
	// partner, the customer's.
	source := job.SourceTenant
	if source == "" {
		source = job.Tenant
	}
	req.Header.Set("X-Scanwire-Tenant", source)
	return post(ctx, d.client, sub.URL, req, d.cfg.Timeout, d.cfg.MaxResponseBody)
}
