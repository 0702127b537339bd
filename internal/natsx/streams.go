package natsx

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream and bucket names (docs/design.md). Scripts and other teams rely on them.
const (
	StreamScanEvents = "SCAN_EVENTS"
	StreamDeliveries = "DELIVERIES"
	StreamDLQ        = "DLQ"
	StreamRejected   = "REJECTED"
	StreamAttempts   = "ATTEMPTS"

	BucketSubscriptions = "subscriptions"
	BucketLimits        = "limits"
	BucketTenants       = "tenants"
	BucketCallbacks     = "callbacks"
	BucketLanes         = "lanes"
)

// Topology says how the streams are kept. The zero value is not useful;
// start from DefaultTopology.
type Topology struct {
	// Replicas is the replication factor of every stream and bucket (1 on
	// one server, 3 on a production cluster). Ensure changes existing ones
	// to it. Zero keeps each existing one's and makes new ones with 1: a
	// process not told the count does not change it.
	Replicas int
	// EventRetention is how long SCAN_EVENTS keeps an event, counted from
	// when it was stored.
	EventRetention time.Duration
	// DeadLetterRetention is how long DLQ and REJECTED keep entries.
	DeadLetterRetention time.Duration
	// LimitRetention is how long a per-scan limit record lives after its
	// last change: longer than any scan, so its limits hold to the end.
	LimitRetention time.Duration
	// AttemptRetention is how long the attempt log keeps a record.
	AttemptRetention time.Duration
	// DedupeWindow is how long a repeated Nats-Msg-Id (of an event, a job,
	// a dead letter, a rejected copy) is recognised and dropped by the
	// server.
	DedupeWindow time.Duration
}

// DefaultTopology is what `scanwire run` creates.
func DefaultTopology() Topology {
	return Topology{
		Replicas:            0, // as they are; 1 for new ones
		EventRetention:      7 * 24 * time.Hour,
		DeadLetterRetention: 30 * 24 * time.Hour,
		AttemptRetention:    7 * 24 * time.Hour,
		LimitRetention:      7 * 24 * time.Hour,
		DedupeWindow:        time.Hour,
	}
}

// CopyDedupeWindow is DELIVERIES' dedupe window. Jobs carry no dedupe id
// (the record of their subscription and scan keeps them single, see
// internal/limits). What carries one: a webhook.test job, whose only
// repeat is its event's redelivery; the copies delivery stores of a job it
// is handling (a retry, a deferral), keyed on the job's sequence, whose
// second store can only come from the same job handed out again after its
// AckWait (at most the slot wait, the longest attempt timeout, 2 minutes,
// and 10 s); and replays. An hour of ids would hold every deferred copy of
// a dead endpoint's backlog in the server's memory.
const CopyDedupeWindow = 5 * time.Minute

// MaxEventMsgSize caps a message in SCAN_EVENTS. It is four times the
// event size limit (events.MaxEventSize) on purpose: an oversized event
// must reach fan-out to be rejected with a reason, not bounce off the
// stream. A larger one is refused by the stream when it is published, so
// its publisher is told and nothing is stored.
const MaxEventMsgSize = 1 << 20

// MaxMsgSize caps every other stream: a message of SCAN_EVENTS plus what
// scanwire adds to a copy of it (reason headers in REJECTED, the job's and
// the dead letter's fields), so a copy of anything SCAN_EVENTS accepted
// always fits. The server's max_payload (4 MiB in nats.conf and on the
// embedded server) is above both.
const MaxMsgSize = MaxEventMsgSize + 256<<10

// MaxHeaderSize is JetStream's own cap on the headers of a stored message
// (it refuses more than 64 KiB - 1 with error 10097).
const MaxHeaderSize = 1<<16 - 1

// StreamConfigs returns the configuration of every stream (docs/design.md).
func (t Topology) StreamConfigs() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        StreamScanEvents,
			Description: "scan lifecycle events as published by scanners",
			Subjects:    []string{"scans.>"},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.EventRetention,
			Duplicates:  min(t.DedupeWindow, t.EventRetention),
			MaxMsgSize:  MaxEventMsgSize,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
		},
		{
			// Limits retention: a delivered job stays, so that the jobs
			// themselves are the record of what fan-out queued for each
			// subscription and scan (jobs.Job.Subject, internal/limits):
			// none stored twice, the findings among them the admitted.
			// What is still to do is the delivery consumer's pending
			// count, not the stream's. An ack writes nothing to the stream
			// (a work queue wrote a tombstone per job); jobs leave by age,
			// with the events they came from.
			Name:        StreamDeliveries,
			Description: "one delivery job per (event, subscription); retries.> holds scheduled retries",
			Subjects:    []string{"deliveries.>", "retries.>"},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.jobRetention(),
			// A retry waits as a scheduled message, not as an
			// unacknowledged delivery (see delivery.retryLater).
			AllowMsgSchedules: true,
			Duplicates:        min(t.DedupeWindow, CopyDedupeWindow, t.jobRetention()),
			MaxMsgSize:        MaxMsgSize,
			Storage:           jetstream.FileStorage,
			Replicas:          t.Replicas,
		},
		{
			Name:        StreamDLQ,
			Description: "dead-lettered delivery jobs with their reason; replayable",
			Subjects:    []string{"dlq.>"},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.DeadLetterRetention,
			Duplicates:  min(t.DedupeWindow, t.DeadLetterRetention),
			MaxMsgSize:  MaxMsgSize,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
		},
		{
			Name:        StreamRejected,
			Description: "events that failed validation, with the reason",
			Subjects:    []string{"rejected.>"},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.DeadLetterRetention,
			Duplicates:  min(t.DedupeWindow, t.DeadLetterRetention),
			MaxMsgSize:  MaxMsgSize,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
		},
		{
			Name:        StreamAttempts,
			Description: "the attempt log: one record per delivery attempt",
			Subjects:    []string{"attempts.>"},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.AttemptRetention,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
		},
	}
}

// jobRetention is how long DELIVERIES keeps a job: as long as the event it
// came from may be seen again, and as long as a scan's limits count it.
func (t Topology) jobRetention() time.Duration { return max(t.EventRetention, t.LimitRetention) }

// BucketConfigs returns the configuration of every KV bucket.
func (t Topology) BucketConfigs() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: BucketSubscriptions, Description: "subscription documents, key <tenant>.<subscription_id>", History: 5},
		{Bucket: BucketTenants, Description: "tenant records: partner and webhook signing secret, key <tenant>", History: 5},
		// Per-scan state lives as long as a scan may: it expires on its own.
		{Bucket: BucketCallbacks, Description: "per-scan callbacks waiting for their pair, key <tenant>.<scan_id>", History: 1, TTL: t.LimitRetention},
		{Bucket: BucketLimits, Description: "per-scan finding limits, key <tenant>.<subscription_id>.<scan_id>", History: 1, TTL: t.LimitRetention},
		// A lane is never closed (services/delivery/lanes.go): no TTL.
		{Bucket: BucketLanes, Description: "subscriptions whose jobs have a consumer of their own, key <tenant>.<subscription_id>", History: 1},
	}
}

// Ensure creates the streams and buckets, or updates them to this
// configuration. It is idempotent: every service calls it at start.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream) error {
	cfgs := t.StreamConfigs()
	// DELIVERIES was a work queue in earlier releases, and JetStream cannot
	// change a stream's retention in place: a stream of then is moved over
	// to the new one first, jobs and retries kept (migrate.go).
	if i := slices.IndexFunc(cfgs, func(c jetstream.StreamConfig) bool { return c.Name == StreamDeliveries }); i >= 0 {
		cfg := cfgs[i]
		cfg.Replicas = t.replicas(ctx, js, StreamDeliveries)
		if err := migrateDeliveries(ctx, js, cfg); err != nil {
			return fmt.Errorf("stream %s: migrate: %w", StreamDeliveries, err)
		}
	}
	// All at once: on a cluster each stream is a group of its own that
	// elects a leader before its creation is answered, which takes
	// seconds; one after the other, the fifteen would take a minute.
	var wg sync.WaitGroup
	errs := make([]error, len(cfgs)+len(t.BucketConfigs()))
	for i, cfg := range cfgs {
		wg.Go(func() {
			cfg.Replicas = t.replicas(ctx, js, cfg.Name)
			if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
				errs[i] = fmt.Errorf("stream %s: %w", cfg.Name, err)
			}
		})
	}
	for i, cfg := range t.BucketConfigs() {
		wg.Go(func() {
			cfg.Storage, cfg.Replicas = jetstream.FileStorage, t.replicas(ctx, js, "KV_"+cfg.Bucket)
			if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
				errs[len(cfgs)+i] = fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// replicas is the replication factor stream is to have: Replicas, or
// with none asked for, the one it has (1 for a new stream).
func (t Topology) replicas(ctx context.Context, js jetstream.JetStream, stream string) int {
	if t.Replicas > 0 {
		return t.Replicas
	}
	if s, err := js.Stream(ctx, stream); err == nil && s.CachedInfo().Config.Replicas > 0 {
		return s.CachedInfo().Config.Replicas
	}
	return 1
}

// ErrNotSetUp is wrapped by Check's error when a stream or bucket is
// missing.
var ErrNotSetUp = errors.New("streams and buckets not set up")

// Check finds every stream and bucket made, without changing any: the
// start of a service whose credentials may not create them (fan-out and
// delivery under natsauth; the gateway's process sets them up). It names
// what is missing and who makes it.
func (t Topology) Check(ctx context.Context, js jetstream.JetStream) error {
	var missing []string
	for _, cfg := range t.StreamConfigs() {
		if _, err := js.Stream(ctx, cfg.Name); errors.Is(err, jetstream.ErrStreamNotFound) {
			missing = append(missing, cfg.Name)
		} else if err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range t.BucketConfigs() {
		if _, err := js.KeyValue(ctx, cfg.Bucket); errors.Is(err, jetstream.ErrBucketNotFound) {
			missing = append(missing, "KV_"+cfg.Bucket)
		} else if err != nil {
			return fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not found; this process's NATS user may not create them: start the gateway (a process running it creates them)",
			ErrNotSetUp, strings.Join(missing, ", "))
	}
	return nil
}
