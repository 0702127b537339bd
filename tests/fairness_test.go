package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/services/delivery"
)

// hungEndpoints are receivers, each on its own host and port, that answer
// nothing until released (a request the client gives up on ends there).
// They count the requests in flight to all of them together, and record
// which events each answered 204 to once released.
type hungEndpoints struct {
	servers  []*httptest.Server
	release  chan struct{}
	once     sync.Once
	mu       sync.Mutex
	inFlight int
	peak     int
	requests int
	answered []map[string]bool // by endpoint, the event ids delivered
}

func newHungEndpoints(t testing.TB, n int) *hungEndpoints {
	h := &hungEndpoints{release: make(chan struct{})}
	for i := range n {
		h.answered = append(h.answered, map[string]bool{})
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Read first: the server notices a client gone (and ends
			// r's context) only once the body is read.
			body, _ := io.ReadAll(r.Body)
			h.mu.Lock()
			h.inFlight++
			h.requests++
			h.peak = max(h.peak, h.inFlight)
			h.mu.Unlock()
			defer func() { h.mu.Lock(); h.inFlight--; h.mu.Unlock() }()
			select {
			case <-h.release:
				h.mu.Lock()
				h.answered[i][eventID(body)] = true
				h.mu.Unlock()
				w.WriteHeader(http.StatusNoContent)
			case <-r.Context().Done():
			}
		}))
		h.servers = append(h.servers, s)
		t.Cleanup(s.Close)
	}
	// Registered after the servers: cleanups run last first, so the hung
	// requests end before the servers wait for them.
	t.Cleanup(h.unhang)
	return h
}

// unhang makes every endpoint answer 204 from now on, the hung requests
// included.
func (h *hungEndpoints) unhang() { h.once.Do(func() { close(h.release) }) }

// stats is what the endpoints saw: requests in flight now and at most at
// once, requests in all, and jobs answered 204.
func (h *hungEndpoints) stats() (inFlight, peak, requests, answered int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.answered {
		answered += len(a)
	}
	return h.inFlight, h.peak, h.requests, answered
}

// delivered says whether endpoint i answered 204 to the event.
func (h *hungEndpoints) delivered(i int, eventID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.answered[i][eventID]
}

// eventID is the id of the CloudEvent a standard-webhooks body carries.
func eventID(body []byte) string {
	var ce struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(body, &ce)
	return ce.ID
}

// Tenant A points four subscriptions at four endpoints (four hosts and
// ports) that never answer, and queues far more jobs than there are
// workers; tenant B's one endpoint is healthy. B's events are each
// delivered within seconds: A holds at most its share of the workers
// however many endpoints it has, and A's deferred jobs wait as scheduled
// messages, not in the consumer's ack-pending set. Once A's endpoints
// answer again, every one of A's jobs is delivered or dead-lettered:
// deferring lost none.
func TestFairnessHungTenantDoesNotStarveAnother(t *testing.T) {
	// Serial: it bounds B's latency, which other tests running on a small
	// machine would stretch.
	const workers, maxNaked = 16, 50
	p := startPipeline(t, "", func(c *app.Config) {
		c.Delivery.Workers = workers
		// Short, so that A's attempts time out and are retried during the
		// test, as they would in production after --timeout.
		c.Delivery.Timeout = 2 * time.Second
		// Short, so that A's deferred jobs come back within the test once
		// its endpoints answer.
		c.Delivery.DeferMax = 4 * time.Second
		// Low, so that most of A's deferred jobs are stored as scheduled
		// messages rather than naked.
		c.Delivery.MaxNaked = maxNaked
	})
	cfg := delivery.Config{Workers: workers}.Defaults()
	hung := newHungEndpoints(t, 4)
	b := newReceiver(t, nil)
	t.Cleanup(func() {
		if t.Failed() {
			inFlight, peak, requests, _ := hung.stats()
			t.Logf("B got %d; A: %d in flight (peak %d), %d requests; %s", b.count(), inFlight, peak, requests, p.consumers())
		}
	})

	var aSubs []*subscriptions.Subscription
	for _, s := range hung.servers {
		aSubs = append(aSubs, p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: s.URL + "/hook", Events: []string{"scan.started"},
			Retry: subscriptions.Retry{Schedule: []string{"1s", "1s", "1s", "1s", "1s", "1s"}}}))
	}
	p.subscribe(t, subscriptions.Subscription{Tenant: "beta", URL: b.URL, Events: []string{"scan.started"}})

	// 100 events for A, each a job for every one of its four endpoints:
	// 400 jobs, 25 times the workers.
	var aEvents []string
	var queued []*nats.Msg
	for i := range 100 {
		scan := fmt.Sprintf("a%d", i)
		m := eventMsg(t, "acme", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t"})
		queued = append(queued, m)
		aEvents = append(aEvents, m.Header.Get("ce-id"))
	}
	publishBurst(t, p.JS, queued)
	eventually(t, 10*time.Second, func() bool { inFlight, _, _, _ := hung.stats(); return inFlight >= 4 })

	// B publishes one event every 200 ms while A's endpoints hang; each
	// must arrive within 10 s of its publication.
	const bEvents = 20
	sent := map[string]time.Time{}
	var maxAckPending int
	for i := range bEvents {
		scan := fmt.Sprintf("b%d", i)
		sent[p.publish(t, "beta", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t"})] = time.Now()
		maxAckPending = max(maxAckPending, ackPending(t, p))
		time.Sleep(200 * time.Millisecond)
	}
	eventually(t, 15*time.Second, func() bool { return b.count() >= bEvents })
	var slowest time.Duration
	for _, r := range b.requests() {
		id := eventID(r.Body)
		at, ok := sent[id]
		if !ok {
			continue
		}
		delete(sent, id)
		took := r.At.Sub(at)
		slowest = max(slowest, took)
		if took > 10*time.Second {
			t.Errorf("B's event %s took %s to arrive, want within 10s", id, took)
		}
	}
	if len(sent) != 0 {
		t.Errorf("%d of B's events not delivered", len(sent))
	}
	// A's share of the workers, with a request or two of slack: a request
	// the client gave up on takes a moment to end at the server.
	if _, peak, _, _ := hung.stats(); peak > cfg.TenantShare+2 {
		t.Errorf("A had %d requests in flight at once; its share is %d of %d workers", peak, cfg.TenantShare, workers)
	}
	// Beyond MaxNaked, deferred jobs are stored as scheduled messages: the
	// consumer's unacknowledged jobs are those the workers hold, and those
	// naked, at most MaxNaked (fetched ones waiting for a worker aside).
	if maxAckPending > maxNaked+2*workers {
		t.Errorf("the delivery consumer had %d jobs unacknowledged; deferred jobs must not wait in its ack-pending set", maxAckPending)
	}

	// A's endpoints answer again: every job of A is delivered or
	// dead-lettered, none dropped.
	hung.unhang()
	eventually(t, 30*time.Second, func() bool {
		dead := map[[2]string]bool{}
		for _, dl := range p.dlq(t) {
			dead[[2]string{dl.Job.SubscriptionID, dl.Job.EventID}] = true
		}
		for i, s := range aSubs {
			for _, id := range aEvents {
				if !hung.delivered(i, id) && !dead[[2]string{s.ID, id}] {
					return false
				}
			}
		}
		return true
	})
	_, peak, requests, answered := hung.stats()
	t.Logf("B: slowest of %d events %s; A: %d jobs, %d requests, peak %d in flight, %d delivered after the release; consumer ack pending peaked at %d",
		bEvents, slowest.Round(time.Millisecond), len(aEvents)*len(aSubs), requests, peak, answered, maxAckPending)
}

// ackPending is how many jobs the delivery consumer has handed out and
// not yet seen settled.
func ackPending(t testing.TB, p *pipeline) int {
	t.Helper()
	c, err := p.JS.Consumer(context.Background(), natsx.StreamDeliveries, delivery.ConsumerName(delivery.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending
}
