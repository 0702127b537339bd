package natsx

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Handler processes one message and must ack, nak or term it. The context
// it gets is not cancelled when the consumer stops: work in flight runs to
// its own timeouts, so a stop never leaves a half-done delivery behind.
type Handler func(ctx context.Context, msg jetstream.Msg)

// Consume pulls messages from c and runs handle on up to workers of them at
// once, until ctx ends. Then it stops pulling, hands back (naks) the
// messages buffered but not started, so they are redelivered at once to
// whoever runs next, and waits for the handlers in flight.
func Consume(ctx context.Context, c jetstream.Consumer, workers int, handle Handler, log *slog.Logger) error {
	it, err := c.Messages(jetstream.PullMaxMessages(workers))
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()

	work := context.WithoutCancel(ctx)
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("pull failed; retrying", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if ctx.Err() != nil {
			_ = msg.Nak()
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			handle(work, msg)
		}()
	}
}
