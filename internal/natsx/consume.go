package natsx

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Handler processes one message and must ack, nak or term it. The context
// it gets is not cancelled when the consumer stops: work in flight runs to
// its own timeouts, so a stop never leaves a half-done delivery behind.
type Handler func(ctx context.Context, msg jetstream.Msg)

// fetchWait bounds one pull request. A stop waits for the pull in flight to
// end, so this is also how long a stop can take to stop pulling.
const fetchWait = time.Second

// Consume pulls messages from c and runs handle on up to workers of them at
// once, until ctx ends. Then it stops pulling, hands back any message that
// arrives before the last pull ends (redelivered two seconds later, to
// whoever runs then), and waits for the handlers in flight.
//
// It pulls with bounded Fetch requests rather than a continuous Messages
// stream on purpose: a stream's open pull request outlives an unsubscribe,
// and whatever the server sends into it after that waits out the whole
// AckWait before anyone sees it again. A Fetch is read to its end, so every
// message pulled is either handled or handed back at once.
func Consume(ctx context.Context, c jetstream.Consumer, workers int, handle Handler, log *slog.Logger) error {
	work := context.WithoutCancel(ctx)
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		// Ask for as many messages as there are idle workers, at least one
		// (waiting for a worker to free up first).
		sem <- struct{}{}
		free := 1 + cap(sem) - len(sem)
		<-sem
		batch, err := c.Fetch(free, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("pull failed; retrying", "err", err)
				sleep(ctx, 250*time.Millisecond)
			}
			continue
		}
		for msg := range batch.Messages() {
			if ctx.Err() != nil {
				// Not a plain Nak: the server would hand the message
				// straight back into this same pull, round and round until
				// it ends. The delay outlasts the pull.
				_ = msg.NakWithDelay(2 * fetchWait)
				continue
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				handle(work, msg)
			}()
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil && err != context.DeadlineExceeded {
			log.Debug("pull ended early", "err", err)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
