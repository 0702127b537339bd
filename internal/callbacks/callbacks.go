// Package callbacks implements per-scan callbacks, as in the Pwnkemon
// document: a scan.started that carries callback_url yields exactly one
// delivery of that scan's scan.finished to that URL, whichever of the two
// events fan-out sees first.
package callbacks

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/kvdoc"
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

// change applies edit to the scan's record with compare-and-swap
// (kvdoc.Change) and, once the stored record has both a URL and the
// finished event, queues the delivery, then marks the record queued.
//
// The job is made from the record as stored, never from a racer's draft:
// edits only fill empty fields, so once a complete record is stored its
// URL and event are fixed, and every replica that finds it complete (two
// scan.finished events of one scan on two replicas, a redelivery after a
// crash) publishes the same job, under a dedupe id of the scan, of which
// the server keeps one. A crash between the publish and the mark publishes
// it again when the event comes back, to the same effect.
func (r *Registry) change(ctx context.Context, tenant, scanID string, edit func(*Record)) error {
	key := tenant + "." + scanID
	rec, _, err := kvdoc.Change(ctx, r.kv, key, func(rec *Record, _ bool) error {
		edit(rec)
		return nil
	})
	if err != nil || rec.URL == "" || rec.Finished == nil || rec.Queued {
		return err
	}
	if err := r.queue(ctx, tenant, scanID, &rec); err != nil {
		return err
	}
	_, _, err = kvdoc.Change(ctx, r.kv, key, func(rec *Record, exists bool) error {
		if exists { // expired meanwhile: nothing left to mark
			rec.Queued = true
		}
		return nil
	})
	return err
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
	// Once per scan, whoever queues it and however often: the job's
	// subject names the scan (jobs.Job.Subject).
	jobs.ExpectEmpty(m)
	if _, err := r.js.PublishMsg(ctx, m); err != nil && !jobs.Exists(err) {
		return fmt.Errorf("queue callback of %s: %w", scanID, err)
	}
	return nil
}
