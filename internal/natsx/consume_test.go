package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testJS starts an embedded server with a work-queue stream "WORK"
// (subject work.>) and a limits stream "COPIES" (copies.>).
func testJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	ns, err := StartServer(ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, log)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := Connect(ns.ClientURL(), "test", ns, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); ns.Shutdown(); ns.WaitForShutdown() })
	js, err := JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "WORK", Subjects: []string{"work.>"}, Retention: jetstream.WorkQueuePolicy},
		{Name: "COPIES", Subjects: []string{"copies.>"}},
	} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	return js
}

type reasonForTest string

func (r reasonForTest) String() string { return string(r) }

// consumeOne publishes one message to WORK, consumes it with handle until
// stop is closed (or the test's deadline), and returns the consumer.
func consumeOne(t *testing.T, js jetstream.JetStream, ackWait time.Duration, handle Handler, settled func(Outcome, error)) (jetstream.Consumer, context.CancelFunc) {
	t.Helper()
	ctx := context.Background()
	c, err := js.CreateConsumer(ctx, "WORK", jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "work.1", []byte("job")); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = Consume(cctx, c, handle, Options{Workers: 4, JS: js, Log: slog.New(slog.DiscardHandler),
			Settled: func(_ context.Context, _ jetstream.Msg, o Outcome, err error) {
				if settled != nil {
					settled(o, err)
				}
			}})
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return c, stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestSettleFinishedAcks(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	var settled atomic.Int32
	consumeOne(t, js, 5*time.Second, func(context.Context, jetstream.Msg) Outcome { return Finished() },
		func(o Outcome, err error) {
			if err == nil && o.Verdict() == Done {
				settled.Add(1)
			}
		})
	// The job leaves the queue when the server takes the ack; the hook runs
	// once the client has its confirmation, a moment later.
	waitFor(t, "the job to leave the work queue and be settled", func() bool {
		return streamMsgs(t, js, "WORK") == 0 && settled.Load() > 0
	})
	if settled.Load() != 1 {
		t.Errorf("settled %d times, want once", settled.Load())
	}
}

func TestSettleRetryStoresTheNextTryThenAcks(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	var calls atomic.Int32
	consumeOne(t, js, 5*time.Second, func(context.Context, jetstream.Msg) Outcome {
		calls.Add(1)
		return RetryAfter(time.Hour, reasonForTest("attempt_failed"), errors.New("HTTP 503"), nats.NewMsg("copies.next"))
	}, nil)
	waitFor(t, "the next try stored and the job acked", func() bool {
		return streamMsgs(t, js, "COPIES") == 1 && streamMsgs(t, js, "WORK") == 0
	})
	if calls.Load() != 1 {
		t.Errorf("handled %d times, want once", calls.Load())
	}
}

func TestSettleRetryWithoutStoreNaksWithTheDelay(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	var mu sync.Mutex
	var seen []time.Time
	var settleErr atomic.Value
	consumeOne(t, js, 5*time.Second, func(context.Context, jetstream.Msg) Outcome {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, time.Now())
		if len(seen) == 1 {
			// No stream takes "nowhere.>": the copy cannot be stored.
			return RetryAfter(300*time.Millisecond, reasonForTest("attempt_failed"), nil, nats.NewMsg("nowhere.next"))
		}
		return Finished()
	}, func(o Outcome, err error) {
		if err != nil {
			settleErr.Store(err)
		}
	})
	waitFor(t, "the job to come back after the nak", func() bool { return streamMsgs(t, js, "WORK") == 0 })
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("handled %d times, want twice", len(seen))
	}
	if gap := seen[1].Sub(seen[0]); gap < 300*time.Millisecond {
		t.Errorf("came back after %s, before the retry's delay", gap)
	}
	if err, _ := settleErr.Load().(error); err == nil {
		t.Error("the failed store was not reported to Settled")
	}
}

func TestSettleDeferHandsBackWithoutLosingTheMessage(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	var calls atomic.Int32
	consumeOne(t, js, 5*time.Second, func(context.Context, jetstream.Msg) Outcome {
		if calls.Add(1) == 1 {
			return DeferFor(200*time.Millisecond, reasonForTest("endpoint_congested"))
		}
		return Finished()
	}, nil)
	waitFor(t, "the deferred job to be handled again", func() bool { return streamMsgs(t, js, "WORK") == 0 })
	if calls.Load() != 2 {
		t.Errorf("handled %d times, want twice", calls.Load())
	}
}

func TestSettleRejectStoresTheCopyThenTerminates(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	var calls atomic.Int32
	var label atomic.Value
	consumeOne(t, js, 5*time.Second, func(context.Context, jetstream.Msg) Outcome {
		calls.Add(1)
		return RejectAs(reasonForTest("retries_exhausted"), nil, nats.NewMsg("copies.dead"))
	}, func(o Outcome, err error) {
		if err == nil {
			label.Store(o.Reason().String())
		}
	})
	waitFor(t, "the dead letter stored, the job gone and settled", func() bool {
		return streamMsgs(t, js, "COPIES") == 1 && streamMsgs(t, js, "WORK") == 0 && label.Load() != nil
	})
	if calls.Load() != 1 {
		t.Errorf("handled %d times, want once", calls.Load())
	}
	if got, _ := label.Load().(string); got != "retries_exhausted" {
		t.Errorf("Settled saw reason %q", got)
	}
}

func TestSettleRejectKeepsTheMessageWhenTheCopyCannotBeStored(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	var calls atomic.Int32
	consumeOne(t, js, 5*time.Second, func(context.Context, jetstream.Msg) Outcome {
		if calls.Add(1) == 1 {
			return RejectAs(reasonForTest("retries_exhausted"), nil, nats.NewMsg("nowhere.dead"))
		}
		return Finished()
	}, nil)
	// Failed's backoff is 2s for a first delivery.
	waitFor(t, "the job to come back", func() bool { return calls.Load() == 2 })
	waitFor(t, "the job to be acked", func() bool { return streamMsgs(t, js, "WORK") == 0 })
}

func TestSettleFailedComesBackAfterABackoff(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	var mu sync.Mutex
	var seen []time.Time
	consumeOne(t, js, 30*time.Second, func(context.Context, jetstream.Msg) Outcome {
		mu.Lock()
		defer mu.Unlock()
		if seen = append(seen, time.Now()); len(seen) == 1 {
			return Failed(reasonForTest("store_unavailable"), errors.New("nats: timeout"))
		}
		return Finished()
	}, nil)
	waitFor(t, "the failed job to be handled again", func() bool { return streamMsgs(t, js, "WORK") == 0 })
	mu.Lock()
	defer mu.Unlock()
	if gap := seen[1].Sub(seen[0]); gap < 2*time.Second {
		t.Errorf("came back after %s, want the 2s backoff", gap)
	}
}

// A handler's deadline ends before AckWait, so a handler that honours it
// is never raced by a second worker on the same message.
func TestHandlerDeadlineEndsBeforeAckWait(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	const ackWait = time.Second
	var calls atomic.Int32
	var budget atomic.Int64
	c, _ := consumeOne(t, js, ackWait, func(ctx context.Context, _ jetstream.Msg) Outcome {
		calls.Add(1)
		d, ok := ctx.Deadline()
		if !ok {
			return Failed(reasonForTest("no_deadline"), errors.New("no deadline"))
		}
		budget.Store(int64(time.Until(d)))
		<-ctx.Done() // a slow handler that uses its whole budget
		return Finished()
	}, nil)
	waitFor(t, "the job to be acked", func() bool { return streamMsgs(t, js, "WORK") == 0 })
	if b := time.Duration(budget.Load()); b <= 0 || b >= ackWait {
		t.Errorf("handler budget %s, want within (0, %s)", b, ackWait)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || info.NumRedelivered != 0 {
		t.Errorf("handled %d times, %d redelivered: the message outlived AckWait", calls.Load(), info.NumRedelivered)
	}
}

// A stop lets the handler in flight finish and settle, and hands back
// nothing it did not have.
func TestStopFinishesWorkInFlight(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	started := make(chan struct{})
	release := make(chan struct{})
	_, stop := consumeOne(t, js, 5*time.Second, func(ctx context.Context, _ jetstream.Msg) Outcome {
		close(started)
		<-release
		if ctx.Err() != nil {
			return Failed(reasonForTest("cancelled"), fmt.Errorf("the stop cancelled work in flight: %w", ctx.Err()))
		}
		return Finished()
	}, nil)
	<-started
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("the stop did not wait for the handler in flight")
	case <-time.After(2 * fetchWait):
	}
	close(release)
	<-stopped
	if n := streamMsgs(t, js, "WORK"); n != 0 {
		t.Errorf("%d messages left after the stop, want the one in flight acked", n)
	}
}

// lostAck is a message whose first ack confirmation never comes, as on a
// busy connection: the ack is not sent and DoubleAck times out.
type lostAck struct {
	jetstream.Msg
	calls atomic.Int32
}

func (m *lostAck) DoubleAck(ctx context.Context) error {
	if m.calls.Add(1) == 1 {
		<-ctx.Done()
		return ctx.Err()
	}
	return m.Msg.DoubleAck(ctx)
}

// An ack whose confirmation does not come is sent again, so the message
// does not come back to a second worker after AckWait.
func TestAckIsResentUntilConfirmed(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	ctx := context.Background()
	c, err := js.CreateConsumer(ctx, "WORK", jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "work.1", []byte("job")); err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg := &lostAck{Msg: <-batch.Messages()}
	l := &loop{log: slog.New(slog.DiscardHandler), ackWait: 10 * time.Second}
	if err := l.ack(ctx, msg); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if n := msg.calls.Load(); n != 2 {
		t.Errorf("DoubleAck called %d times, want 2 (the lost one and the resend)", n)
	}
	waitFor(t, "the job to leave the work queue", func() bool { return streamMsgs(t, js, "WORK") == 0 })
}
