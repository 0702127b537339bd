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

	"github.com/nats-io/nats.go"
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
// (kvdoc.Change) and, once the record has both a URL and the finished
// event, queues the delivery. The job is published before the record says
// so, under a dedupe id of the scan (not of the event): a crash in
// between publishes it again, a lost compare-and-swap runs the whole edit
// (and the publish) again on the newer record, and two replicas racing on
// two scan.finished events of one scan publish twice; in every case the
// server keeps one. A record that edit leaves as it was is not written.
func (r *Registry) change(ctx context.Context, tenant, scanID string, edit func(*Record)) error {
	_, _, err := kvdoc.Change(ctx, r.kv, tenant+"."+scanID, func(rec *Record, _ bool) error {
		edit(rec)
		if rec.URL != "" && rec.Finished != nil && !rec.Queued {
			if err := r.queue(ctx, tenant, scanID, rec); err != nil {
				return err
			}
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
	m.Header.Set(nats.MsgIdHdr, "callback."+tenant+"."+scanID)
	if _, err := r.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("queue callback of %s: %w", scanID, err)
	}
	return nil
}
