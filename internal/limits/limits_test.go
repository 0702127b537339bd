package limits_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

func newLimiter(t *testing.T) *limits.Limiter {
	t.Helper()
	js := natsxtest.JetStream(t)
	return limits.New(js, natsxtest.KeyValue(t, js, natsx.BucketLimits))
}

// ask asks l about the finding eventID of type typ for scope s, with the
// job fan-out would store for it.
func ask(ctx context.Context, l *limits.Limiter, s limits.Scope, perScan, perType int, eventID, typ string) (limits.Decision, error) {
	j := jobs.Job{WebhookID: jobs.WebhookID(eventID, s.SubscriptionID), Tenant: s.Tenant, SourceTenant: s.Source, SubscriptionID: s.SubscriptionID,
		EventID: eventID, EventType: events.TypeFindingHigh, ScanID: s.ScanID, FindingType: typ, Event: []byte(`{}`)}
	m, err := j.Msg()
	if err != nil {
		return limits.Decision{}, err
	}
	return l.Admit(ctx, s, perScan, perType, limits.Entry{EventKey: eventID, Type: typ, Job: m})
}

// stored returns how many jobs are stored in scope s, retries and other
// copies not counted.
func stored(t testing.TB, js jetstream.JetStream, s limits.Scope) int {
	t.Helper()
	stream, err := js.Stream(t.Context(), natsx.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(jobs.ScopeFilter(s.Tenant, s.SubscriptionID, s.Source, s.ScanID)))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// stats returns the stats of one subscription of tenant acme for scan.
func stats(t *testing.T, l *limits.Limiter, sub, scan string) limits.Stats {
	t.Helper()
	all, err := l.ScanStats(t.Context(), "acme", scan)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if s.SubscriptionID == sub {
			return s
		}
	}
	t.Fatalf("no stats of %s for %s in %+v", sub, scan, all)
	return limits.Stats{}
}

// admitAll has 8 fan-out workers decide 80 distinct events at once and
// returns how many each decision went.
func admitAll(t *testing.T, l *limits.Limiter, key limits.Scope, perScan, perType int, typeOf func(i int) string) (admitted, suppressed int) {
	t.Helper()
	var a, s atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w * 10; i < w*10+10; i++ {
				d, err := ask(t.Context(), l, key, perScan, perType, fmt.Sprintf("evt-%d", i), typeOf(i))
				switch {
				case err != nil:
					t.Error(err)
				case d.Admitted:
					a.Add(1)
				default:
					s.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(a.Load()), int(s.Load())
}

func TestAdmitIsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	l := newLimiter(t)
	distinct := func(i int) string { return fmt.Sprintf("type-%d", i) }
	for _, tc := range []struct {
		name                         string
		perScan                      int
		wantAdmitted, wantSuppressed int
	}{
		{"under the limit", 1000, 80, 0},
		{"over the limit", 30, 30, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sub := "sub_" + strings.ReplaceAll(tc.name, " ", "-")
			a, s := admitAll(t, l, limits.Scope{Tenant: "acme", SubscriptionID: sub, Source: "acme", ScanID: "s1"}, tc.perScan, 1000, distinct)
			if a != tc.wantAdmitted || s != tc.wantSuppressed {
				t.Errorf("%d admitted and %d suppressed with findings_per_scan %d, want %d and %d", a, s, tc.perScan, tc.wantAdmitted, tc.wantSuppressed)
			}
			if st := stats(t, l, sub, "s1"); st.Admitted != tc.wantAdmitted || st.Suppressed != tc.wantSuppressed {
				t.Errorf("stats %+v, want %d admitted and %d suppressed", st, tc.wantAdmitted, tc.wantSuppressed)
			}
		})
	}
}

func TestPerTypeLimit(t *testing.T) {
	t.Parallel()
	l := newLimiter(t)
	// 80 events of 4 types, 20 each, at most 5 of a type and 100 in all.
	a, s := admitAll(t, l, limits.Scope{Tenant: "acme", SubscriptionID: "sub_T", Source: "acme", ScanID: "s1"}, 100, 5, func(i int) string { return fmt.Sprintf("type-%d", i%4) })
	if a != 20 || s != 60 {
		t.Errorf("%d admitted and %d suppressed, want 4 types x 5 = 20 and 60", a, s)
	}
	st := stats(t, l, "sub_T", "s1")
	if len(st.ByType) != 4 {
		t.Errorf("stats by type %v, want 4 types", st.ByType)
	}
	for typ, ts := range st.ByType {
		if ts.Admitted != 5 || ts.Suppressed != 15 {
			t.Errorf("type %s: %d admitted and %d suppressed, want 5 and 15", typ, ts.Admitted, ts.Suppressed)
		}
	}
	d, err := ask(t.Context(), l, limits.Scope{Tenant: "acme", SubscriptionID: "sub_T", Source: "acme", ScanID: "s1"}, 100, 5, "evt-new", "type-0")
	if err != nil || d.Admitted || !strings.Contains(d.Reason, `findings_per_type limit of 5 reached for "type-0"`) {
		t.Errorf("a sixth type-0 event: %+v, %v; want suppressed by the per-type limit", d, err)
	}
	d, err = ask(t.Context(), l, limits.Scope{Tenant: "acme", SubscriptionID: "sub_T", Source: "acme", ScanID: "s1"}, 100, 5, "evt-other", "type-9")
	if err != nil || !d.Admitted {
		t.Errorf("the first event of a new type: %+v, %v; want admitted", d, err)
	}
}

// An event seen again (a redelivery, at once from several workers) gets
// the decision it got first and is counted once.
func TestRedeliveredEventIsDecidedTheSame(t *testing.T) {
	t.Parallel()
	l := newLimiter(t)
	ctx := t.Context()
	key := limits.Scope{Tenant: "acme", SubscriptionID: "sub_R", Source: "acme", ScanID: "s1"}
	admit := func(id string) (bool, string) {
		d, err := ask(ctx, l, key, 100, 1, id, "xss")
		if err != nil {
			t.Fatal(err)
		}
		return d.Admitted, d.Reason
	}
	if ok, _ := admit("a"); !ok {
		t.Fatal("the first xss event was suppressed")
	}
	if ok, reason := admit("b"); ok || reason == "" {
		t.Fatalf("the second xss event, with 1 per type: admitted %v, reason %q", ok, reason)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if d, err := ask(ctx, l, key, 100, 1, "a", "xss"); err != nil || !d.Admitted {
				t.Errorf("redelivered admitted event: %+v, %v", d, err)
			}
			if d, err := ask(ctx, l, key, 100, 1, "b", "xss"); err != nil || d.Admitted || d.Reason == "" {
				t.Errorf("redelivered suppressed event: %+v, %v", d, err)
			}
		})
	}
	wg.Wait()
	if st := stats(t, l, "sub_R", "s1"); st.Admitted != 1 || st.Suppressed != 1 {
		t.Errorf("stats %+v: redeliveries were counted", st)
	}
}

func TestScanStats(t *testing.T) {
	t.Parallel()
	js := natsxtest.JetStream(t)
	kv := natsxtest.KeyValue(t, js, natsx.BucketLimits)
	l := limits.New(js, kv)
	ctx := t.Context()
	admit := func(tenant, sub, scan, id, typ string, perScan int) {
		t.Helper()
		if _, err := ask(ctx, l, limits.Scope{Tenant: tenant, SubscriptionID: sub, Source: tenant, ScanID: scan}, perScan, 10, id, typ); err != nil {
			t.Fatal(err)
		}
	}
	admit("acme", "sub_B", "s1", "e1", "sqli", 2)
	admit("acme", "sub_B", "s1", "e2", "xss", 2)
	admit("acme", "sub_B", "s1", "e3", "xss", 2) // over findings_per_scan
	admit("acme", "sub_A", "s1", "e1", "sqli", 2)
	admit("acme", "sub_A", "s2", "e9", "sqli", 2)  // another scan
	admit("other", "sub_C", "s1", "e1", "sqli", 2) // another tenant
	// A record that does not decode is left out, not fatal.
	if _, err := kv.Put(ctx, limits.Key("acme", "sub_Z", "acme", "s1"), []byte("{")); err != nil {
		t.Fatal(err)
	}

	all, err := l.ScanStats(ctx, "acme", "s1")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(all)
	want := `[{"subscription_id":"sub_A","scan_id":"s1","admitted":1,"suppressed":0,"by_type":{"sqli":{"admitted":1,"suppressed":0}}},` +
		`{"subscription_id":"sub_B","scan_id":"s1","admitted":2,"suppressed":1,"by_type":{"sqli":{"admitted":1,"suppressed":0},"xss":{"admitted":1,"suppressed":1}}}]`
	if string(got) != want {
		t.Errorf("ScanStats\n got %s\nwant %s", got, want)
	}
	if none, err := l.ScanStats(ctx, "acme", "s-none"); err != nil || len(none) != 0 {
		t.Errorf("stats of a scan without records: %+v, %v", none, err)
	}
}

// Past the suppressed events a record remembers, suppressions are still
// counted.
func TestSuppressedOverflowIsCounted(t *testing.T) {
	t.Parallel()
	js := natsxtest.JetStream(t)
	kv := natsxtest.KeyValue(t, js, natsx.BucketLimits)
	l := limits.New(js, kv)
	key := limits.Scope{Tenant: "acme", SubscriptionID: "sub_O", Source: "acme", ScanID: "s1"}
	rec := limits.Record{Admitted: map[string]string{"a": "sqli"}, Suppressed: map[string]string{}}
	for i := range 1000 {
		rec.Suppressed[fmt.Sprintf("s%d", i)] = "sqli"
	}
	natsxtest.PutJSON(t, kv, limits.Key(key.Tenant, key.SubscriptionID, key.Source, key.ScanID), rec)
	for _, id := range []string{"x1", "x2", "x2"} {
		if d, err := ask(t.Context(), l, key, 1, 10, id, "xss"); err != nil || d.Admitted {
			t.Fatalf("admit %s over findings_per_scan 1: %+v, %v", id, d, err)
		}
	}
	// x2's second sighting is not remembered as suppressed: it counts
	// again, the documented cost of the bound.
	if st := stats(t, l, "sub_O", "s1"); st.Admitted != 1 || st.Suppressed != 1003 {
		t.Errorf("stats %+v, want 1 admitted and 1000 + 3 suppressed", st)
	}
}

// A partner's subscription keeps one record per customer scan: the same
// scan id of two customers is counted apart, and stats name the customer.
// The tenant's own scan of that id is a third record.
func TestCustomersCountedApart(t *testing.T) {
	t.Parallel()
	l := newLimiter(t)
	for _, source := range []string{"mssp", "acme", "globex"} {
		for i := range 3 {
			d, err := ask(t.Context(), l, limits.Scope{Tenant: "mssp", SubscriptionID: "sub_P", Source: source, ScanID: "s1"}, 2, 10, fmt.Sprintf("%s-%d", source, i), "xss")
			if err != nil {
				t.Fatal(err)
			}
			if d.Admitted != (i < 2) {
				t.Errorf("%s finding %d admitted=%v; each customer has its own 2", source, i, d.Admitted)
			}
		}
	}
	all, err := l.ScanStats(t.Context(), "mssp", "s1")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]limits.Stats{}
	for _, s := range all {
		got[s.Customer] = s
	}
	for _, c := range []string{"", "acme", "globex"} { // "": the partner's own scan
		if s := got[c]; s.SubscriptionID != "sub_P" || s.Admitted != 2 || s.Suppressed != 1 {
			t.Errorf("stats of customer %q: %+v, want sub_P with 2 admitted, 1 suppressed", c, s)
		}
	}
	if len(all) != 3 {
		t.Errorf("%d stats entries, want 3: %+v", len(all), all)
	}
}

// Ids that are not subject tokens never become part of a filter: "*" must
// not read every scan's records.
func TestScanStatsRefusesWildcards(t *testing.T) {
	t.Parallel()
	l := newLimiter(t)
	if _, err := ask(t.Context(), l, limits.Scope{Tenant: "acme", SubscriptionID: "sub_W", Source: "acme", ScanID: "s1"}, 2, 2, "e1", "xss"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ tenant, scan string }{{"acme", "*"}, {"acme", ">"}, {"*", "s1"}, {"acme", "s1.x"}, {"acme", ""}} {
		if st, err := l.ScanStats(t.Context(), c.tenant, c.scan); !errors.Is(err, limits.ErrBadID) {
			t.Errorf("ScanStats(%q, %q) = %+v, %v; want ErrBadID", c.tenant, c.scan, st, err)
		}
	}
}

// A hot scan: hundreds of findings decided at once by two replicas' many
// workers. Every call gets an answer, the cap is exact (the jobs stored
// are the jobs admitted), and each replica writes its queued suppressions
// together: the record took far fewer writes than suppressions.
func TestHotScanSharesWrites(t *testing.T) {
	t.Parallel()
	js := natsxtest.JetStream(t)
	kv := natsxtest.KeyValue(t, js, natsx.BucketLimits)
	replicas := []*limits.Limiter{limits.New(js, kv), limits.New(js, kv)}
	key := limits.Scope{Tenant: "acme", SubscriptionID: "sub_H", Source: "acme", ScanID: "hot"}
	const perReplica, perScan = 200, 50
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for r, l := range replicas {
		for i := range perReplica {
			wg.Go(func() {
				d, err := ask(t.Context(), l, key, perScan, perScan, fmt.Sprintf("evt-%d-%d", r, i), "xss")
				if err != nil {
					t.Error(err)
				}
				if d.Admitted {
					admitted.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if n := admitted.Load(); n != perScan {
		t.Errorf("%d admitted, want exactly %d", n, perScan)
	}
	if n := stored(t, js, key); n != perScan {
		t.Errorf("%d jobs stored, want exactly %d", n, perScan)
	}
	e, err := kv.Get(t.Context(), limits.Key(key.Tenant, key.SubscriptionID, key.Source, key.ScanID))
	if err != nil {
		t.Fatal(err)
	}
	if suppressed := 2*perReplica - perScan; e.Revision() >= uint64(suppressed) {
		t.Errorf("the record took %d writes for %d suppressions: they were not written together", e.Revision(), suppressed)
	}
	t.Logf("%d suppressions in %d writes", 2*perReplica-perScan, e.Revision())
}

// The jobs are the count: a limiter that starts afresh (a restart) decides
// on what is stored, a finding asked about again stores nothing more, a
// job another replica stored in the scope sends the limiter to read it
// rather than fail, and copies of jobs (a retry) do not count.
func TestJobsAreTheCount(t *testing.T) {
	t.Parallel()
	js := natsxtest.JetStream(t)
	kv := natsxtest.KeyValue(t, js, natsx.BucketLimits)
	s := limits.Scope{Tenant: "acme", SubscriptionID: "sub_J", Source: "acme", ScanID: "s1"}
	first, replica := limits.New(js, kv), limits.New(js, kv)
	for _, id := range []string{"e1", "e2"} {
		if d, err := ask(t.Context(), first, s, 4, 10, id, "xss"); err != nil || !d.Admitted {
			t.Fatalf("%s: %+v, %v", id, d, err)
		}
	}
	// A retry of e1's job, on its copy subject.
	j := jobs.Job{WebhookID: jobs.WebhookID("e1", s.SubscriptionID), Tenant: "acme", SourceTenant: "acme", SubscriptionID: s.SubscriptionID,
		EventID: "e1", EventType: events.TypeFindingHigh, ScanID: "s1", FindingType: "xss", Event: []byte(`{}`), Attempt: 1}
	m, err := j.Msg()
	if err != nil {
		t.Fatal(err)
	}
	m.Subject = j.CopySubject()
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	// The replica stores e3; first's count does not know of it.
	if d, err := ask(t.Context(), replica, s, 4, 10, "e3", "sqli"); err != nil || !d.Admitted {
		t.Fatalf("e3 by the replica: %+v, %v", d, err)
	}
	if d, err := ask(t.Context(), first, s, 4, 10, "e4", "xss"); err != nil || !d.Admitted {
		t.Fatalf("e4 after the replica's e3: %+v, %v", d, err)
	}
	restarted := limits.New(js, kv)
	if d, err := ask(t.Context(), restarted, s, 4, 10, "e5", "xss"); err != nil || d.Admitted {
		t.Errorf("e5 over the limit of 4, after a restart: %+v, %v", d, err)
	}
	for _, id := range []string{"e1", "e3", "e4"} {
		if d, err := ask(t.Context(), restarted, s, 4, 10, id, "xss"); err != nil || !d.Admitted {
			t.Errorf("%s asked again after a restart: %+v, %v", id, d, err)
		}
	}
	if n := stored(t, js, s); n != 4 {
		t.Errorf("%d jobs stored, want 4", n)
	}
	if st := stats(t, restarted, "sub_J", "s1"); st.Admitted != 4 || st.ByType["xss"].Admitted != 3 || st.ByType["sqli"].Admitted != 1 || st.Suppressed != 1 {
		t.Errorf("stats %+v, want 4 admitted (3 xss, 1 sqli) and 1 suppressed", st)
	}
}

// Jobs that are not findings are stored once and never count against the
// limits.
func TestQueueStoresOnceAndCountsNot(t *testing.T) {
	t.Parallel()
	js := natsxtest.JetStream(t)
	l := limits.New(js, natsxtest.KeyValue(t, js, natsx.BucketLimits))
	s := limits.Scope{Tenant: "acme", SubscriptionID: "sub_Q", Source: "acme", ScanID: "s1"}
	started := func(id string) limits.Entry {
		j := jobs.Job{WebhookID: jobs.WebhookID(id, s.SubscriptionID), Tenant: "acme", SourceTenant: "acme", SubscriptionID: s.SubscriptionID,
			EventID: id, EventType: events.TypeScanStarted, ScanID: "s1", Event: []byte(`{}`)}
		m, err := j.Msg()
		if err != nil {
			t.Fatal(err)
		}
		return limits.Entry{EventKey: id, Job: m}
	}
	for _, id := range []string{"start-1", "start-1", "start-2", "start-1"} {
		if err := l.Queue(t.Context(), s, started(id)); err != nil {
			t.Fatal(err)
		}
	}
	if n := stored(t, js, s); n != 2 {
		t.Errorf("%d jobs stored, want 2: each event's once", n)
	}
	if d, err := ask(t.Context(), l, s, 1, 1, "f1", "xss"); err != nil || !d.Admitted {
		t.Errorf("the first finding beside two scan.started jobs, limit 1: %+v, %v", d, err)
	}
}

// A record from before the jobs were the count still counts its admitted
// findings, once, and a redelivered one of them gets its job, once.
func TestAdmittedRecordsStillCount(t *testing.T) {
	t.Parallel()
	js := natsxtest.JetStream(t)
	kv := natsxtest.KeyValue(t, js, natsx.BucketLimits)
	s := limits.Scope{Tenant: "acme", SubscriptionID: "sub_L", Source: "acme", ScanID: "s1"}
	natsxtest.PutJSON(t, kv, limits.Key(s.Tenant, s.SubscriptionID, s.Source, s.ScanID), limits.Record{Admitted: map[string]string{"old-1": "xss", "old-2": "sqli"}})
	l := limits.New(js, kv)
	for _, c := range []struct {
		id    string
		admit bool
	}{{"old-1", true}, {"new-1", true}, {"new-2", false}, {"old-1", true}} {
		if d, err := ask(t.Context(), l, s, 3, 10, c.id, "xss"); err != nil || d.Admitted != c.admit {
			t.Errorf("%s: %+v, %v; want admitted %v", c.id, d, err, c.admit)
		}
	}
	if n := stored(t, js, s); n != 2 {
		t.Errorf("%d jobs stored, want old-1's and new-1's, once each", n)
	}
	if st := stats(t, l, "sub_L", "s1"); st.Admitted != 3 || st.Suppressed != 1 || st.ByType["sqli"].Admitted != 1 {
		t.Errorf("stats %+v, want 3 admitted (one sqli) and 1 suppressed", st)
	}
}
