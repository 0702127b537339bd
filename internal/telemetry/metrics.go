package telemetry

import (
	"go.opentelemetry.io/otel/metric"
)

// Metrics are the instruments the services record into. Names follow
// OpenTelemetry's conventions; the Prometheus exporter turns
// "scanwire.deliveries" into scanwire_deliveries_total.
type Metrics struct {
	meter metric.Meter

	EventsAccepted   metric.Int64Counter
	EventsRejected   metric.Int64Counter
	Deliveries       metric.Int64Counter
	AttemptDuration  metric.Float64Histogram
	RetriesScheduled metric.Int64Counter
	DeadLetters      metric.Int64Counter
	Deferred         metric.Int64Counter
	LimitSuppressed  metric.Int64Counter
}

func newMetrics(m metric.Meter) (*Metrics, error) {
	x := &Metrics{meter: m}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = m.Int64Counter(name, metric.WithDescription(desc))
		return c
	}
	x.EventsAccepted = counter("scanwire.events.accepted", "events that passed validation in fan-out")
	x.EventsRejected = counter("scanwire.events.rejected", "events stored in REJECTED, by reason (bad_subject, undecodable, invalid, callback_url_refused)")
	x.Deliveries = counter("scanwire.deliveries", "delivery attempts by outcome (delivered, retry, dead-lettered) and profile")
	x.RetriesScheduled = counter("scanwire.retries.scheduled", "retries scheduled after a failed attempt")
	x.DeadLetters = counter("scanwire.dead_letters", "jobs dead-lettered, by reason (retries_exhausted, gone, egress_blocked, subscription_deleted, ...)")
	x.Deferred = counter("scanwire.deliveries.deferred", "jobs deferred without an attempt, by reason (endpoint_slow, tenant_share, endpoint_congested)")
	x.LimitSuppressed = counter("scanwire.limit.suppressed", "finding deliveries suppressed by per-scan limits, by subscription")
	if err != nil {
		return nil, err
	}
	x.AttemptDuration, err = m.Float64Histogram("scanwire.attempt.duration", metric.WithUnit("s"),
		metric.WithDescription("duration of one webhook attempt"),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30))
	return x, err
}
