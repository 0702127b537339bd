// Package delivery POSTs delivery jobs to subscribers. JetStream drives the
// retries: a failed attempt is naked with the delay of the subscription's
// schedule, and a job whose schedule is spent is dead-lettered.
package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/events"
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
	// PerEndpoint caps the requests in flight to one host, so that a slow
	// or dead endpoint holds at most this many workers.
	PerEndpoint int
	// SlotWait is how long a worker waits for a busy (not stuck) endpoint
	// to have room before it defers the job (see endpoints).
	SlotWait time.Duration
	// DeferDelay is how long a job for a busy endpoint waits before it is
	// tried again (plus up to as much jitter).
	DeferDelay time.Duration
	// MaxAckPending bounds the jobs handed out and not yet finished,
	// deferred ones included.
	MaxAckPending int
	// AutoDisableAfter disables a subscription whose deliveries have kept
	// failing this long.
	AutoDisableAfter time.Duration
}

func (c Config) withDefaults() Config {
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
	if c.SlotWait <= 0 {
		c.SlotWait = 2 * time.Second
	}
	if c.DeferDelay <= 0 {
		c.DeferDelay = time.Second
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 20_000
	}
	if c.AutoDisableAfter <= 0 {
		c.AutoDisableAfter = 5 * 24 * time.Hour
	}
	return c
}

// ConsumerName is the durable consumer a delivery service with cfg uses.
func ConsumerName(cfg Config) string { return cfg.withDefaults().Consumer }

// Delivery is the delivery service.
type Delivery struct {
	js        jetstream.JetStream
	subs      *subscriptions.Cache
	tenants   *tenants.Store
	client    *http.Client
	attempts  *attempts.Log
	endpoints *endpoints
	health    *health
	tel       *telemetry.Telemetry
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
}

// New returns a delivery service.
func New(js jetstream.JetStream, d Deps, log *slog.Logger, cfg Config) *Delivery {
	cfg = cfg.withDefaults()
	log = log.With("service", "delivery")
	return &Delivery{js: js, subs: d.Subs, tenants: d.Tenants, client: d.Client, attempts: d.Attempts, tel: d.Telemetry,
		endpoints: newEndpoints(cfg.PerEndpoint), health: &health{store: d.Store, after: cfg.AutoDisableAfter, log: log},
		log: log, cfg: cfg}
}

// Run consumes DELIVERIES until ctx ends. Attempts in flight when ctx ends
// finish (bounded by Timeout) and are acked or naked as usual.
func (d *Delivery) Run(ctx context.Context) error {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, natsx.StreamDeliveries, jetstream.ConsumerConfig{
		Durable:       d.cfg.Consumer,
		Description:   "scanwire delivery workers",
		FilterSubject: "deliveries.>", // not the scheduled retries waiting their time
		AckPolicy:     jetstream.AckExplicitPolicy,
		// Above the request timeout, so an attempt in progress is never
		// handed to a second worker.
		AckWait: 2*d.cfg.Timeout + 15*time.Second,
		// The subscription's schedule is the cap, not the server: a
		// server-side MaxDeliver would strand the job in the work queue
		// without a dead letter.
		MaxDeliver:    -1,
		MaxAckPending: d.cfg.MaxAckPending,
	})
	if err != nil {
		return fmt.Errorf("delivery consumer: %w", err)
	}
	select {
	case <-d.subs.Ready():
	case <-ctx.Done():
		return nil
	}
	d.log.Info("delivery started", "consumer", d.cfg.Consumer, "workers", d.cfg.Workers, "timeout", d.cfg.Timeout)
	err = natsx.Consume(ctx, cons, d.cfg.Workers, d.handle, d.log)
	d.log.Info("delivery stopped")
	return err
}

func (d *Delivery) handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		d.log.Error("message without metadata", "subject", msg.Subject(), "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	job, err := jobs.Decode(msg.Data())
	if err != nil {
		d.deadLetter(ctx, msg, meta, &jobs.DeadLetter{Reason: err.Error(), Raw: msg.Data()})
		return
	}
	// The attempt number travels in the job, not in JetStream's delivery
	// count: a job deferred because its endpoint is busy, or handed back at
	// a shutdown, has not been attempted.
	attempt := job.Attempt + 1
	log := d.log.With("webhook_id", job.WebhookID, "subscription_id", job.SubscriptionID, "tenant", job.Tenant, "attempt", attempt)
	ctx = events.ExtractTrace(ctx, msg.Headers())
	ctx, span := d.tel.Tracer.Start(ctx, "deliver "+job.EventType, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("scanwire.tenant", job.SourceTenant), attribute.String("scanwire.scan_id", job.ScanID),
		attribute.String("scanwire.event_type", job.EventType), attribute.String("scanwire.event_id", job.EventID),
		attribute.String("scanwire.subscription_id", job.SubscriptionID), attribute.String("scanwire.webhook_id", job.WebhookID),
		attribute.Int("scanwire.attempt", attempt)))
	defer span.End()

	sub, ok := d.subs.Get(job.Tenant, job.SubscriptionID)
	if job.CallbackURL != "" {
		if sub, err = d.callbackTarget(ctx, job); err != nil {
			log.ErrorContext(ctx, "callback secret unavailable; will retry", "err", err)
			_ = msg.NakWithDelay(5 * time.Second)
			return
		}
		ok = true
	}
	switch {
	case !ok:
		d.deadLetter(ctx, msg, meta, &jobs.DeadLetter{Job: *job, Reason: "subscription deleted", Attempts: job.Attempt})
		return
	case sub.Disabled:
		d.deadLetter(ctx, msg, meta, &jobs.DeadLetter{Job: *job, Reason: "subscription disabled: " + sub.DisabledReason, Attempts: job.Attempt})
		return
	}

	d.health.pruneSecrets(ctx, sub)
	release, ok := d.endpoints.acquire(ctx, sub.URL, d.cfg.SlotWait)
	if !ok {
		// The endpoint is stuck with its share of requests in flight: this
		// job waits outside the workers, so it cannot take them all.
		span.SetAttributes(attribute.Bool("scanwire.deferred", true))
		_ = msg.NakWithDelay(d.cfg.DeferDelay + time.Duration(rand.Int64N(int64(d.cfg.DeferDelay))))
		return
	}
	res := d.attempt(ctx, sub, job)
	release()
	span.SetAttributes(attribute.Int("http.response.status_code", res.status), attribute.String("server.address", host(sub.URL)))
	if !res.ok() {
		span.SetStatus(codes.Error, res.describe())
	}
	outcome := attempts.OutcomeDelivered
	defer func() {
		attrs := metric.WithAttributes(attribute.String("outcome", outcome), attribute.String("profile", sub.Profile))
		d.tel.Metrics.Deliveries.Add(ctx, 1, attrs)
		d.tel.Metrics.AttemptDuration.Record(ctx, res.latency.Seconds(), attrs)
	}()

	rec := attempts.Attempt{
		Time: time.Now().UTC(), Tenant: job.Tenant, SubscriptionID: job.SubscriptionID, WebhookID: job.WebhookID,
		EventID: job.EventID, EventType: job.EventType, Attempt: attempt, Status: res.status, Error: res.errString(),
		LatencyMS: float64(res.latency.Microseconds()) / 1000, Response: string(res.body),
	}
	if res.ok() {
		log.DebugContext(ctx, "delivered", "status", res.status, "latency", res.latency)
		rec.Outcome = attempts.OutcomeDelivered
		d.attempts.Record(rec)
		d.health.succeeded(ctx, sub)
		_ = msg.Ack()
		return
	}
	if res.status == http.StatusGone {
		d.health.gone(ctx, sub)
	} else {
		d.health.failed(ctx, sub)
	}
	schedule, jitter := sub.Schedule()
	if !res.permanent && attempt <= len(schedule) {
		delay := schedule[attempt-1]
		if jitter {
			delay += time.Duration(rand.Int64N(int64(delay)/5+1)) - delay/10 // ±10%
		}
		if res.retryAfter > 0 {
			delay = res.retryAfter
		}
		log.WarnContext(ctx, "attempt failed; will retry", "status", res.status, "err", res.err, "retry_in", delay)
		outcome = attempts.OutcomeRetry
		rec.Outcome, rec.RetryIn = attempts.OutcomeRetry, delay.String()
		d.tel.Metrics.RetriesScheduled.Add(ctx, 1)
		d.attempts.Record(rec)
		d.retryLater(ctx, msg, meta, job, attempt, delay)
		return
	}
	outcome = attempts.OutcomeDead
	rec.Outcome = attempts.OutcomeDead
	d.attempts.Record(rec)
	reason := fmt.Sprintf("retries exhausted after %d attempts: %s", attempt, res.describe())
	if res.permanent {
		reason = res.describe()
	}
	d.deadLetter(ctx, msg, meta, &jobs.DeadLetter{
		Job: *job, Reason: reason, LastStatus: res.status, LastError: res.errString(), Attempts: attempt,
	})
}

// retryLater queues the next attempt as a scheduled message and acks this
// one. Waiting retries are messages in the stream, not unacknowledged
// deliveries, so thousands of them do not fill the consumer's
// MaxAckPending and starve healthy endpoints. The copy is published before
// the ack, under a dedupe id (this message's sequence): a crash in between
// cannot lose the job, and the second copy is dropped by the server.
func (d *Delivery) retryLater(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, job *jobs.Job, attempt int, delay time.Duration) {
	next := *job
	next.Attempt = attempt
	m, err := next.Msg()
	if err == nil {
		// The retry keeps the job's trace context: its attempt is a
		// sibling of this one, in the same trace.
		for _, k := range []string{"traceparent", "tracestate"} {
			if v := msg.Headers().Get(k); v != "" {
				m.Header.Set(k, v)
			}
		}
		target := m.Subject
		m.Subject = jobs.RetrySubject(job.WebhookID, attempt)
		// Keyed on this message, not just the webhook id and attempt: a
		// replayed job lives its schedule again and its retries must not
		// be dropped as copies of its first life's.
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s.%d", m.Subject, meta.Sequence.Stream))
		// Schedules have one-second resolution: round up, never early.
		at := time.Now().Add(delay + time.Second - 1).Truncate(time.Second)
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = d.js.PublishMsg(pctx, m, jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(target))
		cancel()
	}
	if err != nil {
		// The job stays in flight and comes back after the delay; the
		// attempt is then made again under the same number.
		d.log.Error("could not schedule the retry; falling back to a delayed nak", "webhook_id", job.WebhookID, "err", err)
		_ = msg.NakWithDelay(delay)
		return
	}
	_ = msg.Ack()
}

// reasonKind is a dead letter's reason reduced to a metric label.
func reasonKind(reason string) string {
	for _, k := range []string{"retries exhausted", "subscription deleted", "subscription disabled", "egress blocked", "HTTP 410"} {
		if strings.HasPrefix(reason, k) {
			return strings.ReplaceAll(k, " ", "_")
		}
	}
	return "permanent"
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

// deadLetter stores dl in DLQ and then terminates the job. The order
// matters: on a work queue, term deletes the job, so it must be safe in
// DLQ first. If the DLQ write fails the job is naked and tried again.
func (d *Delivery) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, dl *jobs.DeadLetter) {
	dl.DeadAt = time.Now().UTC()
	m, err := dl.Msg(meta.Sequence.Stream)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = d.js.PublishMsg(pctx, m)
		cancel()
	}
	if err != nil {
		d.log.Error("dead-letter failed; job kept for another try", "webhook_id", dl.Job.WebhookID, "err", err)
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	d.log.WarnContext(ctx, "dead-lettered", "webhook_id", dl.Job.WebhookID, "subscription_id", dl.Job.SubscriptionID,
		"tenant", dl.Job.Tenant, "reason", dl.Reason, "last_status", dl.LastStatus)
	d.tel.Metrics.DeadLetters.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reasonKind(dl.Reason))))
	_ = msg.Term()
}
