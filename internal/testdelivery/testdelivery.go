// Package testdelivery sends test deliveries: a webhook.test event for one
// subscription, asked for with `scanwire subs test` or
// POST /v1/subscriptions/{id}/test. The event takes the normal path
// (SCAN_EVENTS, fan-out, DELIVERIES, delivery), so a test proves the whole
// pipeline: fan-out routes it to the one subscription its data names,
// whatever event types that subscription takes (services/fanout, match),
// and delivery signs and sends it in the subscription's profile.
//
// A test tells the truth at once: a subscription that cannot be tested
// (deleted, disabled, invalid) is refused before anything is sent, and a
// test that the pipeline gives up on before any attempt (dead-lettered by
// delivery, rejected by fan-out) is reported with the reason as soon as it
// is, not after the wait.
package testdelivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// Result is what a test delivery came to.
type Result struct {
	EventID   string            `json:"event_id"`
	WebhookID string            `json:"webhook_id"`
	Attempt   *attempts.Attempt `json:"attempt,omitempty"`
}

// DisabledError refuses to test a disabled subscription: its test would
// only be dead-lettered. Nothing is sent.
type DisabledError struct {
	ID     string
	Reason string // the subscription's disabled_reason
}

func (e *DisabledError) Error() string {
	return fmt.Sprintf("subscription %s is disabled (%s), so a test would be dead-lettered; enable it first "+
		"(scanwire subs update %s --enable, or PATCH /v1/subscriptions/%s with {\"disabled\": false})", e.ID, e.Reason, e.ID, e.ID)
}

// InvalidError refuses to test a subscription whose stored document the
// pipeline does not serve. Nothing is sent.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() + "; fix the document, then test it" }
func (e *InvalidError) Unwrap() error { return e.Err }

// StoppedError says the test event was given up on before any delivery
// attempt: dead-lettered by delivery (the subscription was deleted or
// disabled meanwhile, say) or rejected by fan-out.
type StoppedError struct {
	// Stream is natsx.StreamDLQ or natsx.StreamRejected; Seq is the copy's
	// sequence there (for a dead letter, its id).
	Stream string
	Seq    uint64
	// Code is the typed reason's label (a dlq.Reason or an
	// events.RejectReason); Reason is the text.
	Code   string
	Reason string
}

func (e *StoppedError) Error() string {
	if e.Stream == natsx.StreamRejected {
		return fmt.Sprintf("the test event was rejected by fan-out (%s): %s", e.Code, e.Reason)
	}
	return fmt.Sprintf("the test was dead-lettered without an attempt (%s, dead letter %d): %s", e.Code, e.Seq, e.Reason)
}

// Sender sends test deliveries.
type Sender struct {
	js    jetstream.JetStream
	store *subscriptions.Store
	log   *attempts.Log
}

// New returns a sender that publishes through js, checks subscriptions in
// store, and reads first attempts from log.
func New(js jetstream.JetStream, store *subscriptions.Store, log *attempts.Log) *Sender {
	return &Sender{js: js, store: store, log: log}
}

// attemptGrace is how long Send waits for the attempt record of a test
// that was dead-lettered after an attempt: delivery writes the dead
// letter at once, the attempt log every 200 ms.
const attemptGrace = 2 * time.Second

// Send checks the subscription, publishes a webhook.test event for it
// through the normal pipeline (SCAN_EVENTS, fan-out, delivery) and waits
// up to wait for its first attempt.
//
// Before sending, a deleted subscription is subscriptions.ErrNotFound, a
// disabled one a *DisabledError, an invalid one an *InvalidError. While
// waiting, a dead letter or a rejection of the test ends the wait at once
// with a *StoppedError. On timeout the result has no Attempt and the
// error is attempts.ErrNoAttempt: the delivery is still queued and will
// happen.
func (t *Sender) Send(ctx context.Context, tenant, subscriptionID string, wait time.Duration) (*Result, error) {
	if err := t.check(ctx, tenant, subscriptionID); err != nil {
		return nil, err
	}
	data, _ := json.Marshal(map[string]string{"subscription_id": subscriptionID, "message": "scanwire test delivery"})
	e := events.New(tenant, "//scanwire/test", events.TypeWebhookTest, subscriptionID, data)
	subject, err := events.Subject(tenant, subscriptionID, events.TypeWebhookTest)
	if err != nil {
		return nil, err
	}
	res := &Result{EventID: e.ID(), WebhookID: jobs.WebhookID(events.KeyOf(&e), subscriptionID)}

	// Everything is watched from before the publish, so nothing the event
	// causes can be missed.
	w, err := t.log.Watch(ctx, tenant, subscriptionID)
	if err != nil {
		return nil, err
	}
	dead, err := follow(ctx, t.js, natsx.StreamDLQ, dlq.Subject(tenant, subscriptionID))
	if err != nil {
		w.Stop()
		return nil, err
	}
	defer dead.Stop()
	rejected, err := follow(ctx, t.js, natsx.StreamRejected, events.RejectedSubject(tenant))
	if err != nil {
		w.Stop()
		return nil, err
	}
	defer rejected.Stop()
	if _, err := events.Publish(ctx, t.js, subject, &e); err != nil {
		w.Stop()
		return nil, err
	}

	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	type first struct {
		a   attempts.Attempt
		err error
	}
	attempted := make(chan first, 1)
	go func() {
		a, err := w.First(wctx, res.WebhookID)
		attempted <- first{a, err}
	}()
	stopped := make(chan stop, 2)
	go watchDLQ(wctx, dead, res.WebhookID, stopped)
	go watchRejected(wctx, rejected, subject, e.ID(), stopped)

	var f first
	select {
	case f = <-attempted:
	case s := <-stopped:
		if !s.attempted {
			return res, s.err
		}
		// The attempt that led to the dead letter is the better answer,
		// and its record is on its way.
		select {
		case f = <-attempted:
		case <-time.After(attemptGrace):
			return res, s.err
		}
	}
	if f.err != nil {
		return res, f.err
	}
	res.Attempt = &f.a
	return res, nil
}

// check refuses a subscription that cannot be tested, with the reason.
func (t *Sender) check(ctx context.Context, tenant, id string) error {
	s, rev, err := t.store.Get(ctx, tenant, id)
	switch {
	case errors.Is(err, subscriptions.ErrNotFound):
		return err
	case err != nil && rev != 0:
		return &InvalidError{Err: err}
	case err != nil:
		return err
	case s.Disabled:
		return &DisabledError{ID: s.ID, Reason: s.DisabledReason}
	}
	return nil
}

// stop is a copy of the test found in DLQ or REJECTED.
type stop struct {
	err       *StoppedError
	attempted bool // an attempt was made before (its record follows)
}

// follow reads the messages stored in stream under filter from now on.
func follow(ctx context.Context, js jetstream.JetStream, stream, filter string) (jetstream.MessagesContext, error) {
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", stream, err)
	}
	it, err := c.Messages()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", stream, err)
	}
	return it, nil
}

// watchDLQ reports the dead letter of webhookID, until ctx ends.
func watchDLQ(ctx context.Context, it jetstream.MessagesContext, webhookID string, out chan<- stop) {
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return
		}
		var dl dlq.DeadLetter
		if json.Unmarshal(m.Data(), &dl) != nil || dl.Job.WebhookID != webhookID {
			continue
		}
		var seq uint64
		if meta, err := m.Metadata(); err == nil {
			seq = meta.Sequence.Stream
		}
		out <- stop{err: &StoppedError{Stream: natsx.StreamDLQ, Seq: seq, Code: dl.Code.String(), Reason: dl.Reason}, attempted: dl.Attempts > dl.Job.Attempt}
		return
	}
}

// watchRejected reports fan-out's rejection of the event eventID published
// on subject, until ctx ends.
func watchRejected(ctx context.Context, it jetstream.MessagesContext, subject, eventID string, out chan<- stop) {
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return
		}
		h := m.Headers()
		if h.Get(events.HeaderOriginalSubject) != subject || h.Get("ce-id") != eventID {
			continue
		}
		var seq uint64
		if meta, err := m.Metadata(); err == nil {
			seq = meta.Sequence.Stream
		}
		out <- stop{err: &StoppedError{Stream: natsx.StreamRejected, Seq: seq, Code: h.Get(events.HeaderRejectCode), Reason: h.Get(events.HeaderRejectReason)}}
		return
	}
}
