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
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// ErrNotFound is returned for a dead letter that does not exist, or that
// belongs to another tenant: the two look the same on purpose.
var ErrNotFound = errors.New("dead letter not found")

// ErrNoTarget is wrapped by Replay's refusal of a dead letter whose
// subscription takes no deliveries (deleted, disabled, or stored but
// invalid): replayed, it would only be dead-lettered again. The message
// names the reason and the fix.
var ErrNoTarget = errors.New("not replayed")

// Subscriptions is where Replay confirms that a dead letter's subscription
// still takes deliveries: *subscriptions.Store. Get returns
// subscriptions.ErrNotFound for a deleted subscription, and an error with
// a non-zero revision for a stored document that is invalid.
type Subscriptions interface {
	Get(ctx context.Context, tenant, id string) (*subscriptions.Subscription, uint64, error)
}

// Entry is a dead letter as listed: ID is its DLQ sequence number, the
// handle to replay it by.
type Entry struct {
	ID uint64 `json:"id"`
	DeadLetter
}

// Store lists and replays the DLQ stream.
type Store struct {
	js   jetstream.JetStream
	subs Subscriptions
}

// New returns the DLQ over js. Replay asks subs whether a dead letter's
// subscription still takes deliveries (nil: it does not ask, and delivery
// dead-letters the job again if not).
func New(js jetstream.JetStream, subs Subscriptions) *Store { return &Store{js: js, subs: subs} }

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
// twice within the dedupe window queues it once. A dead letter whose
// subscription is deleted, disabled or invalid is refused (ErrNoTarget)
// and stays in the DLQ: replayed, it would die again at once.
func (d *Store) Replay(ctx context.Context, tenant string, id uint64) (*jobs.Job, error) {
	e, err := d.Get(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	if len(e.Raw) > 0 || e.Job.WebhookID == "" {
		return nil, fmt.Errorf("dead letter %d holds an undecodable message, not a job: nothing to replay", id)
	}
	if err := d.checkTarget(ctx, id, &e.Job); err != nil {
		return nil, err
	}
	e.Job.Attempt = 0 // a fresh delivery: the whole schedule again
	m, err := e.Job.Msg()
	if err != nil {
		return nil, err
	}
	m.Subject = e.Job.CopySubject() // the job is in its scope's record already (jobs.Job.Subject)
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

// checkTarget refuses to replay a job whose subscription takes no
// deliveries, naming why and the fix. Per-scan callbacks have no
// subscription document: their URL travels in the job.
func (d *Store) checkTarget(ctx context.Context, id uint64, job *jobs.Job) error {
	if d.subs == nil || job.SubscriptionID == jobs.CallbackSubscription {
		return nil
	}
	s, rev, err := d.subs.Get(ctx, job.Tenant, job.SubscriptionID)
	switch {
	case errors.Is(err, subscriptions.ErrNotFound):
		return fmt.Errorf("dead letter %d %w: subscription %s was deleted; there is nothing to deliver it to", id, ErrNoTarget, job.SubscriptionID)
	case err != nil && rev != 0:
		return fmt.Errorf("dead letter %d %w: %v; fix the subscription, then replay", id, ErrNoTarget, err)
	case err != nil:
		return fmt.Errorf("dead letter %d: read subscription %s: %w", id, job.SubscriptionID, err)
	case s.Disabled:
		return fmt.Errorf("dead letter %d %w: subscription %s is disabled (%s); enable it first (scanwire subs update %s --enable, "+
			"or PATCH /v1/subscriptions/%s with {\"disabled\": false}), then replay", id, ErrNoTarget, s.ID, s.DisabledReason, s.ID, s.ID)
	}
	return nil
}
