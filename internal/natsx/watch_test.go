package natsx_test

import (
	"context"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

// endingKV hands out a first watch whose updates end after the initial
// values, as a watch whose consumer is lost for good would.
type endingKV struct {
	jetstream.KeyValue
	mu      sync.Mutex
	watches int
}

func (k *endingKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := k.KeyValue.WatchAll(ctx, opts...)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.watches++; err != nil || k.watches > 1 {
		return w, err
	}
	out := make(chan jetstream.KeyValueEntry)
	go func() {
		defer close(out)
		for e := range w.Updates() {
			out <- e
			if e == nil {
				return
			}
		}
	}()
	return &endingWatcher{KeyWatcher: w, out: out}, nil
}

type endingWatcher struct {
	jetstream.KeyWatcher
	out chan jetstream.KeyValueEntry
}

func (w *endingWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.out }

// A watch whose updates end starts again: ready is called once, and a
// change made after the end is applied.
func TestWatchStartsAgainWhenItsUpdatesEnd(t *testing.T) {
	t.Parallel()
	js := natsxtest.Connect(t, natsxtest.Server(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	kv := &endingKV{KeyValue: raw}
	var mu sync.Mutex
	seen, readies := map[string]string{}, 0
	done := make(chan error, 1)
	go func() {
		done <- natsx.Watch(ctx, kv, func(e jetstream.KeyValueEntry) {
			mu.Lock()
			seen[e.Key()] = string(e.Value())
			mu.Unlock()
		}, func() { mu.Lock(); readies++; mu.Unlock() })
	}()
	natsxtest.Eventually(t, "a second watch", func() bool { kv.mu.Lock(); defer kv.mu.Unlock(); return kv.watches == 2 })
	if _, err := raw.Put(ctx, "b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	natsxtest.Eventually(t, "both keys applied", func() bool { mu.Lock(); defer mu.Unlock(); return seen["b"] == "2" && seen["a"] == "1" })
	mu.Lock()
	if readies != 1 {
		t.Errorf("ready called %d times, want once", readies)
	}
	mu.Unlock()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch: %v", err)
	}
}
