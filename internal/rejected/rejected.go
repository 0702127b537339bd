// Package rejected reads the REJECTED stream: events fan-out refused, each
// kept as the scanner sent it (rejected.<tenant>) with the reason in
// headers (events.HeaderRejectReason and the others; fan-out writes them,
// services/fanout rejectedCopy). The API and the CLI list them through
// Store, scoped to a tenant as the DLQ is.
package rejected

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/events"
)

// MaxBody is how much of a rejected event's body an Entry shows: enough to
// recognise the event, little enough that a list of them stays readable.
const MaxBody = 256

// Entry is one rejected event as listed.
type Entry struct {
	// Seq is its sequence in REJECTED.
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Tenant string    `json:"tenant"`
	// Code is the rejection's label (events.RejectReason): "invalid",
	// "bad_subject", "undecodable", "callback_url_refused".
	Code string `json:"code"`
	// Reason says what is wrong, for a person.
	Reason string `json:"reason"`
	// OriginalSubject and OriginalSeq say where the event was published
	// and where it stays in SCAN_EVENTS for that stream's retention.
	OriginalSubject string `json:"original_subject"`
	OriginalSeq     uint64 `json:"original_seq,omitempty"`
	// EventID is the CloudEvent id, when the event carried one.
	EventID string `json:"event_id,omitempty"`
	// Omitted says what of the original the copy leaves out, if anything.
	Omitted string `json:"omitted,omitempty"`
	// Body is the start of the event's body (at most MaxBody bytes of it)
	// as text: bytes that are not UTF-8 are shown as U+FFFD. BodySize is
	// the whole body's size.
	Body     string `json:"body"`
	BodySize int    `json:"body_size"`
}

// entryOf reads a REJECTED message.
func entryOf(seq uint64, at time.Time, subject string, h nats.Header, body []byte) Entry {
	origSeq, _ := strconv.ParseUint(h.Get(events.HeaderOriginalSeq), 10, 64)
	return Entry{
		Seq:             seq,
		Time:            at.UTC(),
		Tenant:          strings.TrimPrefix(subject, "rejected."),
		Code:            h.Get(events.HeaderRejectCode),
		Reason:          h.Get(events.HeaderRejectReason),
		OriginalSubject: h.Get(events.HeaderOriginalSubject),
		OriginalSeq:     origSeq,
		EventID:         eventID(h, body),
		Omitted:         h.Get(events.HeaderOmitted),
		Body:            bodyStart(body),
		BodySize:        len(body),
	}
}

// eventID finds the CloudEvent id: the ce-id header of binary mode (in
// whatever case the scanner wrote it), or the "id" of a structured-mode
// body.
func eventID(h nats.Header, body []byte) string {
	for k, v := range h {
		if strings.EqualFold(k, "ce-id") && len(v) > 0 {
			return v[0]
		}
	}
	for k, v := range h {
		if strings.EqualFold(k, "content-type") && len(v) > 0 && strings.HasPrefix(strings.ToLower(v[0]), "application/cloudevents+json") {
			var doc struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(body, &doc) == nil {
				return doc.ID
			}
		}
	}
	return ""
}

// bodyStart returns the first MaxBody bytes of body as valid UTF-8: a
// character cut in two at the end is dropped, and other bytes that are not
// UTF-8 become U+FFFD.
func bodyStart(body []byte) string {
	if len(body) > MaxBody {
		body = body[:MaxBody]
		// Drop a last character that the cut left incomplete.
		for i := len(body) - 1; i >= 0 && i >= len(body)-utf8.UTFMax; i-- {
			if utf8.RuneStart(body[i]) {
				if !utf8.FullRune(body[i:]) {
					body = body[:i]
				}
				break
			}
		}
	}
	return strings.ToValidUTF8(string(body), "\uFFFD")
}
