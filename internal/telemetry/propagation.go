package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
)

// Propagator moves trace context across NATS and HTTP: W3C trace context.
// One trace runs from the scanner's publish through fan-out (a span per
// event, a producer span per job) to every delivery attempt and the
// receiver:
//
//   - a scanner sends traceparent as a NATS header (or only as the
//     CloudEvents extension, ce-traceparent: Extract falls back to it);
//   - fan-out extracts it, and injects its own producer span into each
//     job's headers (Inject);
//   - delivery extracts the job's context; a scheduled retry carries the
//     job's headers over (CopyTrace), so every attempt is a sibling in the
//     same trace;
//   - the HTTP client (otelhttp with this propagator) sends traceparent to
//     the receiver.
var Propagator = propagation.TraceContext{}

// traceHeaders are the headers that carry trace context.
var traceHeaders = []string{"traceparent", "tracestate"}

// HeaderCarrier carries trace context in NATS headers. It keeps keys as
// given ("traceparent"): nats.Header is case-sensitive, and the HTTP
// carrier would canonicalise the key to "Traceparent", which the next hop
// would not find.
type HeaderCarrier map[string][]string

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces the values of key.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the keys.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the span context of ctx into NATS message headers.
func Inject(ctx context.Context, header map[string][]string) {
	Propagator.Inject(ctx, HeaderCarrier(header))
}

// Extract returns ctx with the remote span context of a NATS message: from
// its traceparent header, or else from the CloudEvents distributed-tracing
// extension in binary mode (a scanner that sets only ce-traceparent is
// followed too).
func Extract(ctx context.Context, header map[string][]string) context.Context {
	c := HeaderCarrier(header)
	if c.Get("traceparent") == "" && c.Get("ce-traceparent") != "" {
		c = HeaderCarrier{"traceparent": header["ce-traceparent"], "tracestate": header["ce-tracestate"]}
	}
	return Propagator.Extract(ctx, c)
}

// CopyTrace copies the trace context headers of one message to another.
func CopyTrace(from, to map[string][]string) {
	for _, k := range traceHeaders {
		if v := HeaderCarrier(from).Get(k); v != "" {
			HeaderCarrier(to).Set(k, v)
		}
	}
}
