package subscriptions

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/secrets"
)

// Cache keeps every valid subscription in memory, fed by a watch on the KV
// bucket, so matching an event costs no round trip. A change in the bucket
// reaches every replica's cache within the watch's latency (milliseconds).
//
// Documents that fail validation (written straight into the bucket, say)
// are left out and logged once per revision; they never stop the cache.
type Cache struct {
	kv     jetstream.KeyValue
	policy URLPolicy
	log    *slog.Logger

	mu sync.RWMutex
	// byTenant holds every valid subscription; index holds each again
	// under every event type it takes, so matching an event touches only
	// the subscriptions of its tenant that want its type.
	byTenant map[string]map[string]*Subscription            // tenant -> id -> sub
	index    map[string]map[string]map[string]*Subscription // tenant -> type -> id -> sub
	invalid  map[string]error                               // key -> why it is ignored

	ready chan struct{}
}

// NewCache returns a cache over the subscriptions bucket. Documents whose
// URL fails policy's static checks are invalid. Call Run.
func NewCache(kv jetstream.KeyValue, policy URLPolicy, log *slog.Logger) *Cache {
	return &Cache{
		kv:       kv,
		policy:   policy,
		log:      log,
		byTenant: map[string]map[string]*Subscription{},
		index:    map[string]map[string]map[string]*Subscription{},
		invalid:  map[string]error{},
		ready:    make(chan struct{}),
	}
}

// Ready is closed once the cache holds every document that existed when
// Run started. Services wait for it before taking work, so that no event
// is matched against a half-loaded cache.
func (c *Cache) Ready() <-chan struct{} { return c.ready }

// Run watches the bucket until ctx ends.
func (c *Cache) Run(ctx context.Context) error {
	return natsx.Watch(ctx, c.kv, func(e jetstream.KeyValueEntry) {
		if err := secrets.OpenError(e); err != nil {
			c.invalidate(e.Key(), e.Revision(), err)
			return
		}
		c.apply(e.Key(), e.Value(), e.Revision(), e.Operation() != jetstream.KeyValuePut)
	}, func() { close(c.ready) })
}

// apply takes one change of the bucket: a document put at revision, or a
// key deleted (or purged).
func (c *Cache) apply(key string, value []byte, revision uint64, deleted bool) {
	if deleted {
		c.remove(key)
		return
	}
	s, err := parse(value, c.policy)
	if err == nil && Key(s.Tenant, s.ID) != key {
		err = fmt.Errorf("key %q does not match the document's tenant and id (%s)", key, Key(s.Tenant, s.ID))
	}
	if err != nil {
		c.invalidate(key, revision, err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.invalid, key)
	c.unindex(s.Tenant, s.ID)
	m := c.byTenant[s.Tenant]
	if m == nil {
		m = map[string]*Subscription{}
		c.byTenant[s.Tenant] = m
	}
	m[s.ID] = s
	types := c.index[s.Tenant]
	if types == nil {
		types = map[string]map[string]*Subscription{}
		c.index[s.Tenant] = types
	}
	for _, t := range events.Types() {
		if s.Wants(t) {
			if types[t] == nil {
				types[t] = map[string]*Subscription{}
			}
			types[t][s.ID] = s
		}
	}
}

// invalidate leaves out the document at key, for err.
func (c *Cache) invalidate(key string, revision uint64, err error) {
	c.remove(key)
	c.mu.Lock()
	c.invalid[key] = err
	c.mu.Unlock()
	c.log.Warn("ignoring invalid subscription document", "key", key, "revision", revision, "err", err)
}

// unindex removes a subscription from the type index; c.mu is held.
func (c *Cache) unindex(tenant, id string) {
	old, ok := c.byTenant[tenant][id]
	if !ok {
		return
	}
	for _, t := range events.Types() {
		if old.Wants(t) {
			delete(c.index[tenant][t], id)
		}
	}
}

func (c *Cache) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.invalid, key)
	// Tenants are subject tokens and hold no dot: the first one splits.
	tenant, id, _ := strings.Cut(key, ".")
	c.unindex(tenant, id)
	if m := c.byTenant[tenant]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(c.byTenant, tenant)
		}
	}
}

// Match returns the subscriptions of tenant that take events of type
// eventType, disabled ones included: their jobs are dead-lettered with the
// reason, not dropped. The returned values are shared: do not modify them.
func (c *Cache) Match(tenant, eventType string, f Facts) []*Subscription {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*Subscription
	for _, s := range c.index[tenant][eventType] {
		if s.Accepts(f) {
			out = append(out, s)
		}
	}
	return out
}

// Get returns one subscription, disabled or not.
func (c *Cache) Get(tenant, id string) (*Subscription, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.byTenant[tenant][id]
	return s, ok
}

// Len returns the number of valid subscriptions held.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, m := range c.byTenant {
		n += len(m)
	}
	return n
}
