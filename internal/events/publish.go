package events

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/telemetry"
)

// Publish stores e in SCAN_EVENTS on subject, in binary mode, with the
// event's Key (tenant, source, id) as the dedupe id: a scanner that retries
// a publish it is unsure of creates one event, not two, and another
// tenant's event with the same id is not mistaken for a copy. It does not validate: call Validate first.
//
// When ctx carries a span, Publish starts a producer span under it (with
// the same tracer provider) and sends its context twice: in the NATS
// traceparent header and in the CloudEvents distributed-tracing extension
// of e, which it sets.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, e *event.Event, opts ...PublishOption) (*jetstream.PubAck, error) {
	var cfg publishConfig
	for _, o := range opts {
		o(&cfg)
	}
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer("github.com/scanwire/scanwire")
	ctx, span := tracer.Start(ctx, "publish "+e.Type(), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", subject),
		attribute.String("scanwire.tenant", Tenant(e)), attribute.String("scanwire.scan_id", e.Subject()),
		attribute.String("scanwire.event_type", e.Type()), attribute.String("scanwire.event_id", e.ID())))
	defer span.End()
	injectTrace(ctx, e)
	m, err := toStoredMsg(ctx, subject, e)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	telemetry.Inject(ctx, m.Header)
	ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(cfg.dedupeID(e)), jetstream.WithExpectStream(natsx.StreamScanEvents))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, fmt.Errorf("publish %s to %s: %w", e.ID(), subject, err)
	}
	return ack, nil
}

// injectTrace sets the CloudEvents distributed-tracing extension
// (traceparent, tracestate) of e from the span in ctx, if there is one.
func injectTrace(ctx context.Context, e *event.Event) {
	c := propagation.MapCarrier{}
	telemetry.Propagator.Inject(ctx, c)
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := c.Get(k); v != "" {
			e.SetExtension(k, v)
		}
	}
}

// PublishOption changes how Publish publishes.
type PublishOption func(*publishConfig)

type publishConfig struct{ secret []byte }

// DedupeSecret makes the dedupe id of a publish a keyed hash of the event's
// Key under secret (the publisher's API key), instead of the Key itself.
// SCAN_EVENTS dedupes in one namespace for every publisher, and a Key can
// be worked out by anyone who knows the tenant, source and id: a hostile
// tenant publishing to NATS with another tenant's Key as its Nats-Msg-Id
// would have that tenant's event dropped as a copy. A keyed hash it cannot
// work out; the same publisher retrying still gets one event.
func DedupeSecret(secret []byte) PublishOption {
	return func(c *publishConfig) { c.secret = secret }
}

func (c publishConfig) dedupeID(e *event.Event) string {
	if len(c.secret) == 0 {
		return KeyOf(e)
	}
	mac := hmac.New(sha256.New, c.secret)
	mac.Write([]byte(KeyOf(e)))
	return "evh_" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(mac.Sum(nil)[:16])
}
