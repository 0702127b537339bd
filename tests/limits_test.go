package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// publishFindings sends n findings of one scan; typeOf names each one's
// finding type.
func publishFindings(t *testing.T, p *pipeline, scan string, n int, typeOf func(i int) string) {
	t.Helper()
	for i := range n {
		data := finding(scan, typeOf(i), 7.5, fmt.Sprintf("finding %d", i))
		data["finding_id"] = fmt.Sprintf("f%d", i)
		p.publish(t, "acme", events.TypeFindingHigh, scan, data)
	}
}

func stats(t *testing.T, p *pipeline, scan string) limits.Stats {
	t.Helper()
	st, err := p.Limits.ScanStats(context.Background(), "acme", scan)
	if err != nil || len(st) != 1 {
		t.Fatalf("stats: %v %+v", err, st)
	}
	return st[0]
}

func TestLimitsPerTypeAndPerScan(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	r := newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"finding.*"}})

	publishFindings(t, p, "one-type", 15, func(int) string { return "sqli" })
	publishFindings(t, p, "many-types", 120, func(i int) string { return fmt.Sprintf("type-%d", i) })
	p.settle(t)
	eventually(t, 10*time.Second, func() bool { return r.count() >= 110 })
	p.settle(t)
	if n := r.count(); n != 110 {
		t.Errorf("%d deliveries, want 10 + 100", n)
	}
	if st := stats(t, p, "one-type"); st.Admitted != 10 || st.Suppressed != 5 || st.ByType["sqli"].Suppressed != 5 {
		t.Errorf("one-type stats %+v", st)
	}
	if st := stats(t, p, "many-types"); st.Admitted != 100 || st.Suppressed != 20 {
		t.Errorf("many-types stats %+v", st)
	}
}

// The limits hold when fan-out is stopped mid-stream and started again.
func TestLimitsHoldAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startPipeline(t, dir, func(c *app.Config) { c.Fanout.Workers = 2 })
	r := newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"finding.*"}})
	publishFindings(t, p, "s1", 120, func(i int) string { return fmt.Sprintf("type-%d", i) })
	eventually(t, 10*time.Second, func() bool { return r.count() >= 20 })
	p.stop(t)
	p = startPipeline(t, dir)
	eventually(t, 20*time.Second, func() bool { return uniqueIDs(r) >= 100 })
	p.settle(t)
	if n := uniqueIDs(r); n != 100 {
		t.Errorf("%d distinct deliveries after a restart, want exactly 100", n)
	}
	if st := stats(t, p, "s1"); st.Admitted != 100 || st.Suppressed != 20 {
		t.Errorf("stats %+v", st)
	}
}

// Two fan-out replicas deciding at once never let more than the limit pass.
func TestLimitsExactWithTwoReplicas(t *testing.T) {
	t.Parallel()
	ns, err := natsx.StartServer(natsx.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	var ps []*pipeline
	for range 2 {
		a, err := app.Start(context.Background(), app.Config{NATSURL: ns.ClientURL(), Topology: natsx.DefaultTopology(),
			Services: []string{app.ServiceFanout, app.ServiceDelivery}, AllowPrivateTargets: true, Log: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close(context.Background()) })
		awaitConsumers(t, a.JS, []string{app.ServiceFanout, app.ServiceDelivery})
		ps = append(ps, &pipeline{App: a})
	}
	r := newReceiver(t, nil)
	sub := ps[0].subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"finding.*"},
		Limits: subscriptions.Limits{FindingsPerScan: 30, FindingsPerType: 5}})
	eventually(t, 5*time.Second, func() bool { _, ok := ps[1].Subs.Get("acme", sub.ID); return ok })
	publishFindings(t, ps[0], "s1", 200, func(i int) string { return fmt.Sprintf("type-%d", i%10) })
	eventually(t, 20*time.Second, func() bool { return r.count() >= 30 })
	ps[0].settle(t)
	if n := uniqueIDs(r); n != 30 {
		t.Errorf("%d deliveries with limits 30 per scan and 5 per type, want 30", n)
	}
	st := stats(t, ps[0], "s1")
	for typ, ts := range st.ByType {
		if ts.Admitted > 5 {
			t.Errorf("type %s admitted %d, over the limit of 5", typ, ts.Admitted)
		}
	}
	if st.Admitted != 30 || st.Suppressed != 170 {
		t.Errorf("stats %+v", st)
	}
}

// An event fan-out sees again (a redelivery, or a scanner's retry after
// the dedupe window) gets the decision it got the first time: the admitted
// one's job is the same job (same webhook-id, stored once), the suppressed
// one produces none.
func TestRedeliveredEventsKeepTheirLimitDecision(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startPipeline(t, dir, func(c *app.Config) { c.Services = []string{app.ServiceFanout} })
	r := newReceiver(t, nil)
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"finding.*"},
		Limits: subscriptions.Limits{FindingsPerType: 1}})
	send := func(id, msgID string) {
		m := binaryMsg("scans.acme.s1.finding.high", with(with(validAttrs(id), "ce-id", id), nats.MsgIdHdr, msgID), goodFinding)
		publishRaw(t, p.JS, m)
	}
	send("admitted", "first-a")
	p.settle(t)
	send("suppressed", "first-b")
	p.settle(t)
	// The same events again, past the stream's dedupe (other Nats-Msg-Ids):
	// fan-out decides on them a second time.
	send("admitted", "again-a")
	send("suppressed", "again-b")
	p.settle(t)
	p.stop(t)

	p = startPipeline(t, dir) // now with delivery
	eventually(t, 10*time.Second, func() bool { return r.count() >= 1 })
	p.settle(t)
	if n := r.count(); n != 1 {
		t.Fatalf("%d deliveries, want only the admitted event's", n)
	}
	if got, want := r.requests()[0].Header.Get("webhook-id"), webhookID("acme", "admitted", sub.ID); got != want {
		t.Errorf("webhook-id %q, want %q", got, want)
	}
	if st := stats(t, p, "s1"); st.Admitted != 1 || st.Suppressed != 1 {
		t.Errorf("stats %+v: a decision was counted twice", st)
	}
}

// A scan's limits end on their own: the jobs that count its admitted
// findings leave DELIVERIES with the retention, and its record of
// suppressions expires.
func TestLimitRecordsExpire(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", func(c *app.Config) {
		c.Topology.LimitRetention, c.Topology.EventRetention = 3*time.Second, 3*time.Second
	})
	r := newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"finding.*"}, Limits: subscriptions.Limits{FindingsPerScan: 2}})
	publishFindings(t, p, "s1", 3, func(i int) string { return "xss" })
	// Looked for from the decision on, not after the deliveries, which a
	// busy machine can delay past the expiry.
	eventually(t, 10*time.Second, func() bool {
		st, err := p.Limits.ScanStats(context.Background(), "acme", "s1")
		return err == nil && len(st) == 1 && st[0].Admitted == 2 && st[0].Suppressed == 1
	})
	eventually(t, 10*time.Second, func() bool { return r.count() == 2 })
	eventually(t, 10*time.Second, func() bool {
		st, err := p.Limits.ScanStats(context.Background(), "acme", "s1")
		return err == nil && len(st) == 0
	})
}
