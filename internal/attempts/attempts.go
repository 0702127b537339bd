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
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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

// FlushInterval is how often recorded attempts are written. Each write is
// a batch (one message per subscription holding its records), so the log
// costs the disk a few writes per interval, not one per delivery: with
// fsync on every write, that is the difference between the log and the
// deliveries competing for the disk and not.
const FlushInterval = 200 * time.Millisecond

// maxBatch bounds one message's records (and so its size: 1 KiB of
// response each at most).
const maxBatch = 256

// Log writes and reads the attempt log.
type Log struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu      sync.Mutex
	pending map[string][]Attempt // subject -> records not yet written
}

// NewLog returns the attempt log over js. A writer must call Run.
func NewLog(js jetstream.JetStream, log *slog.Logger) *Log {
	return &Log{js: js, log: log, pending: map[string][]Attempt{}}
}

// Record queues a for the next flush. It never blocks a delivery: the log
// is for people, and a delivery must not stall or fail because its record
// could not be written. Records not yet flushed when the process dies are
// lost (at most FlushInterval of them); a failed write is logged.
func (l *Log) Record(a Attempt) {
	if len(a.Response) > MaxResponse {
		a.Response = a.Response[:MaxResponse]
	}
	subj := Subject(a.Tenant, a.SubscriptionID)
	l.mu.Lock()
	l.pending[subj] = append(l.pending[subj], a)
	l.mu.Unlock()
}

// Run writes the queued records every FlushInterval until ctx ends, then
// writes what is left.
func (l *Log) Run(ctx context.Context) error {
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			l.Flush(fctx)
			cancel()
			return nil
		case <-t.C:
			l.Flush(ctx)
		}
	}
}

// Flush writes the queued records now.
func (l *Log) Flush(ctx context.Context) {
	l.mu.Lock()
	pending := l.pending
	l.pending = map[string][]Attempt{}
	l.mu.Unlock()
	for subj, recs := range pending {
		for len(recs) > 0 {
			n := min(len(recs), maxBatch)
			b, err := json.Marshal(recs[:n])
			if err == nil {
				_, err = l.js.Publish(ctx, subj, b)
			}
			if err != nil {
				l.log.Warn("attempt records not written", "subject", subj, "records", n, "err", err)
			}
			recs = recs[n:]
		}
	}
}

// decode reads one message of the log: a batch of records.
func decode(data []byte) []Attempt {
	var batch []Attempt
	if json.Unmarshal(data, &batch) != nil {
		return nil
	}
	return batch
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
		for _, a := range decode(m.Data()) {
			if q.EventID != "" && a.EventID != q.EventID {
				continue
			}
			out = append(out, a)
			if len(out) > q.Limit {
				out = out[1:]
			}
		}
	})
	return out, err
}

// ErrNoAttempt is returned by Watcher.First when no attempt was made in time.
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

// Stop ends the watch; First stops it too.
func (w *Watcher) Stop() { w.it.Stop() }

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
		for _, a := range decode(m.Data()) {
			if a.WebhookID == webhookID {
				return a, nil
			}
		}
	}
}
