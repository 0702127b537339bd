// Package dlq is the dead-letter queue: jobs given up on, each with its
// reason, kept in the DLQ stream (dlq.<tenant>.<subscription_id>) for a
// bounded time, listed per tenant and subscription, and replayable. The
// delivery service writes dead letters (services/delivery/retry.go);
// the API and the CLI list and replay them through Store.
package dlq

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/jsonx"
)

// DeadLetter is a job given up on: why, and what the last attempt saw.
// Replaying it publishes Job again, with the same webhook id.
type DeadLetter struct {
	Job jobs.Job `json:"job"`
	// Code says why delivery stopped, for a program: "retries_exhausted".
	Code Reason `json:"code"`
	// Reason says why delivery stopped, for a person: "retries exhausted
	// after 7 attempts", "subscription deleted"...
	Reason string `json:"reason"`
	// LastStatus is the HTTP status of the last attempt, 0 when there was
	// no response (timeout, connection refused).
	LastStatus int `json:"last_status"`
	// LastError is the last attempt's error, when it had one.
	LastError string    `json:"last_error,omitempty"`
	Attempts  int       `json:"attempts"`
	DeadAt    time.Time `json:"dead_at"`
	// Raw holds a message that could not be decoded as a job at all, so
	// that even garbage published to DELIVERIES is kept, not dropped: its
	// first MaxRaw bytes; RawSize is its whole size when Raw was cut.
	Raw     []byte `json:"raw,omitempty"`
	RawSize int    `json:"raw_size,omitempty"`
}

// MaxRaw is how much of an undecodable message a dead letter keeps: enough
// to see what it was, small enough (base64 in JSON) that the dead letter
// always fits in the DLQ, so giving up on garbage never loops.
const MaxRaw = 64 << 10

// Subject is where a dead letter for (tenant, subscription) goes.
func Subject(tenant, subscriptionID string) string {
	if tenant == "" || subscriptionID == "" {
		return "dlq._invalid._invalid"
	}
	return "dlq." + tenant + "." + subscriptionID
}

// Msg encodes d as a NATS message. The dedupe id makes a repeated
// dead-lettering of the same delivery (after a crash between the DLQ write
// and the term) store one entry.
func (d *DeadLetter) Msg(deliverySeq uint64) (*nats.Msg, error) {
	if len(d.Raw) > MaxRaw {
		d.RawSize, d.Raw = len(d.Raw), d.Raw[:MaxRaw]
	}
	b, err := jsonx.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode dead letter %s: %w", d.Job.WebhookID, err)
	}
	m := nats.NewMsg(Subject(d.Job.Tenant, d.Job.SubscriptionID))
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("dlq.%s.%d", d.Job.WebhookID, deliverySeq))
	return m, nil
}
