// Package attempts is the attempt log: one record per delivery attempt,
// kept in the ATTEMPTS stream for a bounded time, listed per subscription
// and per event.
package attempts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
)

// MaxResponse is how much of a receiver's answer is recorded.
const MaxResponse = 1 << 10

// Outcomes of an attempt.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetry     = "retry"
	OutcomeDead      = "dead-lettered"
)

// Attempt is one try at delivering one job.
type Attempt struct {
	Time           time.Time `json:"time"`
	Tenant         string    `json:"tenant"`
	SubscriptionID string    `json:"subscription_id"`
	WebhookID      string    `json:"webhook_id"`
	EventID        string    `json:"event_id"`
	EventType      string    `json:"event_type"`
	Attempt        int       `json:"attempt"`
	// Status is the HTTP status, 0 when there was no response.
	Status    int     `json:"status"`
	Error     string  `json:"error,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
	// Response is the first MaxResponse bytes of the receiver's answer.
	Response string `json:"response,omitempty"`
	Outcome  string `json:"outcome"`
	// RetryIn is the delay before the next attempt, when there is one.
	RetryIn string `json:"retry_in,omitempty"`
}

// Subject is where the attempts of (tenant, subscription) are kept.
func Subject(tenant, subscriptionID string) string {
	return "attempts." + tenant + "." + subscriptionID
}

// Log writes and reads the attempt log.
type Log struct {
	js  jetstream.JetStream
	log *slog.Logger
}

// NewLog returns the attempt log over js.
func NewLog(js jetstream.JetStream, log *slog.Logger) *Log { return &Log{js: js, log: log} }

// Record stores a. It does not wait for the server: the log is for people,
// and a delivery must not stall or fail because its record could not be
// written. A lost record is logged.
func (l *Log) Record(a Attempt) {
	if len(a.Response) > MaxResponse {
		a.Response = a.Response[:MaxResponse]
	}
	b, err := json.Marshal(a)
	if err != nil {
		return
	}
	if _, err := l.js.PublishAsync(Subject(a.Tenant, a.SubscriptionID), b, jetstream.WithStallWait(time.Second)); err != nil {
		l.log.Warn("attempt not recorded", "webhook_id", a.WebhookID, "attempt", a.Attempt, "err", err)
	}
}

// Query selects attempts. Tenant is required; the others narrow it.
type Query struct {
	Tenant         string
	SubscriptionID string
	EventID        string
	// Limit keeps the newest Limit records (default 100).
	Limit int
}

// List returns the matching attempts, oldest first.
func (l *Log) List(ctx context.Context, q Query) ([]Attempt, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	sub := "*"
	if q.SubscriptionID != "" {
		sub = q.SubscriptionID
	}
	var out []Attempt
	err := natsx.ReadAll(ctx, l.js, natsx.StreamAttempts, Subject(q.Tenant, sub), func(m jetstream.Msg) {
		var a Attempt
		if json.Unmarshal(m.Data(), &a) != nil || (q.EventID != "" && a.EventID != q.EventID) {
			return
		}
		out = append(out, a)
		if len(out) > q.Limit {
			out = out[1:]
		}
	})
	return out, err
}

// ErrNoAttempt is returned by WaitFirst when no attempt was made in time.
var ErrNoAttempt = errors.New("no delivery attempt recorded in time")

// Watch starts following the attempts of (tenant, subscription) recorded
// from now on. Call it before causing the attempt, then Next.
func (l *Log) Watch(ctx context.Context, tenant, subscriptionID string) (*Watcher, error) {
	c, err := l.js.OrderedConsumer(ctx, natsx.StreamAttempts, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{Subject(tenant, subscriptionID)},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("watch attempts: %w", err)
	}
	it, err := c.Messages()
	if err != nil {
		return nil, fmt.Errorf("watch attempts: %w", err)
	}
	return &Watcher{it: it}, nil
}

// Watcher follows new attempts.
type Watcher struct{ it jetstream.MessagesContext }

// First waits for the first attempt at webhookID, or ctx's end.
func (w *Watcher) First(ctx context.Context, webhookID string) (Attempt, error) {
	defer w.it.Stop()
	for {
		m, err := w.it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return Attempt{}, ErrNoAttempt
			}
			return Attempt{}, err
		}
		var a Attempt
		if json.Unmarshal(m.Data(), &a) == nil && a.WebhookID == webhookID {
			return a, nil
		}
	}
}

// TestResult is what a test delivery came to.
type TestResult struct {
	EventID   string   `json:"event_id"`
	WebhookID string   `json:"webhook_id"`
	Attempt   *Attempt `json:"attempt,omitempty"`
}

// SendTest publishes a webhook.test event for one subscription through the
// normal pipeline (SCAN_EVENTS, fan-out, delivery) and waits up to wait
// for its first attempt. On timeout the result has no Attempt and the
// error is ErrNoAttempt: the delivery is still queued and will happen.
func (l *Log) SendTest(ctx context.Context, tenant, subscriptionID string, wait time.Duration) (*TestResult, error) {
	data, _ := json.Marshal(map[string]string{"subscription_id": subscriptionID, "message": "scanwire test delivery"})
	e := events.New(tenant, "//scanwire/test", events.TypeWebhookTest, subscriptionID, data)
	subject, err := events.Subject(tenant, subscriptionID, events.TypeWebhookTest)
	if err != nil {
		return nil, err
	}
	w, err := l.Watch(ctx, tenant, subscriptionID)
	if err != nil {
		return nil, err
	}
	res := &TestResult{EventID: e.ID(), WebhookID: jobs.WebhookID(e.ID(), subscriptionID)}
	if _, err := events.Publish(ctx, l.js, subject, &e); err != nil {
		w.it.Stop()
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	a, err := w.First(wctx, res.WebhookID)
	if err != nil {
		return res, err
	}
	res.Attempt = &a
	return res, nil
}
