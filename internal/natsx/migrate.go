package natsx

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The migration of DELIVERIES from a work queue to limits retention
// (streams.go). JetStream refuses to change a stream's retention in place,
// so the old stream's messages are moved to a holding stream, the old
// stream is deleted and created anew, and the messages are moved back.
const (
	// streamDeliveriesMigration holds the jobs and retries of the old
	// DELIVERIES while it is replaced. Its existence means a migration is
	// under way: the next Ensure finishes it, whatever step it stopped at.
	streamDeliveriesMigration = "DELIVERIES_MIGRATION"
	// migrationSubject is the holding stream's one subject.
	migrationSubject = "scanwire.migration.deliveries"
	// fencedSubjects replaces the old stream's subjects while it is
	// emptied, so that no publisher adds to it: a job or a retry published
	// meanwhile fails, and its publisher naks the message it came from
	// and tries again later (docs/design.md, section 9), by which time the
	// new stream takes it.
	fencedSubjects = "scanwire.migrating.deliveries.>"
	// migratedSubjectHeader keeps a held message's original subject.
	migratedSubjectHeader = "Scanwire-Migrated-Subject"
	// migratedPrefix renames the Nats- headers of a held message: the
	// holding stream would act on them (a schedule it does not allow, an
	// expectation, a dedupe id), so they are kept under another name.
	migratedPrefix = "Scanwire-Migrated-"
)

// restoredHeaders are the Nats- headers put back on a message when it
// returns to DELIVERIES: those that make a scheduled retry
// (docs/design.md, "Retries"), so that it fires as it would have. A past
// "@at" time is accepted again and fires at once (at the server's next
// scheduling tick). The others are dropped: a dedupe id or an
// expectation (Nats-Msg-Id, Nats-Expected-*) was checked when the job was
// first stored and would be checked again against the new stream, and
// the server's own (Nats-Rollup on a retry, Nats-Scheduler and
// Nats-Schedule-Next on a job a retry fired) would roll up or purge
// subjects of the new stream.
var restoredHeaders = map[string]bool{
	jetstream.ScheduleHeader:         true,
	jetstream.ScheduleTargetHeader:   true,
	jetstream.ScheduleSourceHeader:   true,
	jetstream.ScheduleTTLHeader:      true,
	jetstream.ScheduleTimeZoneHeader: true,
	jetstream.ScheduleRollupHeader:   true,
}

// migrateDeliveries makes DELIVERIES a stream of config want when it is
// still the work queue of an earlier release, keeping the jobs and
// retries it holds, in order, on their subjects. It is resumable: after a
// crash at any step, the next call finishes the migration, storing no
// message twice (if it runs within the dedupe window, see move). It
// does nothing to a stream that was already migrated
// or never existed.
func migrateDeliveries(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	old, err := js.Stream(ctx, StreamDeliveries)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return err
	case old.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy:
		if err := holdDeliveries(ctx, js, old, want); err != nil {
			return err
		}
	}
	hold, err := js.Stream(ctx, streamDeliveriesMigration)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // nothing held: no migration under way
	}
	if err != nil {
		return err
	}
	if _, err := js.CreateOrUpdateStream(ctx, want); err != nil {
		return fmt.Errorf("create %s: %w", want.Name, err)
	}
	if err := move(ctx, js, hold, "migrated", fromHolding); err != nil {
		return fmt.Errorf("move back from %s: %w", streamDeliveriesMigration, err)
	}
	if err := js.DeleteStream(ctx, streamDeliveriesMigration); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete %s: %w", streamDeliveriesMigration, err)
	}
	return nil
}

// holdDeliveries fences the old work queue old, moves every message it
// holds to the holding stream (created with want's replicas, or reused
// from an earlier run), and deletes it.
func holdDeliveries(ctx context.Context, js jetstream.JetStream, old jetstream.Stream, want jetstream.StreamConfig) error {
	if cfg := old.CachedInfo().Config; len(cfg.Subjects) != 1 || cfg.Subjects[0] != fencedSubjects {
		cfg.Subjects = []string{fencedSubjects}
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("fence %s: %w", StreamDeliveries, err)
		}
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        streamDeliveriesMigration,
		Description: "DELIVERIES while it changes from a work queue to limits retention",
		Subjects:    []string{migrationSubject},
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  want.Duplicates,
		Storage:     jetstream.FileStorage,
		Replicas:    want.Replicas,
	}); err != nil {
		return fmt.Errorf("create %s: %w", streamDeliveriesMigration, err)
	}
	if err := move(ctx, js, old, "migrate", toHolding); err != nil {
		return fmt.Errorf("move %s: %w", StreamDeliveries, err)
	}
	if err := js.DeleteStream(ctx, StreamDeliveries); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete %s: %w", StreamDeliveries, err)
	}
	return nil
}

// move publishes every message of src, oldest first, as conv rewrites it,
// with the dedupe id <id>.<seq in src>, and deletes it from src once it is
// stored. So src holds what is still to move, and a run that stopped
// between the two steps publishes that message again with the same id,
// which the destination drops within its dedupe window. It reads up to
// the end as it is when it gets there: a retry falling due in the fenced
// old stream adds its job after the last message.
func move(ctx context.Context, js jetstream.JetStream, src jetstream.Stream, id string, conv func(*jetstream.RawStreamMsg) *nats.Msg) error {
	info, err := src.Info(ctx)
	if err != nil {
		return err
	}
	for seq, last := max(info.State.FirstSeq, 1), info.State.LastSeq; ; seq++ {
		if seq > last {
			if info, err = src.Info(ctx); err != nil {
				return err
			}
			if last = info.State.LastSeq; seq > last {
				return nil
			}
		}
		m, err := src.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get %d: %w", seq, err)
		}
		out := conv(m)
		out.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.%d", id, seq))
		if _, err := js.PublishMsg(ctx, out); err != nil {
			return fmt.Errorf("publish %d (%s): %w", seq, out.Subject, err)
		}
		if err := src.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("delete %d: %w", seq, err)
		}
	}
}

// toHolding is m as the holding stream stores it: on its subject, with m's
// subject in a header and m's Nats- headers renamed.
func toHolding(m *jetstream.RawStreamMsg) *nats.Msg {
	out := &nats.Msg{Subject: migrationSubject, Header: nats.Header{}, Data: m.Data}
	for k, vs := range m.Header {
		if isNatsHeader(k) {
			k = migratedPrefix + k
		}
		out.Header[k] = vs
	}
	out.Header.Set(migratedSubjectHeader, m.Subject)
	return out
}

// fromHolding is the held message m as it was in the old stream: on its
// subject, with its headers but for the Nats- ones that are not
// restoredHeaders.
func fromHolding(m *jetstream.RawStreamMsg) *nats.Msg {
	out := &nats.Msg{Subject: m.Header.Get(migratedSubjectHeader), Header: nats.Header{}, Data: m.Data}
	for k, vs := range m.Header {
		if k == migratedSubjectHeader || isNatsHeader(k) { // the holding stream's own
			continue
		}
		if orig, ok := strings.CutPrefix(k, migratedPrefix); ok {
			if !restoredHeaders[orig] {
				continue
			}
			k = orig
		}
		out.Header[k] = vs
	}
	return out
}

// isNatsHeader reports whether JetStream may act on the header k.
func isNatsHeader(k string) bool {
	return len(k) >= len("Nats-") && strings.EqualFold(k[:len("Nats-")], "Nats-")
}
