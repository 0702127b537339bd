package callbacks_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/callbacks"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/kvdoc"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

type fixture struct {
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	reg *callbacks.Registry
}

func start(t *testing.T) *fixture {
	t.Helper()
	js := natsxtest.JetStream(t)
	kv := natsxtest.KeyValue(t, js, natsx.BucketCallbacks)
	return &fixture{js: js, kv: kv, reg: callbacks.New(kv, js)}
}

// record reads the record of tenant's scan s1.
func (f *fixture) record(t *testing.T, tenant string) callbacks.Record {
	t.Helper()
	rec, rev, err := kvdoc.Get[callbacks.Record](t.Context(), f.kv, tenant+".s1")
	if err != nil || rev == 0 {
		t.Fatalf("record of %s.s1: revision %d, %v", tenant, rev, err)
	}
	return rec
}

// jobs returns how many callback jobs of tenant wait in DELIVERIES and the
// last one.
func (f *fixture) jobs(t *testing.T, tenant string) (int, *jobs.Job) {
	t.Helper()
	ctx := t.Context()
	subject := jobs.Filter(tenant, jobs.CallbackSubscription)
	s, err := f.js.Stream(ctx, natsx.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	if n == 0 {
		return 0, nil
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	j, err := jobs.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	return n, j
}

func finished(id string) []byte { return fmt.Appendf(nil, `{"id":%q,"data":"<a> & b"}`, id) }

func TestOneJobWhicheverEventComesFirst(t *testing.T) {
	t.Parallel()
	f := start(t)
	for _, startedFirst := range []bool{true, false} {
		tenant := fmt.Sprintf("started-first-%v", startedFirst)
		t.Run(tenant, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			steps := []func() error{
				func() error { return f.reg.Started(ctx, tenant, "s1", "https://hooks.example.com/cb") },
				func() error { return f.reg.Finished(ctx, tenant, "s1", "evt-1", finished("evt-1")) },
			}
			if !startedFirst {
				steps[0], steps[1] = steps[1], steps[0]
			}
			for _, step := range steps {
				if n, _ := f.jobs(t, tenant); n != 0 {
					t.Fatalf("%d jobs before both events were seen", n)
				}
				if err := step(); err != nil {
					t.Fatal(err)
				}
			}
			n, j := f.jobs(t, tenant)
			if n != 1 || j.CallbackURL != "https://hooks.example.com/cb" || j.EventID != "evt-1" || j.ScanID != "s1" {
				t.Fatalf("%d jobs, last %+v; want one for evt-1 to the callback URL", n, j)
			}
			if string(j.Event) != string(finished("evt-1")) {
				t.Errorf("job carries %s, want the scan.finished event byte for byte", j.Event)
			}
			if rec := f.record(t, tenant); !rec.Queued {
				t.Errorf("record %+v not marked queued", rec)
			}
			// Seen again, nothing more is queued.
			if err := f.reg.Finished(ctx, tenant, "s1", "evt-2", finished("evt-2")); err != nil {
				t.Fatal(err)
			}
			if n, _ := f.jobs(t, tenant); n != 1 {
				t.Errorf("%d jobs after a second scan.finished, want 1", n)
			}
		})
	}
}

// Replicas racing on one scan's events queue one job, and it is the one
// the record keeps: the job is made from the stored record, never from a
// racer's draft that then lost its compare-and-swap.
func TestConcurrentEventsQueueOneJob(t *testing.T) {
	t.Parallel()
	f := start(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 5 {
				var err error
				if w%2 == 0 {
					err = f.reg.Started(ctx, "acme", "s1", fmt.Sprintf("https://hooks.example.com/%d", w))
				} else {
					id := fmt.Sprintf("evt-%d-%d", w, i)
					err = f.reg.Finished(ctx, "acme", "s1", id, finished(id))
				}
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	rec := f.record(t, "acme")
	n, j := f.jobs(t, "acme")
	if n != 1 {
		t.Fatalf("%d jobs, want 1", n)
	}
	if !rec.Queued {
		t.Errorf("record %+v not marked queued", rec)
	}
	if j.CallbackURL != rec.URL || j.EventID != rec.FinishedID || string(j.Event) != string(rec.Finished) {
		t.Errorf("job to %s for %s, but the record keeps %s for %s", j.CallbackURL, j.EventID, rec.URL, rec.FinishedID)
	}
}

// The record is marked queued only once the job is published: when the
// publish fails, the record keeps the pair unqueued (the event is retried
// by fan-out), and the next sighting queues it.
func TestJobPublishedBeforeMarkedQueued(t *testing.T) {
	t.Parallel()
	f := start(t)
	ctx := t.Context()
	if err := f.reg.Started(ctx, "acme", "s1", "https://hooks.example.com/cb"); err != nil {
		t.Fatal(err)
	}
	broken := callbacks.New(f.kv, unpublishable{f.js})
	if err := broken.Finished(ctx, "acme", "s1", "evt-1", finished("evt-1")); !errors.Is(err, errPublish) {
		t.Fatalf("Finished with a failing publish: %v, want the publish error", err)
	}
	if rec := f.record(t, "acme"); rec.Queued {
		t.Fatalf("record %+v marked queued although the job was not published", rec)
	}
	if n, _ := f.jobs(t, "acme"); n != 0 {
		t.Fatalf("%d jobs, want 0", n)
	}
	if err := f.reg.Finished(ctx, "acme", "s1", "evt-1", finished("evt-1")); err != nil {
		t.Fatal(err)
	}
	if n, j := f.jobs(t, "acme"); n != 1 || j.EventID != "evt-1" {
		t.Errorf("%d jobs, last %+v; want one for evt-1", n, j)
	}
	if rec := f.record(t, "acme"); !rec.Queued {
		t.Errorf("record %+v not marked queued", rec)
	}
}

var errPublish = errors.New("publish refused on purpose")

// unpublishable is JetStream whose publishes fail.
type unpublishable struct{ jetstream.JetStream }

func (unpublishable) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return nil, errPublish
}
