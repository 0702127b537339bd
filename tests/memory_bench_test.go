package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/jsonx"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/signing"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/services/delivery"
)

// Issue 12, point 5: with 100,000 subscriptions cached, and separately with
// a million jobs queued for a dead endpoint, the process's RSS stays under
// 300 MB and its goroutines bounded, while a healthy endpoint keeps its
// p99. The embedded nats-server runs in this process, so RSS (VmRSS of
// /proc/self/status) counts the server's memory too, and the test's own
// (receivers, the latency records); heap-MB is the Go heap in use
// (HeapInuse) and goroutines counts the server's goroutines as well.
//
// Both take minutes of setup and run once:
//
//	go test ./tests -run '^$' -bench Memory -benchtime 1x
//
// -memory.heapprofile DIR writes a heap profile of the process at the end
// of each measured run, before anything is stopped (the standard
// -memprofile is written after the pipelines have stopped).
var (
	memoryBacklog     = flag.Int("memory.backlog", 1_000_000, "jobs queued for the dead endpoint in BenchmarkMemoryDeadEndpointBacklog")
	memoryPerScan     = flag.Int("memory.perscan", 1, "jobs of the backlog per scan: its subjects are backlog/perscan (a subscription's jobs for one scan share one, jobs.Job.Subject)")
	memoryDrain       = flag.Duration("memory.drain", 20*time.Minute, "how long BenchmarkMemoryDeadEndpointBacklog waits for the backlog to be handed out")
	memoryHeapProfile = flag.String("memory.heapprofile", "", "directory for heap profiles taken at the end of each memory benchmark run")
)

// memoryHealthyEvents is how many events a healthy endpoint receives in
// each window, at memoryHealthyGap apart (50 events/s), whatever b.N. The
// rate is a quarter of BenchmarkIsolation's on purpose: on this project's
// machine the disk now gives about a thousand fsyncs a second, a few per
// event, and at 200 events/s the pipeline alone queues for seconds, which
// would hide what the subscriptions or the backlog cost.
const (
	memoryHealthyEvents = 1000
	memoryHealthyGap    = 20 * time.Millisecond
)

// BenchmarkMemorySubscriptions stores 100,000 subscriptions (1,000 tenants,
// 100 each, every one with its own URL and secret, half taking finding.*,
// half scan.finished) straight into the subscriptions bucket, waits until
// the cache holds them all, and reports the process's RSS, Go heap and
// goroutines at rest after a GC (RSS-MB, heap-MB, goroutines;
// RSS-released-MB once the runtime has returned its free pages) and at
// most during the run (RSS-peak-MB: VmHWM, reset when the run starts;
// heap-peak-MB, goroutines-peak: sampled every 100 ms), then a healthy
// endpoint's p50/p99 publish-to-receipt for 1,000 events at 50/s that
// match one of the subscriptions (tenant "bench", which holds only that
// one). setup-s is how long storing and caching
// the subscriptions took. subscriptions=1 is the same run with only the
// healthy endpoint's subscription, for comparison.
//
//	go test ./tests -run '^$' -bench MemorySubscriptions -benchtime 1x
func BenchmarkMemorySubscriptions(b *testing.B) {
	if testing.Short() {
		b.Skip("minutes of setup")
	}
	for _, total := range []int{1, 100_000} {
		b.Run(fmt.Sprintf("subscriptions=%d", total), func(b *testing.B) {
			mem := startMemoryRun(b)
			p := startPipeline(b, "")
			rec := newLatencyReceiver(b)
			id := p.subscribe(b, subscriptions.Subscription{Tenant: "bench", URL: rec.URL, Events: []string{"finding.*"}}).ID

			start := time.Now()
			storeSubscriptionDocs(b, p, total-1)
			stored := time.Since(start)
			eventually(b, 3*time.Minute, func() bool { return p.Subs.Len() >= total })
			setup := time.Since(start)
			b.Logf("%d subscriptions stored in %s (%.0f/s), cached in %s", total-1, stored.Round(time.Millisecond),
				float64(total-1)/stored.Seconds(), setup.Round(time.Millisecond))
			rest := mem.now()

			evs := healthyEvents(b, "bench", rec, id, memoryHealthyEvents)
			b.ResetTimer()
			publishAll(b, p.JS, evs, rec.sent, memoryHealthyGap)
			rec.wait(b)
			b.StopTimer()
			mem.profile(b)
			peak := mem.stop()

			rec.reportLatency(b)
			rest.report(b, peak)
			b.ReportMetric(setup.Seconds(), "setup-s")
		})
	}
}

// BenchmarkMemoryDeadEndpointBacklog queues a backlog of jobs (a million
// by default, -memory.backlog) for tenant "dead", whose one endpoint
// accepts connections and never answers (the attempt timeout is 2 s, so
// the gate finds it slow and defers its jobs: a nak for the first 5,000
// out, a scheduled message beyond), and measures a restarted pipeline
// working through it while healthy endpoints receive events at 50/s, in
// two windows of 1,000 events:
//
//   - behind: tenant "early"'s, published as the pipeline starts, so its
//     jobs queue in DELIVERIES behind the backlog (p50-behind-ms,
//     p99-behind-ms; a webhook not received by the end counts with the
//     time it has waited, so these are lower bounds then, and
//     behind-delivered says how many arrived);
//   - steady: tenant "bench"'s, published once delivery has handed out
//     every queued job (delivered, deferred, or retried: the backlog then
//     waits as scheduled messages), the state a dead endpoint's backlog
//     lives in (p50-ms, p99-ms). Skipped when the backlog is not handed
//     out within -memory.drain.
//
// It reports the process's RSS, Go heap and goroutines at most during the
// measured run (RSS-peak-MB, heap-peak-MB, goroutines-peak; sampled every
// 100 ms, VmHWM for RSS) and at rest after a GC at its end (RSS-MB,
// heap-MB, goroutines, RSS-released-MB); how long delivery took to hand
// the backlog out (drain-s) and how many jobs it had not yet handed out at
// the end (queued-left); the messages DELIVERIES holds at the end
// (deliveries-msgs); the dead endpoint's requests; and the deferrals by
// reason.
//
// The backlog is published straight into DELIVERIES as fan-out stores
// jobs (jobs.Job.Msg: each on a subject of its own), by a first process whose server syncs every two minutes
// rather than on every write and which runs no services: that makes a
// million stores take a minute rather than over a quarter of an hour on
// this machine's disk (about a thousand fsyncs a second). It is stopped (a
// shutdown syncs the store), and the measured process starts on the same
// data directory with the default, fsync on every write, and fan-out and
// delivery: what it reads, writes and holds does not depend on how the
// first process synced.
//
//	go test ./tests -run '^$' -bench MemoryDeadEndpointBacklog -benchtime 1x
func BenchmarkMemoryDeadEndpointBacklog(b *testing.B) {
	if testing.Short() {
		b.Skip("minutes of setup")
	}
	for _, backlog := range []int{0, *memoryBacklog} {
		b.Run(fmt.Sprintf("backlog=%d", backlog), func(b *testing.B) {
			dataDir := b.TempDir()
			dead := newHungEndpoints(b, 1)
			behind, steady := newLatencyReceiver(b), newLatencyReceiver(b)
			timeout := func(c *app.Config) { c.Delivery.Timeout = 2 * time.Second }

			// The first process: the subscriptions and the backlog.
			setup := startPipeline(b, dataDir, withSyncInterval(2*time.Minute), func(c *app.Config) { c.Services = nil })
			deadSub := setup.subscribe(b, subscriptions.Subscription{Tenant: "dead", URL: dead.servers[0].URL, Events: []string{"scan.started"}})
			behindID := setup.subscribe(b, subscriptions.Subscription{Tenant: "early", URL: behind.URL, Events: []string{"finding.*"}}).ID
			steadyID := setup.subscribe(b, subscriptions.Subscription{Tenant: "bench", URL: steady.URL, Events: []string{"finding.*"}}).ID
			start := time.Now()
			queueDeadJobs(b, setup, deadSub.ID, backlog)
			if backlog > 0 {
				b.Logf("%d jobs queued in %s (%.0f/s)", backlog, time.Since(start).Round(time.Millisecond), float64(backlog)/time.Since(start).Seconds())
			}
			setup.stop(b)

			// The measured process.
			mem := startMemoryRun(b)
			start = time.Now()
			p := startPipeline(b, dataDir, timeout)
			awaitConsumers(b, p.JS, p.services)
			b.Logf("restarted in %s", time.Since(start).Round(time.Millisecond))
			b.ResetTimer()
			evs := healthyEvents(b, "early", behind, behindID, memoryHealthyEvents)
			publishAll(b, p.JS, evs, behind.sent, memoryHealthyGap)
			drain, left := drainDeliveries(b, p, start.Add(*memoryDrain))
			if left == 0 {
				b.Logf("backlog handed out %s after the restart", time.Since(start).Round(time.Millisecond))
				waitFor(behind, 5*time.Minute)
				evs = healthyEvents(b, "bench", steady, steadyID, memoryHealthyEvents)
				publishAll(b, p.JS, evs, steady.sent, memoryHealthyGap)
				if !waitFor(steady, 5*time.Minute) {
					b.Errorf("the steady window's webhooks did not all arrive in 5m")
				}
			} else {
				b.Logf("%d jobs not handed out %s after the restart (-memory.drain); steady window skipped", left, *memoryDrain)
			}
			b.StopTimer()
			mem.profile(b)
			peak := mem.stop()
			rest := mem.now()

			rest.report(b, peak)
			if left == 0 {
				p50, p99, _ := percentilesSoFar(steady)
				b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			}
			p50, p99, delivered := percentilesSoFar(behind)
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-behind-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-behind-ms")
			b.ReportMetric(float64(delivered), "behind-delivered")
			b.ReportMetric(drain.Seconds(), "drain-s")
			b.ReportMetric(float64(left), "queued-left")
			b.ReportMetric(float64(streamState(b, p, natsx.StreamDeliveries).Msgs), "deliveries-msgs")
			_, peakInFlight, requests, _ := dead.stats()
			b.ReportMetric(float64(requests), "dead-requests")
			b.ReportMetric(float64(peakInFlight), "dead-inflight-peak")
			reportDeferrals(b, p)
		})
	}
}

// storeSubscriptionDocs writes n valid subscription documents straight
// into the subscriptions bucket (a KV put is a message on
// $KV.subscriptions.<key>), as many stores at once would: 1,000 tenants,
// each document with its own id, URL and secret.
func storeSubscriptionDocs(b *testing.B, p *pipeline, n int) {
	b.Helper()
	if n <= 0 {
		return
	}
	now := time.Now().UTC().Truncate(time.Second)
	publishMany(b, p.ClientURL(), n, func(i int) *nats.Msg {
		s := subscriptions.Subscription{
			ID:      subscriptions.NewID(),
			Tenant:  fmt.Sprintf("t%d", i%1000),
			URL:     fmt.Sprintf("https://h%d.example.com/hooks/scanwire", i),
			Events:  []string{[]string{"finding.*", "scan.finished"}[i%2]},
			Filter:  subscriptions.Filter{Targets: []string{"*.example.com"}},
			Profile: "standard-webhooks",
			Secrets: []subscriptions.Secret{{Secret: signing.NewStandardSecret(), Created: now}},
			Created: now,
			Updated: now,
		}
		if i == 0 {
			if err := s.Validate(); err != nil {
				b.Fatalf("generated subscription: %v", err)
			}
		}
		doc, err := jsonx.Marshal(&s)
		if err != nil {
			b.Fatal(err)
		}
		m := nats.NewMsg("$KV." + natsx.BucketSubscriptions + "." + subscriptions.Key(s.Tenant, s.ID))
		m.Data = doc
		return m
	})
}

// queueDeadJobs publishes n jobs for tenant dead's subscription straight
// into DELIVERIES, each as fan-out stores it: one scan.started event per
// job, -memory.perscan of them per scan, its structured form in the job,
// on its subscription's and scan's subject.
func queueDeadJobs(b *testing.B, p *pipeline, subID string, n int) {
	b.Helper()
	now := time.Now().UTC()
	publishMany(b, p.ClientURL(), n, func(i int) *nats.Msg {
		scan := "d" + strconv.Itoa(i/max(1, *memoryPerScan))
		data, _ := json.Marshal(map[string]any{"scan_id": scan, "target": "dead.example.com"})
		e := events.New("dead", testSource, events.TypeScanStarted, scan, data)
		structured, err := events.Structured(&e)
		if err != nil {
			b.Fatal(err)
		}
		j := jobs.Job{WebhookID: jobs.WebhookID(events.KeyOf(&e), subID), Tenant: "dead", SourceTenant: "dead", SubscriptionID: subID,
			EventID: e.ID(), EventType: e.Type(), ScanID: scan, Event: structured, Queued: now}
		m, err := j.Msg()
		if err != nil {
			b.Fatal(err)
		}
		return m
	})
}

// publishMany publishes n messages made by msg, asynchronously on a
// connection of its own, and returns once the server has stored them all.
// Only the publishes in flight are held (at most 4,096), never the n
// messages. A publish that fails is published again, synchronously, at the
// end; a stalled publisher waits for its acks and goes on.
func publishMany(t testing.TB, url string, n int, msg func(i int) *nats.Msg) {
	t.Helper()
	if n <= 0 {
		return
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var failed []*nats.Msg
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(time.Minute),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, _ error) {
			mu.Lock()
			failed = append(failed, m)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	complete := func() {
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(2 * time.Minute):
			t.Fatalf("%d publishes not acknowledged in 2m", js.PublishAsyncPending())
		}
	}
	for i := range n {
		m := msg(i)
		for {
			_, err := js.PublishMsgAsync(m, jetstream.WithStallWait(10*time.Second))
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				complete()
				continue
			}
			if err != nil {
				t.Fatalf("publish %s: %v", m.Subject, err)
			}
			break
		}
	}
	complete()
	if len(failed) > 0 {
		t.Logf("%d of %d publishes failed; publishing them again", len(failed), n)
	}
	for _, m := range failed {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := js.PublishMsg(ctx, m)
		cancel()
		if err != nil {
			t.Fatalf("publish %s again: %v", m.Subject, err)
		}
	}
}

// healthyEvents builds n finding events of tenant (100 scans, distinct
// types, so the limits admit them all) for one subscription, and registers
// their webhooks with rec.
func healthyEvents(b *testing.B, tenant string, rec *latencyReceiver, subID string, n int) []*nats.Msg {
	b.Helper()
	evs := make([]*nats.Msg, n)
	for i := range evs {
		scan := fmt.Sprintf("scan-%d", i%100)
		data, _ := json.Marshal(finding(scan, fmt.Sprintf("t%d", i), 7.5, "healthy finding"))
		e := events.New(tenant, testSource, events.TypeFindingHigh, scan, data)
		subject, _ := events.Subject(tenant, scan, events.TypeFindingHigh)
		m, err := events.ToMsg(context.Background(), subject, &e)
		if err != nil {
			b.Fatal(err)
		}
		m.Header.Set(nats.MsgIdHdr, events.KeyOf(&e))
		evs[i] = m
		rec.expect(e.ID(), jobs.WebhookID(events.KeyOf(&e), subID))
	}
	return evs
}

// drainDeliveries waits until the delivery consumer has nothing left to
// hand out (every queued job handed out at least once: delivered,
// deferred, or retried as a scheduled message), or until deadline. It
// returns how long it waited and how many jobs were still to hand out.
func drainDeliveries(b *testing.B, p *pipeline, deadline time.Time) (time.Duration, uint64) {
	b.Helper()
	start := time.Now()
	logged := start
	left := uint64(1)
	for {
		c, err := p.JS.Consumer(context.Background(), natsx.StreamDeliveries, delivery.ConsumerName(delivery.Config{}))
		if err == nil {
			if info, err := c.Info(context.Background()); err == nil {
				left = info.NumPending
				if time.Since(logged) > time.Minute {
					logged = time.Now()
					b.Logf("%s: %d jobs still queued, %d handed out and not settled", time.Since(start).Round(time.Second), info.NumPending, info.NumAckPending)
				}
			}
		}
		if left == 0 || time.Now().After(deadline) {
			return time.Since(start), left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor waits up to timeout for every webhook r expects.
func waitFor(r *latencyReceiver, timeout time.Duration) bool {
	select {
	case <-r.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// percentilesSoFar is r's p50 and p99 publish-to-receipt, a webhook
// published and not yet received counting with the time it has waited so
// far (a lower bound of its latency); delivered is how many arrived.
func percentilesSoFar(r *latencyReceiver) (p50, p99 time.Duration, delivered int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := slices.Clone(r.latency)
	delivered = len(l)
	now := time.Now()
	for webhook, ev := range r.eventOf {
		if at, sent := r.sentAt[ev]; sent && !r.seen[webhook] {
			l = append(l, now.Sub(at))
		}
	}
	slices.Sort(l)
	if len(l) == 0 {
		return 0, 0, 0
	}
	return l[len(l)*50/100], l[min(len(l)-1, len(l)*99/100)], delivered
}

// memoryRun samples the process every 100 ms from its start.
type memoryRun struct {
	stopSampling chan struct{}
	sampled      chan struct{}
	peak         memorySample
}

// memorySample is the process at one moment. rss is VmRSS, hwm VmHWM (the
// peak of VmRSS since the run started), heap the Go heap in use, released
// VmRSS once free pages are returned (see now).
type memorySample struct {
	rss, hwm, heap uint64
	released       uint64
	goroutines     int
}

// startMemoryRun returns what the process holds to the OS, resets the
// kernel's RSS high-water mark (clear_refs 5), and starts sampling.
func startMemoryRun(b *testing.B) *memoryRun {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset VmHWM (%v): RSS-peak-MB is the peak of the 100 ms samples", err)
	}
	m := &memoryRun{stopSampling: make(chan struct{}), sampled: make(chan struct{})}
	go func() {
		defer close(m.sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			s := sample()
			m.peak.rss = max(m.peak.rss, s.rss, s.hwm)
			m.peak.heap = max(m.peak.heap, s.heap)
			m.peak.goroutines = max(m.peak.goroutines, s.goroutines)
			select {
			case <-m.stopSampling:
				return
			case <-tick.C:
			}
		}
	}()
	b.Cleanup(func() { m.stop() })
	return m
}

// stop ends the sampling and returns the peaks; calling it twice is
// harmless.
func (m *memoryRun) stop() memorySample {
	select {
	case <-m.stopSampling:
	default:
		close(m.stopSampling)
	}
	<-m.sampled
	return m.peak
}

// now is the process at rest: after a GC, and (released) once the
// runtime has also returned every free page to the OS, which it otherwise
// does gradually.
func (m *memoryRun) now() memorySample {
	runtime.GC()
	s := sample()
	debug.FreeOSMemory()
	s.released = procStatus("VmRSS:")
	return s
}

// profile writes a heap profile to -memory.heapprofile, if given.
func (m *memoryRun) profile(b *testing.B) {
	if *memoryHeapProfile == "" {
		return
	}
	runtime.GC()
	name := filepath.Join(*memoryHeapProfile, filepath.Base(b.Name())+".heap.pprof")
	f, err := os.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
	b.Logf("heap profile: %s", name)
}

func (s memorySample) report(b *testing.B, peak memorySample) {
	const mb = 1 << 20
	b.ReportMetric(float64(s.rss)/mb, "RSS-MB")
	b.ReportMetric(float64(s.released)/mb, "RSS-released-MB")
	b.ReportMetric(float64(peak.rss)/mb, "RSS-peak-MB")
	b.ReportMetric(float64(s.heap)/mb, "heap-MB")
	b.ReportMetric(float64(peak.heap)/mb, "heap-peak-MB")
	b.ReportMetric(float64(s.goroutines), "goroutines")
	b.ReportMetric(float64(peak.goroutines), "goroutines-peak")
}

func sample() memorySample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := memorySample{heap: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
	s.rss, s.hwm = procStatus("VmRSS:"), procStatus("VmHWM:")
	return s
}

// procStatus reads one "Name:  N kB" line of /proc/self/status, in bytes.
func procStatus(field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte(field)); ok {
			fields := bytes.Fields(rest)
			if len(fields) == 0 {
				return 0
			}
			kb, _ := strconv.ParseUint(string(fields[0]), 10, 64)
			return kb << 10
		}
	}
	return 0
}
