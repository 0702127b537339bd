// Package jobs defines the message between fan-out and delivery: a
// delivery job, one event for one subscription, in DELIVERIES. A job given
// up on becomes a dead letter (package dlq).
package jobs

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jsonx"
)

// Job is one event to deliver to one subscription. It carries the whole
// event, so delivery needs nothing but the job and the subscription.
type Job struct {
	// WebhookID is the receiver's idempotency key and names the job's
	// subject (Subject):
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
	// FindingType is the finding's data.type on a finding's job: the
	// per-type limit counts jobs by it (see Subject).
	FindingType string `json:"finding_type,omitempty"`
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

// Subject is where j is first stored in DELIVERIES, one subject per
// subscription, scan and kind of job:
//
//	deliveries.<tenant>.<subscription>.<source>.<scan>.<type>
//
// where source is the event's tenant and type the finding's type
// (TypeToken) or, for any other event, "%" and its event type (KindToken).
// The jobs under ScopeFilter are the record of what fan-out queued for
// that subscription and scan (internal/limits): each one a webhook id
// (HeaderWebhookID), stored once; those of finding types are the findings
// admitted. Retries, deferrals and replays of j go to CopySubject, outside
// that record, so they neither count nor disturb it.
func (j *Job) Subject() string {
	source := j.SourceTenant
	if source == "" {
		source = j.Tenant
	}
	scan := j.ScanID
	if scan == "" { // every event has one; a hand-made job may not
		scan = "_"
	}
	tok := KindToken(j.EventType)
	if events.IsFinding(j.EventType) {
		tok = TypeToken(j.FindingType)
	}
	return "deliveries." + j.Tenant + "." + j.SubscriptionID + "." + source + "." + scan + "." + tok
}

// CopySubject is where a copy of j made by delivery (a retry, a deferral)
// or a replay is stored: Subject with ".r", read by the delivery consumer
// as any job.
func (j *Job) CopySubject() string { return j.Subject() + ".r" }

// HeaderWebhookID carries a job's webhook id, so that the record of a
// scope reads without decoding jobs.
const HeaderWebhookID = "Scanwire-Webhook-Id"

// Filter matches every job of one subscription.
func Filter(tenant, subscriptionID string) string {
	return "deliveries." + tenant + "." + subscriptionID + ".>"
}

// ScopeFilter matches the jobs fan-out stored for one subscription and one
// scan of source (not their copies): the record internal/limits keeps.
func ScopeFilter(tenant, subscriptionID, source, scanID string) string {
	return "deliveries." + tenant + "." + subscriptionID + "." + source + "." + scanID + ".*"
}

// KindToken is the subject token of a job that is not a finding's: "%"
// and its event type with '.' written '~' (%scan~started). No finding
// type contains '%' (TypeToken).
func KindToken(eventType string) string { return "%" + strings.ReplaceAll(eventType, ".", "~") }

// IsFindingToken reports whether a job's type token is a finding type's.
func IsFindingToken(tok string) bool { return !strings.HasPrefix(tok, "%") || tok == "%" }

// TypeToken is a finding type as a subject token. Types are
// [A-Za-z0-9_.:-]+ (schemas/finding.json): a '.' becomes '~', which no
// type contains, so the token reads as the type and TypeName reverses it;
// an empty type, which validation never lets through, is "%".
func TypeToken(findingType string) string {
	if findingType == "" {
		return "%"
	}
	return strings.ReplaceAll(findingType, ".", "~")
}

// TypeName is the finding type a TypeToken stands for.
func TypeName(token string) string {
	if token == "%" {
		return ""
	}
	return strings.ReplaceAll(token, "~", ".")
}

// ExpectEmpty makes m's publication succeed only while its subject holds
// no message, so that a job, stored once, is never stored again (Subject).
// The server answers a second one with a wrong-last-sequence error
// (Exists).
func ExpectEmpty(m *nats.Msg) {
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
}

// Exists reports whether err is the server refusing a publication whose
// expected last sequence did not hold: for a job published with
// ExpectEmpty, the job is stored already.
func Exists(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// RetrySubject holds the scheduled copy of a job waiting for its next
// attempt, in DELIVERIES but outside the delivery consumer's filter.
func RetrySubject(webhookID string, attempt int) string {
	return fmt.Sprintf("retries.%s.%d", webhookID, attempt)
}

// Msg encodes j as a NATS message on its Subject, with its webhook id in
// HeaderWebhookID. It carries no expectation and no dedupe id: each
// publisher adds what keeps its own copies single (fan-out the scope's
// expectation, see internal/limits; a retry or a replay a Nats-Msg-Id, on
// CopySubject).
func (j *Job) Msg() (*nats.Msg, error) {
	b, err := jsonx.Marshal(j) // never HTML-escaped: the event reaches receivers byte for byte
	if err != nil {
		return nil, fmt.Errorf("encode job %s: %w", j.WebhookID, err)
	}
	m := nats.NewMsg(j.Subject())
	m.Data = b
	m.Header.Set(HeaderWebhookID, j.WebhookID)
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
