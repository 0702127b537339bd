package events

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
)

// Publish stores e in SCAN_EVENTS on subject, in binary mode, with the
// event id as the dedupe id: a scanner that retries a publish it is unsure
// of creates one event, not two. It does not validate: call Validate first.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, e *event.Event) (*jetstream.PubAck, error) {
	m, err := ToMsg(ctx, subject, e)
	if err != nil {
		return nil, err
	}
	ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(e.ID()), jetstream.WithExpectStream("SCAN_EVENTS"))
	if err != nil {
		return nil, fmt.Errorf("publish %s to %s: %w", e.ID(), subject, err)
	}
	return ack, nil
}
