package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
)

// ErrNotFound is returned for a dead letter that does not exist, or that
// belongs to another tenant: the two look the same on purpose.
var ErrNotFound = errors.New("dead letter not found")

// Entry is a dead letter as listed: ID is its DLQ sequence number, the
// handle to replay it by.
type Entry struct {
	ID uint64 `json:"id"`
	DeadLetter
}

// Store lists and replays the DLQ stream.
type Store struct {
	js jetstream.JetStream
}

// New returns the DLQ over js.
func New(js jetstream.JetStream) *Store { return &Store{js: js} }

// List returns the newest limit dead letters of tenant (every tenant when
// tenant is ""), of one subscription when subscriptionID is set, oldest
// first.
func (d *Store) List(ctx context.Context, tenant, subscriptionID string, limit int) ([]Entry, error) {
	if limit <= 0 {
		limit = 100
	}
	filter := "dlq.>"
	if tenant != "" {
		filter = "dlq." + tenant + ".*"
		if subscriptionID != "" {
			filter = Subject(tenant, subscriptionID)
		}
	}
	var out []Entry
	err := natsx.ReadAll(ctx, d.js, natsx.StreamDLQ, filter, func(m jetstream.Msg) {
		meta, err := m.Metadata()
		var dl DeadLetter
		if err != nil || json.Unmarshal(m.Data(), &dl) != nil {
			return
		}
		out = append(out, Entry{ID: meta.Sequence.Stream, DeadLetter: dl})
		if len(out) > limit {
			out = out[1:]
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return out, nil
}

// Get returns one dead letter. With tenant set, another tenant's entry is
// ErrNotFound.
func (d *Store) Get(ctx context.Context, tenant string, id uint64) (*Entry, error) {
	s, err := d.js.Stream(ctx, natsx.StreamDLQ)
	if err != nil {
		return nil, err
	}
	m, err := s.GetMsg(ctx, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("dead letter %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("dead letter %d: %w", id, err)
	}
	var dl DeadLetter
	if err := json.Unmarshal(m.Data, &dl); err != nil {
		return nil, fmt.Errorf("dead letter %d is not readable: %w", id, err)
	}
	if tenant != "" && dl.Job.Tenant != tenant {
		return nil, fmt.Errorf("dead letter %d: %w", id, ErrNotFound)
	}
	return &Entry{ID: id, DeadLetter: dl}, nil
}

// Replay queues the dead job again as a fresh delivery (attempts start
// over) with the same webhook id, then removes it from the DLQ: if it
// fails again, it comes back as a new entry. Replaying the same entry
// twice within the dedupe window queues it once.
func (d *Store) Replay(ctx context.Context, tenant string, id uint64) (*jobs.Job, error) {
	e, err := d.Get(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	if len(e.Raw) > 0 || e.Job.WebhookID == "" {
		return nil, fmt.Errorf("dead letter %d holds an undecodable message, not a job: nothing to replay", id)
	}
	e.Job.Attempt = 0 // a fresh delivery: the whole schedule again
	m, err := e.Job.Msg()
	if err != nil {
		return nil, err
	}
	m.Header.Set(nats.MsgIdHdr, "replay."+strconv.FormatUint(id, 10))
	if _, err := d.js.PublishMsg(ctx, m); err != nil {
		return nil, fmt.Errorf("replay %d: %w", id, err)
	}
	s, err := d.js.Stream(ctx, natsx.StreamDLQ)
	if err == nil {
		err = s.DeleteMsg(ctx, id)
	}
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("replayed %d but could not remove it from the DLQ: %w", id, err)
	}
	return &e.Job, nil
}
