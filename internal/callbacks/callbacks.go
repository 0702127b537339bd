// Package callbacks implements per-scan callbacks, as in the Pwnkemon
// document: a scan.started that carries callback_url yields exactly one
// delivery of that scan's scan.finished to that URL, whichever of the two
// events fan-out sees first.
package callbacks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/jobs"
)

// Record is what is known of one scan's callback, key <tenant>.<scan_id>
// in the callbacks bucket. It expires with the bucket's TTL: a callback
// whose scan never finishes within the scan's lifetime is dropped then.
type Record struct {
	URL string `json:"url,omitempty"`
	// Finished is the scan.finished event (structured JSON) and its id.
	Finished   json.RawMessage `json:"finished,omitempty"`
	FinishedID string          `json:"finished_id,omitempty"`
	Queued     bool            `json:"queued"`
}

// Registry pairs scan.started and scan.finished and queues the delivery.
type Registry struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
}

// New returns a registry over the callbacks bucket (natsx.BucketCallbacks).
func New(kv jetstream.KeyValue, js jetstream.JetStream) *Registry { return &Registry{kv: kv, js: js} }

// Started records the callback URL of a scan.
func (r *Registry) Started(ctx context.Context, tenant, scanID, url string) error {
	return r.change(ctx, tenant, scanID, func(rec *Record) {
		if rec.URL == "" {
			rec.URL = url
		}
	})
}

// Finished records a scan's scan.finished event.
func (r *Registry) Finished(ctx context.Context, tenant, scanID, eventID string, structured []byte) error {
	return r.change(ctx, tenant, scanID, func(rec *Record) {
		if rec.Finished == nil {
			rec.Finished, rec.FinishedID = structured, eventID
		}
	})
}

// change applies edit with compare-and-swap and, once the record has both
// a URL and the finished event, queues the delivery. The job is published
// before the record says so, under a dedupe id of the scan (not of the
// event): a crash in between publishes it again, and two replicas racing
// on two scan.finished events of one scan publish twice; either way the
// server keeps one.
func (r *Registry) change(ctx context.Context, tenant, scanID string, edit func(*Record)) error {
	key := tenant + "." + scanID
	for range 50 {
		var rec Record
		var rev uint64
		e, err := r.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("read callback %s: %w", key, err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return fmt.Errorf("callback %s is corrupt: %w", key, err)
			}
		}
		before, _ := json.Marshal(rec)
		edit(&rec)
		if rec.URL != "" && rec.Finished != nil && !rec.Queued {
			if err := r.queue(ctx, tenant, scanID, &rec); err != nil {
				return err
			}
			rec.Queued = true
		}
		after, _ := json.Marshal(rec)
		if string(before) == string(after) {
			return nil
		}
		if rev == 0 {
			_, err = r.kv.Create(ctx, key, after)
		} else {
			_, err = r.kv.Update(ctx, key, after, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write callback %s: %w", key, err)
		}
		return nil
	}
	return fmt.Errorf("callback %s.%s: too much contention, will retry", tenant, scanID)
}

func (r *Registry) queue(ctx context.Context, tenant, scanID string, rec *Record) error {
	j := jobs.Job{
		WebhookID:      jobs.WebhookID(tenant+"."+scanID, jobs.CallbackSubscription),
		Tenant:         tenant,
		SourceTenant:   tenant,
		SubscriptionID: jobs.CallbackSubscription,
		EventID:        rec.FinishedID,
		EventType:      "scan.finished",
		ScanID:         scanID,
		Event:          rec.Finished,
		Queued:         time.Now().UTC(),
		CallbackURL:    rec.URL,
	}
	m, err := j.Msg()
	if err != nil {
		return err
	}
	m.Header.Set(nats.MsgIdHdr, "callback."+tenant+"."+scanID)
	if _, err := r.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("queue callback of %s: %w", scanID, err)
	}
	return nil
}
