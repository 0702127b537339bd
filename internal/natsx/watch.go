package natsx

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Watch follows every key of kv until ctx ends: apply gets each value as it
// is now and then each change; ready is called once, after the values that
// existed when the watch began. It is what the services' caches run on.
func Watch(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry), ready func()) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return nil
			case e == nil: // the initial values are all in
				if ready != nil {
					ready()
					ready = nil
				}
			default:
				apply(e)
			}
		}
	}
}
