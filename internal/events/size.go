package events

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/natsx"
)

// MaxEventSize is the largest event accepted, counted over the whole event
// as its receivers get it: the structured JSON encoding (Structured) of its
// attributes, extensions and data together. Fan-out stores that encoding in
// every job, so an event within the limit always makes a job DELIVERIES
// takes (natsx.MaxMsgSize leaves room for the job's own fields). `scanwire
// publish`, POST /v1/events and fan-out all check it, in Validate, with the
// same message.
const MaxEventSize = 256 << 10

// size checks the whole event against MaxEventSize. It reports false when
// the event is too large, so the other checks can skip work on it.
func (v *validator) size(e *event.Event) bool {
	n := len(e.Data())
	if n <= MaxEventSize {
		b, err := Structured(e)
		if err != nil {
			return true // data that is not JSON: the data check says so
		}
		n, v.structured = len(b), b
	}
	if n <= MaxEventSize {
		return true
	}
	v.tooLarge = true
	v.add("event", "is %d bytes as structured JSON (attributes, extensions and data together); the limit is %d bytes: trim evidence or link to it", n, MaxEventSize)
	return false
}

// headerBudget is how many bytes of attributes Publish sends as NATS
// headers (binary mode). JetStream refuses a message whose headers exceed
// 64 KiB (natsx.MaxHeaderSize), while an event may carry larger
// extensions within MaxEventSize: such an event is stored in structured
// mode instead, which fan-out reads as well.
const headerBudget = 32 << 10

// toStoredMsg is e as Publish stores it: binary mode, or structured mode
// when its attributes would not fit in NATS headers.
func toStoredMsg(ctx context.Context, subject string, e *event.Event) (*nats.Msg, error) {
	m, err := ToMsg(ctx, subject, e)
	if err != nil || natsx.HeaderSize(m.Header) <= headerBudget {
		return m, err
	}
	b, err := Structured(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID(), err)
	}
	m = nats.NewMsg(subject)
	m.Header.Set(headerContentType, event.ApplicationCloudEventsJSON)
	m.Data = b
	return m, nil
}
