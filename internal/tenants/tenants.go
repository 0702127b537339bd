// Package tenants keeps tenant records in the NATS KV bucket "tenants":
// a tenant's partner (who also hears its events, as in the scanning-portal
// document) and its webhook signing secret (for per-scan callbacks, as in
// the Pwnkemon document).
package tenants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/kvdoc"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/secrets"
	"github.com/scanwire/scanwire/internal/signing"
)

// ErrNotFound is returned for a tenant without a record.
var ErrNotFound = errors.New("tenant not found")

// Tenant is one tenant's record.
type Tenant struct {
	Tenant string `json:"tenant"`
	// Partner, when set, is the tenant whose subscriptions with
	// include_customer_events also receive this tenant's events.
	Partner string `json:"partner,omitempty"`
	// SigningSecret signs this tenant's per-scan callbacks.
	SigningSecret string    `json:"signing_secret,omitempty"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
}

// FieldError is a user-facing validation error naming the field.
type FieldError struct{ Field, Message string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Validate checks a record by meaning.
func (t *Tenant) Validate() error {
	if p := events.BadToken(t.Tenant); p != "" {
		return &FieldError{"tenant", p}
	}
	if p := events.BadToken(t.Partner); t.Partner != "" && p != "" {
		return &FieldError{"partner", p}
	}
	if t.Partner == t.Tenant {
		return &FieldError{"partner", "a tenant cannot be its own partner"}
	}
	return nil
}

// Store reads and writes tenant records.
type Store struct{ kv jetstream.KeyValue }

// NewStore returns a store over the tenants bucket.
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Get returns a record and its revision.
func (s *Store) Get(ctx context.Context, tenant string) (*Tenant, uint64, error) {
	t, rev, err := kvdoc.Get[Tenant](ctx, s.kv, tenant)
	if err != nil {
		return nil, 0, err
	}
	if rev == 0 {
		return nil, 0, fmt.Errorf("%s: %w", tenant, ErrNotFound)
	}
	return &t, rev, nil
}

// Change reads a record (a fresh one if there is none), lets change edit
// it, and writes it back with compare-and-swap (kvdoc.Change), re-reading
// and re-applying change on a concurrent change: the edits here (partner,
// secret) are set, not merged, so re-applying them on the newer record is
// right. change may therefore run more than once. The record is validated
// before it is written; an error from change or from validation writes
// nothing. A record that change leaves as it was is not written again
// (Updated stays), but is still validated and returned.
func (s *Store) Change(ctx context.Context, tenant string, change func(*Tenant) error) (*Tenant, error) {
	t, _, err := kvdoc.Change(ctx, s.kv, tenant, func(t *Tenant, exists bool) error {
		now := time.Now().UTC().Truncate(time.Second)
		if !exists {
			*t = Tenant{Tenant: tenant, Created: now}
		}
		changed, err := kvdoc.Edited(t, change)
		if err != nil {
			return err
		}
		if changed || !exists {
			t.Updated = now
		}
		return t.Validate()
	})
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// SigningSecret returns the tenant's signing secret, creating the record
// and the secret on first use.
func (s *Store) SigningSecret(ctx context.Context, tenant string) (string, error) {
	if t, _, err := s.Get(ctx, tenant); err == nil && t.SigningSecret != "" {
		return t.SigningSecret, nil
	}
	t, err := s.Change(ctx, tenant, func(t *Tenant) error {
		if t.SigningSecret == "" {
			t.SigningSecret = signing.NewStandardSecret()
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return t.SigningSecret, nil
}

// RotateSigningSecret replaces the signing secret at once, as Pwnkemon's
// dashboard does: callbacks signed from now on use only the new one.
func (s *Store) RotateSigningSecret(ctx context.Context, tenant string) (string, error) {
	secret := signing.NewStandardSecret()
	_, err := s.Change(ctx, tenant, func(t *Tenant) error { t.SigningSecret = secret; return nil })
	return secret, err
}

// Delete removes a record.
func (s *Store) Delete(ctx context.Context, tenant string) error {
	if _, _, err := s.Get(ctx, tenant); err != nil {
		return err
	}
	return s.kv.Delete(ctx, tenant)
}

// Cache follows the tenants bucket for fan-out (partners), like
// subscriptions.Cache. Delivery reads signing secrets from the Store.
type Cache struct {
	kv    jetstream.KeyValue
	log   *slog.Logger
	mu    sync.RWMutex
	byID  map[string]*Tenant
	ready chan struct{}
}

// NewCache returns a cache over the tenants bucket. Call Run.
func NewCache(kv jetstream.KeyValue, log *slog.Logger) *Cache {
	return &Cache{kv: kv, log: log, byID: map[string]*Tenant{}, ready: make(chan struct{})}
}

// Ready is closed once the initial records are loaded.
func (c *Cache) Ready() <-chan struct{} { return c.ready }

// Run watches the bucket until ctx ends.
func (c *Cache) Run(ctx context.Context) error {
	return natsx.Watch(ctx, c.kv, c.apply, func() { close(c.ready) })
}

// apply takes one change of the bucket. An invalid record is left out and
// logged, never fatal.
func (c *Cache) apply(e jetstream.KeyValueEntry) {
	var t Tenant
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case e.Operation() != jetstream.KeyValuePut:
		delete(c.byID, e.Key())
	case secrets.OpenError(e) != nil:
		delete(c.byID, e.Key())
		c.log.Warn("ignoring tenant record", "key", e.Key(), "revision", e.Revision(), "err", secrets.OpenError(e))
	case json.Unmarshal(e.Value(), &t) != nil || t.Validate() != nil || t.Tenant != e.Key():
		delete(c.byID, e.Key())
		c.log.Warn("ignoring invalid tenant record", "key", e.Key(), "revision", e.Revision())
	default:
		c.byID[e.Key()] = &t
	}
}

// Get returns a tenant's record.
func (c *Cache) Get(tenant string) (*Tenant, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t, ok := c.byID[tenant]
	return t, ok
}

// Partner returns the partner of tenant, or "".
func (c *Cache) Partner(tenant string) string {
	if t, ok := c.Get(tenant); ok {
		return t.Partner
	}
	return ""
}
