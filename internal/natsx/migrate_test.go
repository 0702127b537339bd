package natsx_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

// The holding stream and the names migrate.go keeps a held message under.
// The resume tests build what a crashed migration leaves, so they spell
// them out.
const (
	holdingStream  = "DELIVERIES_MIGRATION"
	holdingSubject = "scanwire.migration.deliveries"
	fenced         = "scanwire.migrating.deliveries.>"
	target         = "deliveries.acme.sub1"
)

// deliveriesConfig is DELIVERIES as DefaultTopology wants it.
func deliveriesConfig(t *testing.T) jetstream.StreamConfig {
	t.Helper()
	cfgs := natsx.DefaultTopology().StreamConfigs()
	i := slices.IndexFunc(cfgs, func(c jetstream.StreamConfig) bool { return c.Name == natsx.StreamDeliveries })
	if i < 0 {
		t.Fatal("no DELIVERIES in StreamConfigs")
	}
	return cfgs[i]
}

// createOldDeliveries creates DELIVERIES as the work queue of the previous
// release, with its delivery consumer, and publishes n jobs on target,
// job-1 to job-n, each with a traceparent and a Nats-Msg-Id.
func createOldDeliveries(t *testing.T, js jetstream.JetStream, n int) jetstream.Stream {
	t.Helper()
	cfg := deliveriesConfig(t)
	cfg.Retention, cfg.MaxAge = jetstream.WorkQueuePolicy, 0
	s, err := js.CreateStream(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateConsumer(t.Context(), jetstream.ConsumerConfig{
		Durable: "delivery", FilterSubject: "deliveries.>", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		publishJob(t, js, i)
	}
	return s
}

func publishJob(t *testing.T, js jetstream.JetStream, i int) {
	t.Helper()
	m := nats.NewMsg(target)
	m.Data = fmt.Appendf(nil, "job-%d", i)
	m.Header.Set("traceparent", traceparent(i))
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("job-%d", i))
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
}

func traceparent(i int) string { return fmt.Sprintf("00-%032x-%016x-01", i, i) }

// wantJobs fails t unless msgs are job-1 to job-n in order on target, each
// with its traceparent.
func wantJobs(t *testing.T, msgs []*jetstream.RawStreamMsg, n int) {
	t.Helper()
	if len(msgs) != n {
		t.Fatalf("got %d jobs, want %d: %v", len(msgs), n, bodies(msgs))
	}
	for i, m := range msgs {
		if body := fmt.Sprintf("job-%d", i+1); string(m.Data) != body || m.Subject != target {
			t.Errorf("job %d: %s %q, want %s %q", i, m.Subject, m.Data, target, body)
		}
		if got := m.Header.Get("traceparent"); got != traceparent(i+1) {
			t.Errorf("job %d: traceparent %q, want %q", i, got, traceparent(i+1))
		}
	}
}

func bodies(msgs []*jetstream.RawStreamMsg) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Data))
	}
	return out
}

// wantMigrated fails t unless DELIVERIES has the wanted configuration and
// the holding stream is gone.
func wantMigrated(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	s, err := js.Stream(t.Context(), natsx.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.LimitsPolicy || !slices.Equal(cfg.Subjects, deliveriesConfig(t).Subjects) {
		t.Errorf("DELIVERIES: retention %v, subjects %v", cfg.Retention, cfg.Subjects)
	}
	if _, err := js.Stream(t.Context(), holdingStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("holding stream: got %v, want it deleted", err)
	}
}

// waitFired waits for the retry body to arrive on target as job number n,
// fired by the server from the schedule on subject sched, which it purges.
func waitFired(t *testing.T, js jetstream.JetStream, body, sched string, n int) {
	t.Helper()
	natsxtest.Eventually(t, "the retry to fire", func() bool {
		return len(natsxtest.Messages(t, js, natsx.StreamDeliveries, "deliveries.")) == n
	})
	msgs := natsxtest.Messages(t, js, natsx.StreamDeliveries, "deliveries.")
	if m := msgs[n-1]; string(m.Data) != body || m.Subject != target || m.Header.Get(jetstream.SchedulerHeader) != sched {
		t.Errorf("fired: %s %q %v, want %s %q from %s", m.Subject, m.Data, m.Header, target, body, sched)
	}
	if left := natsxtest.Messages(t, js, natsx.StreamDeliveries, "retries."); len(left) != 0 {
		t.Errorf("schedule still there after firing: %v", bodies(left))
	}
}

// TestMigrateWorkQueue: Ensure turns the old work queue into the limits
// stream, keeping its jobs in order and its scheduled retry working.
func TestMigrateWorkQueue(t *testing.T) {
	js := natsxtest.Connect(t, natsxtest.Server(t))
	createOldDeliveries(t, js, 3)
	retry := nats.NewMsg("retries.X.1")
	retry.Data = []byte("retry")
	retry.Header.Set("traceparent", traceparent(9))
	at := time.Now().Add(2 * time.Second)
	if _, err := js.PublishMsg(t.Context(), retry, jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(target)); err != nil {
		t.Fatal(err)
	}

	if err := natsx.DefaultTopology().Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	wantMigrated(t, js)
	wantJobs(t, natsxtest.Messages(t, js, natsx.StreamDeliveries, "deliveries."), 3)
	scheduled := natsxtest.Messages(t, js, natsx.StreamDeliveries, "retries.")
	if len(scheduled) != 1 {
		t.Fatalf("got %d scheduled retries, want 1", len(scheduled))
	}
	if h := scheduled[0].Header; h.Get(jetstream.ScheduleTargetHeader) != target || h.Get("traceparent") != traceparent(9) ||
		h.Get(jetstream.ScheduleHeader) != "@at "+at.UTC().Format(time.RFC3339) {
		t.Errorf("scheduled retry headers: %v", h)
	}
	waitFired(t, js, "retry", "retries.X.1", 4)
	if m := natsxtest.Messages(t, js, natsx.StreamDeliveries, "deliveries.")[3]; m.Time.Before(at.Truncate(time.Second)) {
		t.Errorf("retry fired at %v, before its time %v", m.Time, at)
	}

	// The new stream takes jobs on its own subjects.
	publishJob(t, js, 5)
}

// held is a message of the old stream as the holding stream keeps it: its
// subject in a header, its Nats- headers renamed, and the dedupe id
// migrate.<its seq in the old stream>.
func held(oldSeq int, subject, body string, natsHdr map[string]string, trace string) *nats.Msg {
	m := nats.NewMsg(holdingSubject)
	m.Data = []byte(body)
	m.Header.Set("Scanwire-Migrated-Subject", subject)
	m.Header.Set("traceparent", trace)
	for k, v := range natsHdr {
		m.Header.Set("Scanwire-Migrated-"+k, v)
	}
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("migrate.%d", oldSeq))
	return m
}

func createHolding(t *testing.T, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	s, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: holdingStream, Subjects: []string{holdingSubject}, Duplicates: time.Hour, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMigrateResumesMovingBack: a migration that stopped after the old
// stream was deleted, while moving the held messages back (the first one
// stored in DELIVERIES but not yet deleted from the holding stream), is
// finished by the next Ensure, each job stored once. A retry whose time
// passed while it was held still fires.
func TestMigrateResumesMovingBack(t *testing.T) {
	js := natsxtest.Connect(t, natsxtest.Server(t))
	createHolding(t, js)
	past := "@at " + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, m := range []*nats.Msg{
		held(1, target, "job-1", map[string]string{"Nats-Msg-Id": "job-1"}, traceparent(1)),
		// Restored, this expectation would be refused by the new stream.
		held(2, target, "job-2", map[string]string{"Nats-Msg-Id": "job-2", "Nats-Expected-Last-Sequence": "7"}, traceparent(2)),
		held(3, "retries.Y.2", "retry", map[string]string{
			"Nats-Schedule": past, "Nats-Schedule-Target": target, "Nats-Rollup": "sub",
		}, traceparent(9)),
	} {
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.CreateStream(t.Context(), deliveriesConfig(t)); err != nil {
		t.Fatal(err)
	}
	first := nats.NewMsg(target) // held seq 1, moved back before the crash
	first.Data = []byte("job-1")
	first.Header.Set("traceparent", traceparent(1))
	first.Header.Set(jetstream.MsgIDHeader, "migrated.1")
	if _, err := js.PublishMsg(t.Context(), first); err != nil {
		t.Fatal(err)
	}

	if err := natsx.DefaultTopology().Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	wantMigrated(t, js)
	msgs := natsxtest.Messages(t, js, natsx.StreamDeliveries, "deliveries.")
	if len(msgs) > 2 && string(msgs[2].Data) == "retry" {
		msgs = msgs[:2] // fired already
	}
	wantJobs(t, msgs, 2)
	waitFired(t, js, "retry", "retries.Y.2", 3)
}

// TestMigrateResumesHolding: a migration that stopped while moving the old
// stream to the holding stream (job-2 held but not yet deleted from the
// old stream) is finished by the next Ensure, each job stored once.
func TestMigrateResumesHolding(t *testing.T) {
	js := natsxtest.Connect(t, natsxtest.Server(t))
	old := createOldDeliveries(t, js, 3)
	cfg := old.CachedInfo().Config
	cfg.Subjects = []string{fenced}
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	createHolding(t, js)
	for i := 1; i <= 2; i++ {
		m := held(i, target, fmt.Sprintf("job-%d", i), map[string]string{"Nats-Msg-Id": fmt.Sprintf("job-%d", i)}, traceparent(i))
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.DeleteMsg(t.Context(), 1); err != nil {
		t.Fatal(err)
	}

	if err := natsx.DefaultTopology().Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	wantMigrated(t, js)
	wantJobs(t, natsxtest.Messages(t, js, natsx.StreamDeliveries, ""), 3)
}

// TestMigrateNothingToDo: Ensure leaves a DELIVERIES that already has
// limits retention as it is.
func TestMigrateNothingToDo(t *testing.T) {
	js := natsxtest.JetStream(t)
	for i := 1; i <= 3; i++ {
		publishJob(t, js, i)
	}
	before := natsxtest.Messages(t, js, natsx.StreamDeliveries, "")

	if err := natsx.DefaultTopology().Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	wantMigrated(t, js)
	after := natsxtest.Messages(t, js, natsx.StreamDeliveries, "")
	wantJobs(t, after, 3)
	for i := range after {
		if after[i].Sequence != before[i].Sequence || after[i].Header.Get(jetstream.MsgIDHeader) != before[i].Header.Get(jetstream.MsgIDHeader) {
			t.Errorf("message %d changed: seq %d -> %d, %v -> %v", i, before[i].Sequence, after[i].Sequence, before[i].Header, after[i].Header)
		}
	}
}
