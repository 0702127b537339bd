// Package delivery POSTs delivery jobs to subscribers. JetStream drives the
// retries: a failed attempt is naked with the delay of the subscription's
// schedule, and a job whose schedule is spent is dead-lettered.
package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/profiles"
	"github.com/scanwire/scanwire/internal/subscriptions"
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
}

func (c Config) withDefaults() Config {
	if c.Consumer == "" {
		c.Consumer = "delivery"
	}
	if c.Workers <= 0 {
		c.Workers = 64
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
	return c
}

// Delivery is the delivery service.
type Delivery struct {
	js       jetstream.JetStream
	subs     *subscriptions.Cache
	tenants  *tenants.Store
	client   *http.Client
	attempts *attempts.Log
	log      *slog.Logger
	cfg      Config
}

// Deps are what delivery works with.
type Deps struct {
	Subs *subscriptions.Cache
	// Tenants holds the signing secrets of per-scan callbacks.
	Tenants *tenants.Store
	// Client sends the webhooks; it must not follow redirects (see
	// NewHTTPClient).
	Client *http.Client
	// Attempts records every attempt.
	Attempts *attempts.Log
}

// New returns a delivery service.
func New(js jetstream.JetStream, d Deps, log *slog.Logger, cfg Config) *Delivery {
	return &Delivery{js: js, subs: d.Subs, tenants: d.Tenants, client: d.Client, attempts: d.Attempts,
		log: log.With("service", "delivery"), cfg: cfg.withDefaults()}
}

// Run consumes DELIVERIES until ctx ends. Attempts in flight when ctx ends
// finish (bounded by Timeout) and are acked or naked as usual.
func (d *Delivery) Run(ctx context.Context) error {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, natsx.StreamDeliveries, jetstream.ConsumerConfig{
		Durable:     d.cfg.Consumer,
		Description: "scanwire delivery workers",
		AckPolicy:   jetstream.AckExplicitPolicy,
		// Above the request timeout, so an attempt in progress is never
		// handed to a second worker.
		AckWait: 2*d.cfg.Timeout + 15*time.Second,
		// The subscription's schedule is the cap, not the server: a
		// server-side MaxDeliver would strand the job in the work queue
		// without a dead letter.
		MaxDeliver:    -1,
		MaxAckPending: 10000,
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
	attempt := int(meta.NumDelivered)
	job, err := jobs.Decode(msg.Data())
	if err != nil {
		d.deadLetter(ctx, msg, meta, &jobs.DeadLetter{Reason: err.Error(), Raw: msg.Data()})
		return
	}
	log := d.log.With("webhook_id", job.WebhookID, "subscription_id", job.SubscriptionID, "tenant", job.Tenant, "attempt", attempt)

	sub, ok := d.subs.Get(job.Tenant, job.SubscriptionID)
	if job.CallbackURL != "" {
		if sub, err = d.callbackTarget(ctx, job); err != nil {
			log.Error("callback secret unavailable; will retry", "err", err)
			_ = msg.NakWithDelay(5 * time.Second)
			return
		}
		ok = true
	}
	switch {
	case !ok:
		d.deadLetter(ctx, msg, meta, &jobs.DeadLetter{Job: *job, Reason: "subscription deleted", Attempts: attempt - 1})
		return
	case sub.Disabled:
		d.deadLetter(ctx, msg, meta, &jobs.DeadLetter{Job: *job, Reason: "subscription disabled: " + sub.DisabledReason, Attempts: attempt - 1})
		return
	}

	res := d.attempt(ctx, sub, job)
	rec := attempts.Attempt{
		Time: time.Now().UTC(), Tenant: job.Tenant, SubscriptionID: job.SubscriptionID, WebhookID: job.WebhookID,
		EventID: job.EventID, EventType: job.EventType, Attempt: attempt, Status: res.status, Error: res.errString(),
		LatencyMS: float64(res.latency.Microseconds()) / 1000, Response: string(res.body),
	}
	if res.ok() {
		log.Debug("delivered", "status", res.status, "latency", res.latency)
		rec.Outcome = attempts.OutcomeDelivered
		d.attempts.Record(rec)
		_ = msg.Ack()
		return
	}
	schedule := sub.Schedule()
	if !res.permanent && attempt <= len(schedule) {
		delay := schedule[attempt-1]
		log.Warn("attempt failed; will retry", "status", res.status, "err", res.err, "retry_in", delay)
		rec.Outcome, rec.RetryIn = attempts.OutcomeRetry, delay.String()
		d.attempts.Record(rec)
		_ = msg.NakWithDelay(delay)
		return
	}
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
	d.log.Warn("dead-lettered", "webhook_id", dl.Job.WebhookID, "subscription_id", dl.Job.SubscriptionID,
		"tenant", dl.Job.Tenant, "reason", dl.Reason, "last_status", dl.LastStatus)
	_ = msg.Term()
}
