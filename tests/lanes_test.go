package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/services/delivery"
)

// With two delivery processes, a hung endpoint's backlog moves to a lane of its own
// (services/delivery/lanes.go): the delivery consumer leaves it behind, so
// a job queued after it is delivered within seconds, not after the whole
// backlog has been deferred; and once the endpoint answers again, the lane
// delivers every job of the backlog.
func TestHungSubscriptionGetsALane(t *testing.T) {
	t.Parallel()
	short := func(c *app.Config) {
		c.Delivery.Timeout, c.Delivery.LaneAfter, c.Delivery.DeferMax = time.Second, 2*time.Second, 2*time.Second
	}
	p := startPipeline(t, "", short, withNATSKeys()) // the replica runs as the delivery user
	// A second delivery process: every process runs every lane, on the
	// lane's one durable consumer.
	startReplica(t, p, withServices(app.ServiceDelivery), short)
	hung, healthy := newHungEndpoints(t, 1), newReceiver(t, nil)
	// Attempts that time out while the endpoint hangs are retried within
	// seconds, not on the profile's schedule (minutes after the second):
	// on a loaded machine a job may be attempted more than once before
	// its lane opens, and the backlog must come through within the wait
	// below once the endpoint answers.
	retries := slices.Repeat([]string{"2s"}, 50)
	slow := p.subscribe(t, subscriptions.Subscription{Tenant: "hung", URL: hung.servers[0].URL, Events: []string{"scan.started"},
		Retry: subscriptions.Retry{Schedule: retries}})
	p.subscribe(t, subscriptions.Subscription{Tenant: "fine", URL: healthy.URL, Events: []string{"scan.started"}})
	const backlog = 300
	for i := range backlog {
		scan := fmt.Sprintf("h%d", i)
		if _, err := p.JS.PublishMsgAsync(eventMsg(t, "hung", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "hung.example.com"})); err != nil {
			t.Fatal(err)
		}
	}
	<-p.JS.PublishAsyncComplete()

	lanes := natsxtest.KeyValue(t, p.JS, natsx.BucketLanes)
	var lane struct {
		From uint64 `json:"from"`
	}
	eventually(t, 30*time.Second, func() bool {
		e, err := lanes.Get(context.Background(), "hung."+slow.ID)
		return err == nil && json.Unmarshal(e.Value(), &lane) == nil && lane.From > 0
	})
	start := time.Now()
	p.publish(t, "fine", events.TypeScanStarted, "f1", map[string]any{"scan_id": "f1", "target": "app.example.com"})
	eventually(t, 15*time.Second, func() bool { return healthy.count() == 1 })
	behind := time.Since(start)
	// The delivery consumer has left the backlog to the lane: it holds at
	// most the jobs it had deferred before the lane opened.
	eventually(t, 15*time.Second, func() bool {
		c, err := p.JS.Consumer(context.Background(), natsx.StreamDeliveries, delivery.ConsumerName(delivery.Config{}))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && uint64(info.NumAckPending) < lane.From
	})

	// The lane and its backlog are in the metrics.
	rr := httptest.NewRecorder()
	p.Tel.Handler.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{"scanwire_delivery_lanes 1", `consumer="` + delivery.LaneConsumer("hung."+slow.ID) + `",lane="hung.` + slow.ID + `"`} {
		if !strings.Contains(rr.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	hung.unhang()
	answered := func() int {
		hung.mu.Lock()
		defer hung.mu.Unlock()
		return len(hung.answered[0])
	}
	eventually(t, 60*time.Second, func() bool { return answered() == backlog })
	// Both processes pull from the lane (an idle pull of each waits there).
	eventually(t, 10*time.Second, func() bool {
		c, err := p.JS.Consumer(context.Background(), natsx.StreamDeliveries, delivery.LaneConsumer("hung."+slow.ID))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumWaiting >= 2
	})
	t.Logf("a job behind the lane delivered %s after it was published; the backlog of %d delivered once its endpoint answered", behind.Round(time.Millisecond), backlog)
}
