// Package jobs defines the message between fan-out and delivery: a
// delivery job, one event for one subscription, in DELIVERIES. A job given
// up on becomes a dead letter (package dlq).
package jobs

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/jsonx"
)

// Job is one event to deliver to one subscription. It carries the whole
// event, so delivery needs nothing but the job and the subscription.
type Job struct {
	// WebhookID is the receiver's idempotency key and the job's dedupe id:
	// derived from the event's key (events.Key: tenant, source and id) and
	// the subscription id, so a redelivered event, a retried attempt and a
	// replay from the DLQ all carry the same one, and two tenants' events
	// that share an id do not.
	WebhookID string `json:"webhook_id"`
	// Tenant owns the subscription; SourceTenant is the event's tenant,
	// which differs when a partner hears a customer's event.
	Tenant         string `json:"tenant"`
	SourceTenant   string `json:"source_tenant"`
	SubscriptionID string `json:"subscription_id"`
	EventID        string `json:"event_id"`
	EventType      string `json:"event_type"`
	ScanID         string `json:"scan_id"`
	// Event is the CloudEvent in structured JSON mode.
	Event json.RawMessage `json:"event"`
	// CallbackURL is set on a per-scan callback (Pwnkemon's callback_url):
	// the job goes there, in the pwnkemon profile, signed with the
	// tenant's signing secret, instead of to a subscription.
	CallbackURL string `json:"callback_url,omitempty"`
	// Attempt counts the attempts already made; 0 for a new job.
	Attempt int `json:"attempt,omitempty"`
	// Queued is when fan-out stored the job (publish-to-receipt latency
	// is measured from the event's own time, not this).
	Queued time.Time `json:"queued"`
}

// CallbackSubscription stands in for the subscription id of callback jobs
// in subjects, dedupe ids and the attempt log.
const CallbackSubscription = "callback"

// WebhookID derives the idempotency key of (event, subscription) from the
// event's key (events.Key), never from its bare id.
func WebhookID(eventKey, subscriptionID string) string {
	sum := sha256.Sum256([]byte(eventKey + "\x00" + subscriptionID))
	return "msg_" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16])
}

// Subject is where a job for (tenant, subscription) is published.
func Subject(tenant, subscriptionID string) string {
	return "deliveries." + tenant + "." + subscriptionID
}

// RetrySubject holds the scheduled copy of a job waiting for its next
// attempt, in DELIVERIES but outside the delivery consumer's filter.
func RetrySubject(webhookID string, attempt int) string {
	return fmt.Sprintf("retries.%s.%d", webhookID, attempt)
}

// Msg encodes j as a NATS message ready to publish.
func (j *Job) Msg() (*nats.Msg, error) {
	b, err := jsonx.Marshal(j) // never HTML-escaped: the event reaches receivers byte for byte
	if err != nil {
		return nil, fmt.Errorf("encode job %s: %w", j.WebhookID, err)
	}
	m := nats.NewMsg(Subject(j.Tenant, j.SubscriptionID))
	m.Data = b
	// The server drops a second copy published by a redelivered fan-out
	// within the dedupe window.
	m.Header.Set(nats.MsgIdHdr, j.WebhookID)
	return m, nil
}

// Decode reads a job from a message body.
func Decode(data []byte) (*Job, error) {
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("decode job: %w", err)
	}
	if j.WebhookID == "" || j.Tenant == "" || j.SubscriptionID == "" || len(j.Event) == 0 {
		return nil, fmt.Errorf("decode job: webhook_id, tenant, subscription_id and event are required")
	}
	return &j, nil
}
