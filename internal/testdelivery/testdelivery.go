// Package testdelivery sends test deliveries: a webhook.test event for one
// subscription, asked for with `scanwire subs test` or
// POST /v1/subscriptions/{id}/test. The event takes the normal path
// (SCAN_EVENTS, fan-out, DELIVERIES, delivery), so a test proves the whole
// pipeline: fan-out routes it to the one subscription its data names,
// whatever event types that subscription takes (services/fanout, match),
// and delivery signs and sends it in the subscription's profile.
package testdelivery

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
)

// Result is what a test delivery came to.
type Result struct {
	EventID   string            `json:"event_id"`
	WebhookID string            `json:"webhook_id"`
	Attempt   *attempts.Attempt `json:"attempt,omitempty"`
}

// Send publishes a webhook.test event for one subscription through the
// normal pipeline (SCAN_EVENTS, fan-out, delivery) and waits up to wait
// for its first attempt in log. On timeout the result has no Attempt and
// the error is attempts.ErrNoAttempt: the delivery is still queued and will
// happen.
func Send(ctx context.Context, js jetstream.JetStream, log *attempts.Log, tenant, subscriptionID string, wait time.Duration) (*Result, error) {
	data, _ := json.Marshal(map[string]string{"subscription_id": subscriptionID, "message": "scanwire test delivery"})
	e := events.New(tenant, "//scanwire/test", events.TypeWebhookTest, subscriptionID, data)
	subject, err := events.Subject(tenant, subscriptionID, events.TypeWebhookTest)
	if err != nil {
		return nil, err
	}
	w, err := log.Watch(ctx, tenant, subscriptionID)
	if err != nil {
		return nil, err
	}
	res := &Result{EventID: e.ID(), WebhookID: jobs.WebhookID(events.KeyOf(&e), subscriptionID)}
	if _, err := events.Publish(ctx, js, subject, &e); err != nil {
		w.Stop()
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
