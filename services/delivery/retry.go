package delivery

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
)

// conclude records an attempt and decides the job's fate from its result:
// delivered, retried after the schedule's next delay, or dead-lettered.
func (d *Delivery) conclude(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, sub *subscriptions.Subscription,
	job *jobs.Job, attempt int, res result) natsx.Outcome {
	rec := attempts.Attempt{
		Time: time.Now().UTC(), Tenant: job.Tenant, SubscriptionID: job.SubscriptionID, WebhookID: job.WebhookID,
		EventID: job.EventID, EventType: job.EventType, Attempt: attempt, Status: res.status, Error: res.errString(),
		LatencyMS: float64(res.latency.Microseconds()) / 1000, Response: string(res.body),
	}
	if res.ok() {
		d.log.DebugContext(ctx, "delivered", "webhook_id", job.WebhookID, "subscription_id", job.SubscriptionID,
			"attempt", attempt, "status", res.status, "latency", res.latency.Round(100*time.Microsecond))
		d.record(ctx, rec, attempts.OutcomeDelivered, sub, res)
		d.health.succeeded(ctx, sub)
		return natsx.Finished()
	}
	if res.status == http.StatusGone {
		d.health.gone(ctx, sub)
	} else {
		d.health.failed(ctx, sub)
	}
	if delay, ok := nextDelay(sub, attempt, res); ok {
		attrs := []any{"webhook_id", job.WebhookID, "subscription_id", job.SubscriptionID,
			"attempt", attempt, "status", res.status, "retry_in", delay.Round(time.Millisecond)}
		if res.err != nil { // an answer with a status has none
			attrs = append(attrs, "err", res.err)
		}
		d.log.WarnContext(ctx, "attempt failed; will retry", attrs...)
		rec.RetryIn = delay.String()
		d.record(ctx, rec, attempts.OutcomeRetry, sub, res)
		d.tel.Metrics.RetriesScheduled.Add(ctx, 1)
		return d.retryLater(msg, meta, job, attempt, delay, res)
	}
	d.record(ctx, rec, attempts.OutcomeDead, sub, res)
	dl := &dlq.DeadLetter{Job: *job, Code: dlq.ReasonRetriesExhausted, LastStatus: res.status, LastError: res.errString(), Attempts: attempt,
		Reason: fmt.Sprintf("retries exhausted after %d attempts: %s", attempt, res.describe())}
	if res.permanent {
		dl.Code, dl.Reason = res.reason(), res.describe()
	}
	return d.deadLetter(ctx, meta, dl)
}

// nextDelay is how long the next attempt waits, if there is one: the
// schedule's delay for this attempt (with ±10% jitter where the profile
// asks for it), or the receiver's Retry-After.
func nextDelay(sub *subscriptions.Subscription, attempt int, res result) (time.Duration, bool) {
	schedule, jitter := sub.Schedule()
	if res.permanent || attempt > len(schedule) {
		return 0, false
	}
	delay := schedule[attempt-1]
	if jitter {
		delay += time.Duration(rand.Int64N(int64(delay)/5+1)) - delay/10
	}
	if res.retryAfter > 0 {
		delay = res.retryAfter
	}
	return delay, true
}

// record writes the attempt log entry and the attempt's metrics.
func (d *Delivery) record(ctx context.Context, rec attempts.Attempt, outcome string, sub *subscriptions.Subscription, res result) {
	rec.Outcome = outcome
	d.attempts.Record(rec)
	attrs := metric.WithAttributes(attribute.String("outcome", outcome), attribute.String("profile", sub.Profile))
	d.tel.Metrics.Deliveries.Add(ctx, 1, attrs)
	d.tel.Metrics.AttemptDuration.Record(ctx, res.latency.Seconds(), attrs)
}

// retryLater answers a failed attempt with the next one, stored as a
// scheduled message due after delay; the consume loop stores it and then
// acks this one. Waiting retries are messages in the stream, not
// unacknowledged deliveries, so thousands of them do not fill the
// consumer's MaxAckPending and starve healthy endpoints. The copy is
// stored before the ack, under a dedupe id (this message's sequence): a
// crash in between cannot lose the job, and the second copy is dropped by
// the server. If the copy cannot be stored, the job is naked with the same
// delay and the attempt is made again under the same number.
func (d *Delivery) retryLater(msg jetstream.Msg, meta *jetstream.MsgMetadata, job *jobs.Job, attempt int, delay time.Duration, res result) natsx.Outcome {
	next := *job
	next.Attempt = attempt
	m, opts, err := scheduledCopy(msg, meta, &next, delay)
	if err != nil {
		return natsx.RetryAfter(delay, retryFailed, err, nil)
	}
	return natsx.RetryAfter(delay, retryFailed, res.err, m, opts...)
}

// scheduledCopy is job as a scheduled message due after delay: stored on
// jobs.RetrySubject (outside the delivery consumer's filter) under the
// number of attempts job has made, and moved by the server to the job's
// copy subject (jobs.Job.CopySubject) when its time comes. It keeps msg's trace context:
// the next attempt is a sibling of this one, in the same trace.
//
// Its dedupe id is keyed on msg's stream sequence, not just the webhook id
// and attempt: a replayed job lives its schedule again and its copies must
// not be dropped as copies of its first life's, while a copy stored again
// for the same msg (its ack was lost, and it came back) is dropped.
func scheduledCopy(msg jetstream.Msg, meta *jetstream.MsgMetadata, job *jobs.Job, delay time.Duration) (*nats.Msg, []jetstream.PublishOpt, error) {
	m, err := job.Msg()
	if err != nil {
		return nil, nil, err
	}
	telemetry.CopyTrace(msg.Headers(), m.Header)
	target := job.CopySubject() // outside the record of the job's scope (jobs.ScopeFilter)
	m.Subject = jobs.RetrySubject(job.WebhookID, job.Attempt)
	m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s.%d", m.Subject, meta.Sequence.Stream))
	// Schedules have one-second resolution: round up, never early.
	at := time.Now().Add(delay + time.Second - 1).Truncate(time.Second)
	return m, []jetstream.PublishOpt{jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(target)}, nil
}

// deadLetter gives up on a job: the consume loop stores dl in the DLQ and
// then terminates the job. The order matters: once terminated, the job is
// never handed out again (and on a work queue, as DELIVERIES was, it is
// deleted), so it must be safe in the DLQ first. If the DLQ write fails the
// job is kept and tried again later.
func (d *Delivery) deadLetter(ctx context.Context, meta *jetstream.MsgMetadata, dl *dlq.DeadLetter) natsx.Outcome {
	dl.DeadAt = time.Now().UTC()
	m, err := dl.Msg(meta.Sequence.Stream)
	if err != nil {
		return natsx.Failed(failEncode, err)
	}
	d.log.WarnContext(ctx, "dead-lettering", "webhook_id", dl.Job.WebhookID, "subscription_id", dl.Job.SubscriptionID,
		"tenant", dl.Job.Tenant, "code", dl.Code.String(), "reason", dl.Reason, "last_status", dl.LastStatus)
	return natsx.RejectAs(dl.Code, nil, m)
}

// settled counts what became of each job once the consume loop has
// settled it: dead letters and deferrals, by reason.
func (d *Delivery) settled(ctx context.Context, _ jetstream.Msg, o natsx.Outcome, err error) {
	if err != nil {
		return
	}
	if r, ok := o.Reason().(deferReason); ok {
		d.tel.Metrics.Deferred.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", r.String())))
	}
	if o.Verdict() == natsx.Reject {
		d.tel.Metrics.DeadLetters.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", o.Reason().String())))
	}
}

// outcomeReason names why a job is retried, deferred or failed (dead
// letters are named by dlq.Reason).
type outcomeReason string

const (
	retryFailed        outcomeReason = "attempt_failed"              // the attempt failed; the next is scheduled
	failMetadata       outcomeReason = "metadata_unreadable"         // the message has no JetStream metadata
	failCallbackSecret outcomeReason = "callback_secret_unavailable" // the tenant's signing secret could not be read
	failStore          outcomeReason = "store_unavailable"           // the subscription store could not be read
	failEncode         outcomeReason = "encode_failed"               // the dead letter could not be encoded
)

func (r outcomeReason) String() string { return string(r) }
