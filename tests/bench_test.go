package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// BenchmarkPipeline pushes b.N events through publish, fan-out, delivery
// and a local receiver, one subscription per event, and reports events/s
// and the publish-to-receipt latency. In the same run it measures a bare
// JetStream publish-and-consume loop on the same server settings, and
// reports our rate as a fraction of it.
//
//	go test ./tests -run '^$' -bench Pipeline -benchtime 5000x
func BenchmarkPipeline(b *testing.B) {
	for _, mode := range []struct {
		name string
		sync time.Duration
	}{{"sync=always", 0}, {"sync=2m", 2 * time.Minute}} {
		b.Run(mode.name, func(b *testing.B) {
			p := startPipeline(b, "", withSyncInterval(mode.sync))
			rec := newLatencyReceiver(b)
			sub := p.subscribe(b, subscriptions.Subscription{Tenant: "bench", URL: rec.URL, Events: []string{"finding.*"}})

			evs := make([]*nats.Msg, b.N)
			for i := range evs {
				scan := fmt.Sprintf("scan-%d", i%100)
				data, _ := json.Marshal(finding(scan, fmt.Sprintf("t%d", i), 7.5, "bench finding"))
				e := events.New("bench", "//scanners/bench", events.TypeFindingHigh, scan, data)
				subject, _ := events.Subject("bench", scan, events.TypeFindingHigh)
				m, err := events.ToMsg(context.Background(), subject, &e)
				if err != nil {
					b.Fatal(err)
				}
				m.Header.Set(nats.MsgIdHdr, e.ID())
				evs[i] = m
				rec.expect(e.ID(), jobs.WebhookID(e.ID(), sub.ID))
			}

			b.ResetTimer()
			start := time.Now()
			publishAll(b, p.JS, evs, rec.sent)
			rec.wait(b, b.N)
			elapsed := time.Since(start)
			b.StopTimer()

			rate := float64(b.N) / elapsed.Seconds()
			p50, p99 := rec.percentiles()
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			bare := bareJetStream(b, p.JS, b.N)
			b.ReportMetric(bare, "bare-msgs/s")
			b.ReportMetric(rate/bare, "ratio-to-bare")
		})
	}
}

// publishAll publishes asynchronously, as a busy scanner fleet would, and
// records each event's send time.
func publishAll(b *testing.B, js jetstream.JetStream, msgs []*nats.Msg, sent func(eventID string)) {
	b.Helper()
	for _, m := range msgs {
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

func (r *latencyReceiver) wait(b *testing.B, n int) {
	b.Helper()
	select {
	case <-r.done:
	case <-time.After(5 * time.Minute):
		r.mu.Lock()
		defer r.mu.Unlock()
		b.Fatalf("only %d of %d webhooks arrived", len(r.seen), n)
	}
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

// bareJetStream is the yardstick: n messages published asynchronously to a
// file stream and consumed with explicit acks, on the same server.
func bareJetStream(b *testing.B, js jetstream.JetStream, n int) float64 {
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
	start := time.Now()
	for range n {
		if _, err := js.PublishAsync("bare.x", payload, jetstream.WithStallWait(10*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	for range n {
		<-got
	}
	return float64(n) / time.Since(start).Seconds()
}
