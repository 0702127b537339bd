package subscriptions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/jsonx"
	"github.com/scanwire/scanwire/internal/kvdoc"
	"github.com/scanwire/scanwire/internal/profiles"
	"github.com/scanwire/scanwire/internal/signing"
)

// Errors a caller decides on.
var (
	ErrNotFound = errors.New("subscription not found")
	ErrConflict = errors.New("subscription was changed by someone else since it was read; read it again and retry")
)

// URLPolicy is the egress policy as subscriptions need it (egress.Policy).
type URLPolicy interface {
	// CheckURL judges a URL fully, resolving its host: at write time.
	CheckURL(ctx context.Context, raw string) error
	// CheckURLStatic judges what needs no DNS: for documents read back.
	CheckURLStatic(raw string) error
}

// Store reads and writes subscription documents in the KV bucket. It is
// the one writer the CLI and the gateway share.
type Store struct {
	kv     jetstream.KeyValue
	policy URLPolicy
}

// NewStore returns a store over the subscriptions bucket. Every URL written
// must pass policy, and documents read back are held to its static checks,
// so that what the store lists as valid is what a pipeline with this policy
// serves. policy is the running pipeline's (egress.Policy): the services
// pass their own, the CLI the one the pipeline announces
// (AskPipeline). A nil policy judges documents by schema and meaning
// alone: for a client that only reads or deletes, never for writes.
func NewStore(kv jetstream.KeyValue, policy URLPolicy) *Store {
	return &Store{kv: kv, policy: policy}
}

// validate checks a document about to be written: by meaning, then the URL
// by the egress policy. prevURL is the URL the stored document has ("" for
// a new one). The host is resolved only when the URL is new or changed:
// a write that leaves the URL as it was (disable, enable, a rotation, a
// delivery's health record) must not fail because the name stopped
// resolving, or auto-disable could never disable an endpoint whose name
// was withdrawn. Such writes get the static checks, as reads do.
func (st *Store) validate(ctx context.Context, s *Subscription, prevURL string) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if st.policy == nil {
		return nil
	}
	if err := st.policy.CheckURLStatic(s.URL); err != nil {
		return urlError(err)
	}
	if prevURL != "" && s.URL == prevURL {
		return nil
	}
	if err := st.policy.CheckURL(ctx, s.URL); err != nil {
		if !errors.Is(err, egress.ErrBlocked) {
			// The static checks passed: what failed is the lookup.
			err = fmt.Errorf("%w (DNS may be the cause: the name is looked up when a subscription's URL is written, from the machine "+
				"that writes it; if the name is right, it may not be published yet or not be visible from there)", err)
		}
		return urlError(err)
	}
	return nil
}

// urlError is a refusal of the url field.
func urlError(err error) error {
	return &ValidationError{Fields: []*FieldError{{Field: "url", Message: err.Error()}}}
}

// parse reads a stored document: schema, meaning, and the static part of
// the egress policy (DNS is for write and dial time).
func parse(doc []byte, policy URLPolicy) (*Subscription, error) {
	s, err := Parse(doc)
	if err != nil {
		return nil, err
	}
	if err := checkStatic(policy, s); err != nil {
		return nil, err
	}
	return s, nil
}

// checkStatic holds a stored document's URL to the static part of policy
// (nil: no policy).
func checkStatic(policy URLPolicy, s *Subscription) error {
	if policy == nil {
		return nil
	}
	if err := policy.CheckURLStatic(s.URL); err != nil {
		return urlError(err)
	}
	return nil
}

// Entry is one stored document: valid (Sub set) or not (Err set, so that
// lists can show what an operator wrote by hand and why it is ignored).
type Entry struct {
	Key      string
	Revision uint64
	Sub      *Subscription
	Err      error
}

// Create fills in the id, timestamps, the default profile and, when
// Secrets is nil, a generated secret, then stores the document. The
// returned copy carries the secret: show it once.
func (st *Store) Create(ctx context.Context, s Subscription) (*Subscription, error) {
	now := time.Now().UTC().Truncate(time.Second)
	s.ID = NewID()
	s.Created, s.Updated = now, now
	if s.Profile == "" {
		s.Profile = profiles.StandardWebhooks
	}
	if s.Secrets == nil {
		s.Secrets = []Secret{{Secret: signing.NewStandardSecret(), Created: now}}
	}
	if s.Events == nil {
		s.Events = []string{}
	}
	if err := st.validate(ctx, &s, ""); err != nil {
		return nil, err
	}
	doc, err := jsonx.Marshal(&s)
	if err != nil {
		return nil, err
	}
	if _, err := st.kv.Create(ctx, Key(s.Tenant, s.ID), doc); err != nil {
		return nil, fmt.Errorf("store subscription %s: %w", s.ID, err)
	}
	return &s, nil
}

// Get returns a subscription and the revision to pass to Update.
func (st *Store) Get(ctx context.Context, tenant, id string) (*Subscription, uint64, error) {
	e, err := st.kv.Get(ctx, Key(tenant, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%s/%s: %w", tenant, id, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read subscription %s: %w", id, err)
	}
	s, err := parse(e.Value(), st.policy)
	if err != nil {
		return nil, e.Revision(), fmt.Errorf("stored subscription %s is invalid: %w", id, err)
	}
	return s, e.Revision(), nil
}

// Update stores s if the stored revision is still revision; otherwise it
// returns ErrConflict and changes nothing. It is for a user's edit, made
// on what the user read: a concurrent edit is refused, never merged. The
// changes scanwire makes itself go through Change. The URL's host is
// resolved only when s changes the URL.
func (st *Store) Update(ctx context.Context, s Subscription, revision uint64) (*Subscription, error) {
	s.Updated = time.Now().UTC().Truncate(time.Second)
	s.Secrets = s.liveSecrets(s.Updated) // expired secrets leave the document
	prev, err := st.kv.Get(ctx, Key(s.Tenant, s.ID))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, fmt.Errorf("%s/%s: %w", s.Tenant, s.ID, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("read subscription %s: %w", s.ID, err)
	case prev.Revision() != revision:
		return nil, ErrConflict
	}
	var stored struct {
		URL string `json:"url"`
	}
	_ = json.Unmarshal(prev.Value(), &stored) // unreadable: "" resolves the URL, as for a new one
	if err := st.validate(ctx, &s, stored.URL); err != nil {
		return nil, err
	}
	doc, err := jsonx.Marshal(&s)
	if err != nil {
		return nil, err
	}
	if _, err := st.kv.Update(ctx, Key(s.Tenant, s.ID), doc, revision); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, ErrConflict
		}
		return nil, fmt.Errorf("update subscription %s: %w", s.ID, err)
	}
	return &s, nil
}

// Change applies edit to a stored subscription with compare-and-swap
// (kvdoc.Change): when another writer changed the document since it was
// read, it is read again and edit runs again on the newer one, so edit may
// run more than once and must decide from the document it is given. It is
// for the changes scanwire makes itself (a secret rotation, a delivery's
// health record), which are right on whatever the document has become; a
// user's edit goes through Get and Update instead, so that a concurrent
// edit is refused (ErrConflict) rather than merged.
//
// As in Update, expired secrets leave the document, Updated is set, and
// the result is validated before it is written (its host resolved only
// when edit changed the URL): an error from edit or from validation
// writes nothing. A change that leaves the document as it was
// writes nothing. A missing or deleted subscription is ErrNotFound. A
// stored document that does not pass Parse is an error naming its key
// (kvdoc.ErrCorrupt), one whose URL the store's static URL policy refuses
// an error naming the subscription; either is left as it is. When too
// many writers contend, the error wraps both ErrConflict and
// kvdoc.ErrContention.
func (st *Store) Change(ctx context.Context, tenant, id string, edit func(*Subscription) error) (*Subscription, error) {
	doc, _, err := kvdoc.Change(ctx, st.kv, Key(tenant, id), func(d *storedDoc, exists bool) error {
		if !exists {
			return fmt.Errorf("%s/%s: %w", tenant, id, ErrNotFound)
		}
		s := &d.Subscription
		if err := checkStatic(st.policy, s); err != nil {
			return fmt.Errorf("stored subscription %s is invalid: %w", id, err)
		}
		prevURL := s.URL
		now := time.Now().UTC().Truncate(time.Second)
		changed, err := kvdoc.Edited(s, func(s *Subscription) error {
			s.Secrets = s.liveSecrets(now) // expired secrets leave the document
			return edit(s)
		})
		if err != nil || !changed {
			return err // unchanged: kvdoc.Change writes nothing
		}
		s.Updated = now
		return st.validate(ctx, s, prevURL)
	})
	switch {
	case errors.Is(err, kvdoc.ErrContention):
		return nil, fmt.Errorf("%w (%w)", ErrConflict, err)
	case err != nil:
		return nil, err
	}
	return &doc.Subscription, nil
}

// storedDoc is a subscription as Change reads it: decoded and checked by
// Parse, so that a stored document the store cannot read back is reported
// and left alone, never edited and rewritten.
type storedDoc struct{ Subscription }

// UnmarshalJSON decodes a stored document with Parse.
func (d *storedDoc) UnmarshalJSON(b []byte) error {
	s, err := Parse(b)
	if err != nil {
		return err
	}
	d.Subscription = *s
	return nil
}

// Delete removes a subscription. Jobs already queued for it are
// dead-lettered by delivery with the reason "subscription deleted".
func (st *Store) Delete(ctx context.Context, tenant, id string) error {
	if _, err := st.kv.Get(ctx, Key(tenant, id)); errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%s/%s: %w", tenant, id, ErrNotFound)
	}
	if err := st.kv.Delete(ctx, Key(tenant, id)); err != nil {
		return fmt.Errorf("delete subscription %s: %w", id, err)
	}
	return nil
}

// List returns the documents of tenant, or of every tenant when tenant is
// "", sorted by key. Invalid documents are included with their error.
func (st *Store) List(ctx context.Context, tenant string) ([]Entry, error) {
	filter := ">"
	if tenant != "" {
		filter = tenant + ".*"
	}
	lister, err := st.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]Entry, 0, len(keys))
	for _, k := range keys {
		e, err := st.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted between list and get
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", k, err)
		}
		s, perr := parse(e.Value(), st.policy)
		out = append(out, Entry{Key: k, Revision: e.Revision(), Sub: s, Err: perr})
	}
	return out, nil
}

// TenantOf finds the tenant of a subscription id, for callers (the CLI)
// that know only the id.
func (st *Store) TenantOf(ctx context.Context, id string) (string, error) {
	if !strings.HasPrefix(id, "sub_") || strings.ContainsAny(id, ".*> ") {
		return "", fmt.Errorf("%q is not a subscription id (sub_<ULID>)", id)
	}
	lister, err := st.kv.ListKeysFiltered(ctx, "*."+id)
	if err != nil {
		return "", fmt.Errorf("find subscription %s: %w", id, err)
	}
	tenant := ""
	for k := range lister.Keys() {
		tenant, _, _ = strings.Cut(k, ".")
	}
	if tenant == "" {
		return "", fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return tenant, nil
}
