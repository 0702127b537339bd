package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/profiles"
	"github.com/scanwire/scanwire/internal/signing"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/services/delivery"
)

// BenchmarkPipeline pushes b.N events through publish, fan-out, delivery
// and local receivers, published as fast as the publisher can, and reports
// deliveries/s and the publish-to-receipt latency. In the same run it
// measures a bare JetStream publish-and-consume loop on the same server
// settings, and reports our event rate as a fraction of it.
//
// It also shows the writes, from the server's own statistics (each
// stream's LastSeq and message count, KV buckets included, before the run
// and once the pipeline has settled after it; writes_test.go says what
// counts and why): per delivered webhook, the messages each stream stored
// (<stream>-stored/delivery), the jobs removed from the DELIVERIES work
// queue (DELIVERIES-removed/delivery), all of them together
// (writes/delivery: with sync_interval always each is an fsync unless it
// was part of an atomic batch), the account's JetStream API calls
// (api-calls/delivery); the bare loop's
// writes per message (bare-writes/msg), deliveries/s over the bare loop's
// msgs/s (deliveries-ratio-to-bare; ratio-to-bare is events/s over it),
// the ratio of writes per delivery to writes per bare message
// (writes-ratio-to-bare), and both as rates (writes/s, bare-writes/s:
// with fsync on every write, the fsyncs a second each sustained). Beside
// the signed-POST loop's rate (post-loop/s, deliveries-ratio-to-post) it
// reports the ratio a pipeline with no logic of its own would reach when
// the cores are the bound (ceiling-ratio-to-post: the POST plus the
// event's and the job's JetStream hops, each at the bare loop's cost).
//
//	go test ./tests -run '^$' -bench Pipeline -benchtime 3000x
func BenchmarkPipeline(b *testing.B) {
	for _, mode := range []struct {
		name string
		sync time.Duration
	}{{"sync=always", 0}, {"sync=2m", 2 * time.Minute}} {
		for _, subs := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/subs=%d", mode.name, subs), func(b *testing.B) {
				p := startPipeline(b, "", withSyncInterval(mode.sync))
				rec := newLatencyReceiver(b)
				var ids []string
				for range subs {
					ids = append(ids, p.subscribe(b, subscriptions.Subscription{Tenant: "bench", URL: rec.URL, Events: []string{"finding.*"}}).ID)
				}
				evs := benchEvents(b, rec, ids, b.N)
				before := readStoreStats(b, p.Server)
				b.ResetTimer()
				start := time.Now()
				publishAll(b, p.JS, evs, rec.sent, 0)
				rec.wait(b)
				elapsed := time.Since(start)
				b.StopTimer()
				writes := diffStoreStats(before, settle(b, p.Server))

				rate := float64(b.N) / elapsed.Seconds()
				deliveries := b.N * subs
				rec.reportLatency(b)
				b.ReportMetric(rate, "events/s")
				b.ReportMetric(rate*float64(subs), "deliveries/s")
				writes.report(b, deliveries)
				b.ReportMetric(float64(writes.total())/elapsed.Seconds(), "writes/s")
				post := signedPostLoop(b, rec.URL, b.N*subs)
				b.ReportMetric(post, "post-loop/s")
				b.ReportMetric(rate*float64(subs)/post, "deliveries-ratio-to-post")
				bare, bareWrites := bareJetStream(b, p.JS, p.Server, b.N)
				b.ReportMetric(bare, "bare-msgs/s")
				b.ReportMetric(rate/bare, "ratio-to-bare")
				b.ReportMetric(rate*float64(subs)/bare, "deliveries-ratio-to-bare")
				// The most any pipeline of this shape could reach on this
				// machine when its cores are the bound: per delivery, the
				// POST and 1+1/subs JetStream hops (the event, shared by the
				// subscriptions, and the job), each costing what the bare
				// loop's message and the POST loop's request cost, and
				// nothing else (no validation, matching, span or attempt).
				ceiling := 1 / (1/post + (1+1/float64(subs))/bare)
				b.ReportMetric(ceiling/post, "ceiling-ratio-to-post")
				bareWritesPerMsg := float64(bareWrites) / float64(b.N)
				b.ReportMetric(bareWritesPerMsg, "bare-writes/msg")
				b.ReportMetric(bare*bareWritesPerMsg, "bare-writes/s")
				b.ReportMetric(float64(writes.total())/float64(deliveries)/bareWritesPerMsg, "writes-ratio-to-bare")
			})
		}
	}
}

// BenchmarkStages runs fan-out and delivery one after the other rather
// than together: the events are published and fanned out with no delivery
// running (fanout-events/s, until every job is stored), then delivery
// starts and sends the backlog to one healthy endpoint (delivery-jobs/s).
// Each has the two cores to itself, which says which one bounds the flood.
//
//	go test ./tests -run '^$' -bench Stages -benchtime 8000x
func BenchmarkStages(b *testing.B) {
	for _, mode := range []struct {
		name string
		sync time.Duration
	}{{"sync=always", 0}, {"sync=2m", 2 * time.Minute}} {
		b.Run(mode.name, func(b *testing.B) {
			p := startPipeline(b, "", withSyncInterval(mode.sync), withServices(app.ServiceFanout))
			rec := newLatencyReceiver(b)
			id := p.subscribe(b, subscriptions.Subscription{Tenant: "bench", URL: rec.URL, Events: []string{"finding.*"}}).ID
			evs := benchEvents(b, rec, []string{id}, b.N)
			b.ResetTimer()
			start := time.Now()
			publishAll(b, p.JS, evs, rec.sent, 0)
			for streamState(b, p, natsx.StreamDeliveries).Msgs < uint64(b.N) {
				time.Sleep(5 * time.Millisecond)
			}
			fanout := time.Since(start)
			startReplica(b, p, withServices(app.ServiceDelivery))
			start = time.Now()
			rec.wait(b)
			deliver := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/fanout.Seconds(), "fanout-events/s")
			b.ReportMetric(float64(b.N)/deliver.Seconds(), "delivery-jobs/s")
		})
	}
}

// BenchmarkPipelinePaced publishes at a steady rate below saturation and
// reports the latency a scanner fleet at that rate would see.
//
//	go test ./tests -run '^$' -bench PipelinePaced -benchtime 3000x
func BenchmarkPipelinePaced(b *testing.B) {
	for _, c := range []struct {
		sync time.Duration
		rate int
	}{{0, 250}, {0, 500}, {0, 1000}, {2 * time.Minute, 1000}, {2 * time.Minute, 2000}} {
		name := fmt.Sprintf("sync=always/rate=%d", c.rate)
		if c.sync > 0 {
			name = fmt.Sprintf("sync=%s/rate=%d", strings.TrimSuffix(c.sync.String(), "0s"), c.rate)
		}
		b.Run(name, func(b *testing.B) {
			p := startPipeline(b, "", withSyncInterval(c.sync))
			rec := newLatencyReceiver(b)
			id := p.subscribe(b, subscriptions.Subscription{Tenant: "bench", URL: rec.URL, Events: []string{"finding.*"}}).ID
			evs := benchEvents(b, rec, []string{id}, b.N)
			b.ResetTimer()
			publishAll(b, p.JS, evs, rec.sent, time.Second/time.Duration(c.rate))
			rec.wait(b)
			b.StopTimer()
			rec.reportLatency(b)
		})
	}
}

// BenchmarkIsolation reports healthy endpoint B's latency alone and while
// endpoint A hangs with a thousand jobs queued.
//
//	go test ./tests -run '^$' -bench Isolation -benchtime 500x
func BenchmarkIsolation(b *testing.B) {
	for _, withA := range []bool{false, true} {
		b.Run(fmt.Sprintf("hung-endpoint=%v", withA), func(b *testing.B) {
			p := startPipeline(b, "")
			rec := newLatencyReceiver(b)
			id := p.subscribe(b, subscriptions.Subscription{Tenant: "bench", URL: rec.URL, Events: []string{"finding.*"}}).ID
			if withA {
				hang := make(chan struct{})
				a := newReceiverWith(b, func(int, http.ResponseWriter) { <-hang })
				b.Cleanup(func() { close(hang) })
				p.subscribe(b, subscriptions.Subscription{Tenant: "hung", URL: a.URL, Events: []string{"scan.started"}})
				for i := range 1000 {
					scan := fmt.Sprintf("a%d", i)
					p.publish(b, "hung", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t"})
				}
			}
			evs := benchEvents(b, rec, []string{id}, b.N)
			b.ResetTimer()
			publishAll(b, p.JS, evs, rec.sent, 5*time.Millisecond)
			rec.wait(b)
			b.StopTimer()
			rec.reportLatency(b)
		})
	}
}

// BenchmarkHungEndpoints reports healthy tenant B's latency at 200 events/s
// alone and while tenant A's four endpoints (four hosts and ports) hang
// with 2,000 of A's jobs queued (500 events, one job per endpoint), at the
// default 256 workers: the fairness rules (tenant share, slow budget,
// scheduled deferrals) at work. Beside B's p50/p99 it reports A's requests
// in flight at most (its share is 128, the slow budget 64), A's requests
// in all, the jobs deferred by reason, the peak of the delivery consumer's
// ack-pending set, and how many messages a second DELIVERIES stored beyond
// B's jobs (A's deferred copies and retries, and their schedules falling
// due: the write cost of A's backlog).
//
//	go test ./tests -run '^$' -bench HungEndpoints -benchtime 2000x
func BenchmarkHungEndpoints(b *testing.B) {
	for _, withA := range []bool{false, true} {
		b.Run(fmt.Sprintf("hung-tenant=%v", withA), func(b *testing.B) {
			p := startPipeline(b, "")
			rec := newLatencyReceiver(b)
			id := p.subscribe(b, subscriptions.Subscription{Tenant: "bench", URL: rec.URL, Events: []string{"finding.*"}}).ID
			var hung *hungEndpoints
			if withA {
				hung = newHungEndpoints(b, 4)
				for _, s := range hung.servers {
					p.subscribe(b, subscriptions.Subscription{Tenant: "hung", URL: s.URL, Events: []string{"scan.started"}})
				}
				var queued []*nats.Msg
				for i := range 500 {
					scan := fmt.Sprintf("a%d", i)
					queued = append(queued, eventMsg(b, "hung", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t"}))
				}
				publishBurst(b, p.JS, queued)
				// Every job of A queued (its 2,000 are DELIVERIES' first
				// messages), and A's endpoints hanging.
				eventually(b, 30*time.Second, func() bool { return deliveriesLastSeq(b, p) >= 2000 })
				eventually(b, 30*time.Second, func() bool { inFlight, _, _, _ := hung.stats(); return inFlight >= 64 })
			}
			evs := benchEvents(b, rec, []string{id}, b.N)
			firstSeq := deliveriesLastSeq(b, p)
			var peakAckPending int
			stopSampling := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				for {
					select {
					case <-stopSampling:
						return
					case <-time.After(100 * time.Millisecond):
						c, err := p.JS.Consumer(context.Background(), natsx.StreamDeliveries, delivery.ConsumerName(delivery.Config{}))
						if err != nil {
							continue
						}
						if info, err := c.Info(context.Background()); err == nil {
							peakAckPending = max(peakAckPending, info.NumAckPending)
						}
					}
				}
			}()
			b.ResetTimer()
			start := time.Now()
			publishAll(b, p.JS, evs, rec.sent, 5*time.Millisecond)
			rec.wait(b)
			elapsed := time.Since(start)
			b.StopTimer()
			close(stopSampling)
			<-sampled
			stored := deliveriesLastSeq(b, p) - firstSeq

			rec.reportLatency(b)
			b.ReportMetric(float64(peakAckPending), "ack-pending-peak")
			b.ReportMetric((float64(stored)-float64(b.N))/elapsed.Seconds(), "extra-stores/s")
			if withA {
				_, peak, requests, _ := hung.stats()
				b.ReportMetric(float64(peak), "a-inflight-peak")
				b.ReportMetric(float64(requests), "a-requests")
				reportDeferrals(b, p)
			}
		})
	}
}

// streamState is a stream's state as the server reports it.
func streamState(b testing.TB, p *pipeline, stream string) jetstream.StreamState {
	b.Helper()
	s, err := p.JS.Stream(context.Background(), stream)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return info.State
}

// deliveriesLastSeq is the last sequence DELIVERIES has stored: every job,
// retry, deferred copy and schedule falling due takes one.
func deliveriesLastSeq(b *testing.B, p *pipeline) uint64 {
	return streamState(b, p, natsx.StreamDeliveries).LastSeq
}

// reportDeferrals reports scanwire_deliveries_deferred_total by reason
// from the pipeline's metrics, as deferred-<reason>.
func reportDeferrals(b *testing.B, p *pipeline) {
	b.Helper()
	for _, reason := range []string{"endpoint_slow", "tenant_share", "endpoint_congested"} {
		b.ReportMetric(metricSum(p, `scanwire_deliveries_deferred_total{reason="`+reason+`"`), "deferred-"+reason)
	}
}

// benchEvents builds n finding events (100 scans, distinct types, so the
// limits admit them all) and registers their webhooks with rec.
func benchEvents(b *testing.B, rec *latencyReceiver, subIDs []string, n int) []*nats.Msg {
	evs := make([]*nats.Msg, n)
	for i := range evs {
		// 100 scans at a time, 50 findings each: under the default limit
		// of 100 per scan however many events a run has.
		scan := fmt.Sprintf("scan-%d", i%100+100*(i/5000))
		data, _ := json.Marshal(finding(scan, fmt.Sprintf("t%d", i), 7.5, "bench finding"))
		e := events.New("bench", "//scanners/bench", events.TypeFindingHigh, scan, data)
		subject, _ := events.Subject("bench", scan, events.TypeFindingHigh)
		m, err := events.ToMsg(context.Background(), subject, &e)
		if err != nil {
			b.Fatal(err)
		}
		m.Header.Set(nats.MsgIdHdr, events.KeyOf(&e))
		evs[i] = m
		for _, id := range subIDs {
			rec.expect(e.ID(), jobs.WebhookID(events.KeyOf(&e), id))
		}
	}
	return evs
}

// publishAll publishes asynchronously, as a busy scanner fleet would, one
// every gap (0: as fast as possible), and records each event's send time.
func publishAll(b *testing.B, js jetstream.JetStream, msgs []*nats.Msg, sent func(eventID string), gap time.Duration) {
	b.Helper()
	next := time.Now()
	for _, m := range msgs {
		if gap > 0 {
			next = next.Add(gap)
			time.Sleep(time.Until(next))
		}
		sent(m.Header.Get("ce-id"))
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(10*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		b.Fatal("publishes not acknowledged in 60s")
	}
}

// latencyReceiver records when each webhook id first arrives.
type latencyReceiver struct {
	*httptest.Server
	mu      sync.Mutex
	eventOf map[string]string    // webhook id -> event id
	sentAt  map[string]time.Time // event id -> when it was published
	latency []time.Duration
	seen    map[string]bool
	done    chan struct{}
	target  int
}

func newLatencyReceiver(b *testing.B) *latencyReceiver {
	r := &latencyReceiver{sentAt: map[string]time.Time{}, seen: map[string]bool{}, eventOf: map[string]string{}, done: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id := req.Header.Get("webhook-id")
		now := time.Now()
		r.mu.Lock()
		if ev, ok := r.eventOf[id]; ok && !r.seen[id] {
			r.seen[id] = true
			r.latency = append(r.latency, now.Sub(r.sentAt[ev]))
			if len(r.seen) == r.target {
				close(r.done)
			}
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(r.Close)
	return r
}

// expect registers a webhook before anything is published.
func (r *latencyReceiver) expect(eventID, webhookID string) {
	r.eventOf[webhookID] = eventID
	r.target++
}

func (r *latencyReceiver) sent(eventID string) {
	r.mu.Lock()
	r.sentAt[eventID] = time.Now()
	r.mu.Unlock()
}

func (r *latencyReceiver) wait(b *testing.B) {
	b.Helper()
	select {
	case <-r.done:
	case <-time.After(5 * time.Minute):
		r.mu.Lock()
		defer r.mu.Unlock()
		b.Fatalf("only %d of %d webhooks arrived", len(r.seen), r.target)
	}
}

// reportLatency reports the publish-to-receipt percentiles as p50-ms and
// p99-ms.
func (r *latencyReceiver) reportLatency(b *testing.B) {
	p50, p99 := r.percentiles()
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}

func (r *latencyReceiver) percentiles() (p50, p99 time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := slices.Clone(r.latency)
	slices.Sort(l)
	if len(l) == 0 {
		return 0, 0
	}
	return l[len(l)*50/100], l[min(len(l)-1, len(l)*99/100)]
}

// signedPostLoop is the other yardstick: n webhooks rendered and signed as
// delivery renders them (the standard-webhooks profile, one event, a fresh
// webhook id and signature each) and POSTed to url by as many workers as
// delivery lets one endpoint have (Config.PerEndpoint), with nothing else
// on the way. It returns requests a second.
func signedPostLoop(b *testing.B, url string, n int) float64 {
	b.Helper()
	p, _ := profiles.Lookup(profiles.StandardWebhooks)
	data, _ := json.Marshal(finding("scan-post", "post", 7.5, "post loop"))
	e := events.New("bench", "//scanners/bench", events.TypeFindingHigh, "scan-post", data)
	structured, err := events.Structured(&e)
	if err != nil {
		b.Fatal(err)
	}
	secret := signing.NewStandardSecret()
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 100}}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	var wg sync.WaitGroup
	workers := (delivery.Config{}).Defaults().PerEndpoint
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				req, err := p.Render(profiles.Delivery{WebhookID: fmt.Sprintf("msg_post%d", i), Event: &e, Structured: structured,
					Secrets: []string{secret}, Now: time.Now(), UserAgent: "post-loop"})
				if err != nil {
					b.Error(err)
					return
				}
				hreq, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(req.Body))
				hreq.Header = req.Header
				resp, err := client.Do(hreq)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// bareJetStream is the yardstick: n messages published asynchronously to a
// file stream and consumed with explicit acks, on the same server. It
// returns its rate in messages a second and the writes the server made
// meanwhile (n stored messages: the stream keeps them by limits, so an ack
// removes nothing).
func bareJetStream(b *testing.B, js jetstream.JetStream, ns *server.Server, n int) (float64, uint64) {
	b.Helper()
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BARE", Subjects: []string{"bare.>"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	defer js.DeleteStream(ctx, "BARE")
	cons, err := js.CreateOrUpdateConsumer(ctx, "BARE", jetstream.ConsumerConfig{Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 400)
	got := make(chan struct{}, n)
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack(); got <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	before := readStoreStats(b, ns)
	start := time.Now()
	for range n {
		if _, err := js.PublishAsync("bare.x", payload, jetstream.WithStallWait(10*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	for range n {
		<-got
	}
	rate := float64(n) / time.Since(start).Seconds()
	return rate, diffStoreStats(before, readStoreStats(b, ns)).total()
}

// BenchmarkCluster runs the flood of BenchmarkPipeline (one subscription,
// b.N finding events) on a three-node JetStream cluster of embedded
// servers on this machine, fsync on every write, the services in a
// process of their own: with every stream and bucket on one replica, and
// on three. It reports what the three replicas cost beside one
// (r3-ratio-to-r1). The three servers share the machine's cores and disk
// with the services, so the absolute rates are lower than one server's.
//
//	go test ./tests -run '^$' -bench Cluster -benchtime 2000x
func BenchmarkCluster(b *testing.B) {
	rates := map[int]float64{}
	for _, replicas := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			c := startClusterSync(b, replicas, 0)
			svc := c.join(replicas, app.ServiceFanout, app.ServiceDelivery)
			rec := newLatencyReceiver(b)
			id := svc.subscribe(b, subscriptions.Subscription{Tenant: "bench", URL: rec.URL, Events: []string{"finding.*"}}).ID
			evs := benchEvents(b, rec, []string{id}, b.N)
			b.ResetTimer()
			start := time.Now()
			publishAll(b, svc.JS, evs, rec.sent, 0)
			rec.wait(b)
			elapsed := time.Since(start)
			b.StopTimer()
			rate := float64(b.N) / elapsed.Seconds()
			rates[replicas] = rate
			rec.reportLatency(b)
			b.ReportMetric(rate, "deliveries/s")
			if r1 := rates[1]; replicas == 3 && r1 > 0 {
				b.ReportMetric(rate/r1, "r3-ratio-to-r1")
			}
		})
	}
}
