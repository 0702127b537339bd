package natsx

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Watch follows every key of kv until ctx ends: apply gets each value as it
// is now and then each change; ready is called once, after the values that
// existed when the watch began. It is what the services' caches run on.
//
// The watch survives the cluster: nats.go's ordered consumer under it
// follows a reconnection and a leader change on its own; should its
// updates end all the same (the consumer lost for good), the watch starts
// again, apply getting every key's current value once more (a cache takes
// them as the changes they are), until ctx ends. Only the first watch
// failing to start is an error.
func Watch(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry), ready func()) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	for {
		follow(ctx, w, apply, &ready)
		_ = w.Stop()
		for ctx.Err() == nil {
			sleep(ctx, time.Second)
			if w, err = kv.WatchAll(ctx); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// follow applies w's updates until they end or ctx does; ready, once the
// initial values are in, is called and cleared.
func follow(ctx context.Context, w jetstream.KeyWatcher, apply func(jetstream.KeyValueEntry), ready *func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return
			case e == nil: // the initial values are all in
				if *ready != nil {
					(*ready)()
					*ready = nil
				}
			default:
				apply(e)
			}
		}
	}
}
