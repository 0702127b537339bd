package natsx

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Verdict is what becomes of a message: the settle action an Outcome asks
// Consume for.
type Verdict int

const (
	// Done: the work is finished; the message is acked.
	Done Verdict = iota
	// Retry: the work failed and is tried again after a delay. With a copy
	// (the next attempt, as a scheduled message) the copy is stored and the
	// message acked; without one, the message is naked with the delay.
	Retry
	// Defer: the work was not attempted (a busy endpoint, a shutdown); the
	// message is naked with the delay and no attempt is spent.
	Defer
	// Reject: the message can never be processed (an invalid event, a job
	// given up on). Its copy is stored (REJECTED, DLQ), then the message is
	// terminated: never handed out again (on a work queue, deleted),
	// hence the copy first.
	Reject
	// Fail: our own failure (NATS unavailable, a store conflict), not the
	// message's. It is naked with a backoff that grows with its deliveries.
	Fail
)

func (v Verdict) String() string {
	switch v {
	case Done:
		return "done"
	case Retry:
		return "retry"
	case Defer:
		return "defer"
	case Reject:
		return "reject"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Outcome is a handler's answer: the verdict, and what settling it needs.
// Build one with Finished, RetryAfter, DeferFor, RejectAs or Failed.
type Outcome struct {
	verdict Verdict
	delay   time.Duration
	reason  fmt.Stringer
	err     error
	copy    *nats.Msg
	opts    []jetstream.PublishOpt
}

// Finished is the outcome of finished work: the message is acked.
func Finished() Outcome { return Outcome{verdict: Done} }

// RetryAfter asks for another try after d. next, when set, is the next try
// stored as a message of its own (published with opts, typically a
// schedule) before the message is acked; if it cannot be stored the
// message is naked with d instead, so the try is made again either way.
func RetryAfter(d time.Duration, reason fmt.Stringer, err error, next *nats.Msg, opts ...jetstream.PublishOpt) Outcome {
	return Outcome{verdict: Retry, delay: d, reason: reason, err: err, copy: next, opts: opts}
}

// DeferFor hands the message back for d without spending an attempt.
func DeferFor(d time.Duration, reason fmt.Stringer) Outcome {
	return Outcome{verdict: Defer, delay: d, reason: reason}
}

// RejectAs gives up on the message for reason: copy (its record in
// REJECTED or DLQ) is stored first, then the message is terminated. If the
// copy cannot be stored the message is kept and retried as a Fail.
func RejectAs(reason fmt.Stringer, err error, copy *nats.Msg) Outcome {
	return Outcome{verdict: Reject, reason: reason, err: err, copy: copy}
}

// Failed reports our own failure: the message comes back after a backoff.
func Failed(reason fmt.Stringer, err error) Outcome {
	return Outcome{verdict: Fail, reason: reason, err: err}
}

// Verdict is what the handler asked for.
func (o Outcome) Verdict() Verdict { return o.verdict }

// Reason names why the message was retried, deferred, rejected or failed
// (nil for Done): a typed value whose String is a stable label for metrics
// and logs.
func (o Outcome) Reason() fmt.Stringer { return o.reason }

// String shows the outcome for logs and test failures: "reject
// (retries_exhausted): HTTP 502".
func (o Outcome) String() string {
	s := o.verdict.String()
	if o.reason != nil {
		s += " (" + o.reason.String() + ")"
	}
	if o.err != nil {
		s += ": " + o.err.Error()
	}
	return s
}

// label is the reason's label, or the verdict's when there is none.
func (o Outcome) label() string {
	if o.reason != nil {
		return o.reason.String()
	}
	return o.verdict.String()
}
