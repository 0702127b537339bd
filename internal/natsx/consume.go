package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Handler processes one message and says what becomes of it. It never
// acks, naks or terms the message: Consume settles it from the Outcome
// (see settle), the one place where that happens.
//
// ctx is not cancelled when the consumer stops (work in flight runs to its
// end, so a stop never leaves a half-done delivery behind), but it has a
// deadline a little before the consumer's AckWait would hand the message
// to another worker: every wait in the handler must honour it.
type Handler func(ctx context.Context, msg jetstream.Msg) Outcome

// Options tune Consume.
type Options struct {
	// Workers is how many messages are handled at once.
	Workers int
	// JS stores the copies that Retry and Reject outcomes carry.
	JS  jetstream.JetStream
	Log *slog.Logger
	// Settled, when set, is told of each message once it is settled, with
	// the settle's own error (nil when the outcome took effect): services
	// count their outcomes here.
	Settled func(ctx context.Context, msg jetstream.Msg, o Outcome, err error)
	// Writes, when set, is told whether each copy was stored (readiness).
	Writes *Writes
	// FetchWait bounds one pull request (default fetchWait): how long a
	// stop may wait for the pull in flight, and how often an idle consumer
	// asks again.
	FetchWait time.Duration
}

// fetchWait bounds one pull request. A stop waits for the pull in flight to
// end (see Consume), so it is also how long a stop can take to stop pulling;
// idle, a consumer sends four pull requests a second.
const fetchWait = 250 * time.Millisecond

// defaultAckWait is the server's AckWait when a consumer sets none.
const defaultAckWait = 30 * time.Second

// Consume pulls messages from c and runs handle on up to opts.Workers of
// them at once, until ctx ends. Then it stops pulling, hands back any
// message that arrives before the last pull ends (redelivered a moment
// later, to whoever runs then), and waits for the handlers in flight.
//
// It pulls with bounded Fetch requests for exactly as many messages as
// there are idle workers, rather than a continuous Messages stream, on
// purpose. A message never waits in a client buffer while its AckWait runs
// out. And a Fetch is read to its end: a pull request cannot be withdrawn
// from the server, so a client that stopped reading one (a cancelled
// Fetch, a stopped stream) leaves what the server sends into it to wait out
// the whole AckWait. Read to its end, every message pulled is handled or
// handed back at once; the price is that a stop waits up to fetchWait.
func Consume(ctx context.Context, c jetstream.Consumer, handle Handler, opts Options) error {
	l := &loop{js: opts.JS, log: opts.Log, settled: opts.Settled, writes: opts.Writes, ackWait: defaultAckWait}
	wait := opts.FetchWait
	if wait <= 0 {
		wait = fetchWait
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if info := c.CachedInfo(); info != nil && info.Config.AckWait > 0 {
		l.ackWait = info.Config.AckWait
	}
	work := context.WithoutCancel(ctx)
	sem := make(chan struct{}, max(1, opts.Workers))
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		// Ask for as many messages as there are idle workers, at least one
		// (waiting for a worker to free up first).
		sem <- struct{}{}
		free := 1 + cap(sem) - len(sem)
		<-sem
		batch, err := c.Fetch(free, jetstream.FetchMaxWait(wait))
		if err != nil {
			if ctx.Err() == nil {
				l.log.Warn("pull failed; retrying", "err", err)
				sleep(ctx, 250*time.Millisecond)
			}
			continue
		}
		for msg := range batch.Messages() {
			received := time.Now()
			if ctx.Err() != nil {
				// Not a plain nak: the server would hand the message
				// straight back into this same pull, round and round until
				// it ends. The delay outlasts the pull.
				l.settle(work, msg, DeferFor(2*wait, reasonStopping))
				continue
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				l.run(work, msg, received, handle)
			}()
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			l.log.Debug("pull ended early", "err", err)
		}
	}
	return nil
}

// loop is one Consume's settle state.
type loop struct {
	js      jetstream.JetStream
	log     *slog.Logger
	settled func(context.Context, jetstream.Msg, Outcome, error)
	writes  *Writes
	ackWait time.Duration
}

// margin is what a handler's deadline leaves of AckWait for the settle to
// reach the server.
func (l *loop) margin() time.Duration {
	return min(max(l.ackWait/10, 50*time.Millisecond), 5*time.Second)
}

// run handles one message under a deadline derived from AckWait (counted
// from when the message arrived) and settles the outcome.
func (l *loop) run(ctx context.Context, msg jetstream.Msg, received time.Time, handle Handler) {
	hctx, cancel := context.WithDeadline(ctx, received.Add(l.ackWait-l.margin()))
	o := handle(hctx, msg)
	cancel()
	l.settle(ctx, msg, o)
}

// settle is the one place a message is acked, naked or terminated. A copy
// that must be stored first (a scheduled retry, a dead letter, a rejected
// event) is stored after msg.InProgress, so the store gets a whole AckWait
// however long the handler took. A failure to settle is logged and
// reported to Settled: the message is then redelivered by the server after
// AckWait (or at once, for a failed nak), never lost.
func (l *loop) settle(ctx context.Context, msg jetstream.Msg, o Outcome) {
	err := l.apply(ctx, msg, o)
	if err != nil {
		attrs := []any{"subject", msg.Subject(), "verdict", o.verdict.String(), "reason", o.label(), "err", err}
		if o.err != nil {
			attrs = append(attrs, "cause", o.err)
		}
		l.log.WarnContext(ctx, "could not settle message; the server will redeliver it", attrs...)
	}
	if l.settled != nil {
		l.settled(ctx, msg, o, err)
	}
}

func (l *loop) apply(ctx context.Context, msg jetstream.Msg, o Outcome) error {
	switch o.verdict {
	case Done:
		return l.ack(ctx, msg)
	case Defer:
		return msg.NakWithDelay(o.delay)
	case Fail:
		return msg.NakWithDelay(backoff(msg))
	case Retry:
		if o.copy == nil {
			return msg.NakWithDelay(o.delay)
		}
		if err := l.store(ctx, msg, o); err != nil {
			// The try is made again under the same attempt number.
			return errors.Join(err, msg.NakWithDelay(o.delay))
		}
		return l.ack(ctx, msg)
	case Reject:
		if o.copy != nil {
			if err := l.store(ctx, msg, o); err != nil {
				return errors.Join(err, msg.NakWithDelay(backoff(msg)))
			}
		}
		return msg.TermWithReason(o.label())
	}
	return fmt.Errorf("unknown verdict %d", int(o.verdict))
}

// store publishes the outcome's copy, once the server has restarted the
// message's AckWait.
func (l *loop) store(ctx context.Context, msg jetstream.Msg, o Outcome) error {
	if l.js == nil {
		return fmt.Errorf("no JetStream to store %s with", o.copy.Subject)
	}
	_ = msg.InProgress() // best effort: without it the store still has the margin
	sctx, cancel := context.WithTimeout(ctx, l.ackWait-l.margin())
	defer cancel()
	_, err := l.js.PublishMsg(sctx, o.copy, o.opts...)
	l.writes.Observe(err) // ctx is the loop's work context: a stop does not end it
	if err != nil {
		return fmt.Errorf("store %s: %w", o.copy.Subject, err)
	}
	return nil
}

// ack acks msg and waits for the server to confirm it, asking again while
// the confirmation does not come (acks are idempotent), for up to an
// AckWait: an ack lost on a busy connection would otherwise bring the
// message back to a second worker. A failure is returned, and logged by
// settle, rather than discovered as a redelivery.
func (l *loop) ack(ctx context.Context, msg jetstream.Msg) error {
	deadline := time.Now().Add(l.ackWait)
	for {
		actx, cancel := context.WithTimeout(ctx, max(l.margin(), 2*time.Second))
		err := msg.DoubleAck(actx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return nil
		}
		timedOut := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if !timedOut || time.Now().After(deadline) {
			return err
		}
	}
}

// backoff is how long a message waits after our own failure: 2s, 4s, 8s,
// 16s, then 30s, growing with its deliveries so that an outage is not a
// hot loop.
func backoff(msg jetstream.Msg) time.Duration {
	n := uint64(1)
	if meta, err := msg.Metadata(); err == nil {
		n = meta.NumDelivered
	}
	return min(time.Duration(1<<min(n, 5))*time.Second, 30*time.Second)
}

// loopReason names why the loop itself settled a message.
type loopReason string

const reasonStopping loopReason = "consumer_stopping"

func (r loopReason) String() string { return string(r) }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Bind creates or updates a durable consumer and returns it. A cluster
// that cannot answer for the moment (no leader, no quorum, a stream whose
// replicas are moving) is waited for, trying again every second until ctx
// ends: a service must come up once its cluster does, not fail for having
// started first.
func Bind(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, log *slog.Logger) (jetstream.Consumer, error) {
	for logged := false; ; logged = true {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := js.CreateOrUpdateConsumer(actx, stream, cfg)
		cancel()
		if err == nil || ctx.Err() != nil || (!NotReady(err) && !TooFewServers(err)) {
			return c, err
		}
		if !logged {
			log.Warn("consumer not bound yet; trying again", "stream", stream, "consumer", cfg.Durable, "err", err)
		}
		sleep(ctx, time.Second)
	}
}
