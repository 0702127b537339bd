package rejected

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
)

// DefaultLimit is how many entries List returns when not told.
const DefaultLimit = 50

// ErrBadTenant is returned by List for a tenant that is not a subject
// token: it would become part of the subject filter ("*" would list every
// tenant's rejections).
var ErrBadTenant = errors.New("invalid tenant")

// Store lists the REJECTED stream.
type Store struct {
	js jetstream.JetStream
}

// New returns the REJECTED stream's reader over js.
func New(js jetstream.JetStream) *Store { return &Store{js: js} }

// List returns the newest limit rejected events of tenant (of every tenant
// when tenant is ""), newest first; limit <= 0 is DefaultLimit.
func (s *Store) List(ctx context.Context, tenant string, limit int) ([]Entry, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	filter := "rejected.>"
	if tenant != "" {
		if p := events.BadToken(tenant); p != "" {
			return nil, fmt.Errorf("%w: tenant %s", ErrBadTenant, p)
		}
		filter = events.RejectedSubject(tenant)
	}
	// Only the newest limit messages are kept while reading; each is
	// decoded once, at the end.
	var last []jetstream.Msg
	err := natsx.ReadAll(ctx, s.js, natsx.StreamRejected, filter, func(m jetstream.Msg) {
		last = append(last, m)
		if len(last) > limit {
			last = last[1:]
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list rejected events: %w", err)
	}
	out := make([]Entry, 0, len(last))
	for _, m := range slices.Backward(last) {
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		out = append(out, entryOf(meta.Sequence.Stream, meta.Timestamp, m.Subject(), m.Headers(), m.Data()))
	}
	return out, nil
}
