package secrets

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Wrap returns kv with its secrets sealed as they are written and opened
// as they are read (Get, GetRevision, History and every watch): its
// users, stores and caches, see plain documents, the bucket sealed ones.
// Get of a value that does not open is an error saying why; a watch hands
// it on as stored, with the reason (OpenError).
func Wrap(kv jetstream.KeyValue, k *Keyring, fields Fields) jetstream.KeyValue {
	return &sealedKV{KeyValue: kv, k: k, fields: fields}
}

type sealedKV struct {
	jetstream.KeyValue
	k      *Keyring
	fields Fields
}

func (s *sealedKV) where(key string) string { return s.Bucket() + "/" + key }

func (s *sealedKV) seal(key string, value []byte) ([]byte, error) {
	out, err := s.k.SealDoc(value, s.where(key), s.fields)
	if err != nil {
		return nil, fmt.Errorf("seal %s %s: %w", s.Bucket(), key, err)
	}
	return out, nil
}

// open is the value of e as its users read it. A value that does not open
// keeps its sealed secrets, and the entry says why (OpenError).
func (s *sealedKV) open(e jetstream.KeyValueEntry) jetstream.KeyValueEntry {
	if e == nil || e.Operation() != jetstream.KeyValuePut {
		return e
	}
	v, err := s.k.OpenDoc(e.Value(), s.where(e.Key()), s.fields)
	if err != nil {
		return &openedEntry{KeyValueEntry: e, value: e.Value(), err: err}
	}
	return &openedEntry{KeyValueEntry: e, value: v}
}

type openedEntry struct {
	jetstream.KeyValueEntry
	value []byte
	err   error
}

func (e *openedEntry) Value() []byte { return e.value }

// OpenError is why an entry read through Wrap holds a secret that did not
// open (a key missing from the keyring, a damaged or moved value), or nil.
func OpenError(e jetstream.KeyValueEntry) error {
	if o, ok := e.(*openedEntry); ok && o.err != nil {
		return fmt.Errorf("%s %s: %w", e.Bucket(), e.Key(), o.err)
	}
	return nil
}

func (s *sealedKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := s.KeyValue.Get(ctx, key)
	if err != nil {
		return e, err
	}
	e = s.open(e)
	return e, OpenError(e)
}

func (s *sealedKV) GetRevision(ctx context.Context, key string, revision uint64) (jetstream.KeyValueEntry, error) {
	e, err := s.KeyValue.GetRevision(ctx, key, revision)
	if err != nil {
		return e, err
	}
	e = s.open(e)
	return e, OpenError(e)
}

func (s *sealedKV) History(ctx context.Context, key string, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	es, err := s.KeyValue.History(ctx, key, opts...)
	for i := range es {
		es[i] = s.open(es[i])
	}
	return es, err
}

func (s *sealedKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	v, err := s.seal(key, value)
	if err != nil {
		return 0, err
	}
	return s.KeyValue.Put(ctx, key, v)
}

func (s *sealedKV) PutString(ctx context.Context, key string, value string) (uint64, error) {
	return s.Put(ctx, key, []byte(value))
}

func (s *sealedKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	v, err := s.seal(key, value)
	if err != nil {
		return 0, err
	}
	return s.KeyValue.Create(ctx, key, v, opts...)
}

func (s *sealedKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	v, err := s.seal(key, value)
	if err != nil {
		return 0, err
	}
	return s.KeyValue.Update(ctx, key, v, revision)
}

func (s *sealedKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return s.watch(s.KeyValue.Watch(ctx, keys, opts...))
}

func (s *sealedKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return s.watch(s.KeyValue.WatchAll(ctx, opts...))
}

func (s *sealedKV) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return s.watch(s.KeyValue.WatchFiltered(ctx, keys, opts...))
}

// watch hands on w's updates opened; the channel closes when w's does, or
// once the watcher is stopped.
func (s *sealedKV) watch(w jetstream.KeyWatcher, err error) (jetstream.KeyWatcher, error) {
	if err != nil {
		return nil, err
	}
	ow := &openedWatcher{KeyWatcher: w, updates: make(chan jetstream.KeyValueEntry, 256), done: make(chan struct{})}
	go func() {
		defer close(ow.updates)
		for e := range w.Updates() {
			select {
			case ow.updates <- s.open(e):
			case <-ow.done:
				return
			}
		}
	}()
	return ow, nil
}

type openedWatcher struct {
	jetstream.KeyWatcher
	updates chan jetstream.KeyValueEntry
	done    chan struct{}
	stop    sync.Once
}

func (w *openedWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

func (w *openedWatcher) Stop() error {
	w.stop.Do(func() { close(w.done) })
	return w.KeyWatcher.Stop()
}
