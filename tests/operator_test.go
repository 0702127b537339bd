package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// switchable holds the *.switch.example.net names testResolver resolves,
// and to what: a test stores a name of its own, and deletes it to
// withdraw the name from DNS.
var switchable sync.Map // host -> netip.Addr

func withServices(services ...string) pipelineOpt {
	return func(c *app.Config) { c.Services = services }
}

func withStrictEgress() pipelineOpt {
	return func(c *app.Config) { c.AllowPrivateTargets = false }
}

// Issue 11.3: the pipeline says what egress policy it applies, so that
// clients write what it serves, and processes that disagree are named. A
// stored document the pipeline does not serve is listed as invalid, with
// the reason.
func TestPipelineAnnouncesItsEgressPolicy(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	ctx := context.Background()
	got, err := subscriptions.AskPipeline(ctx, p.NC, 5*time.Second)
	if err != nil || !got.AllowPrivateTargets || !got.Runs(app.ServiceFanout) || !got.Runs(app.ServiceDelivery) || !got.Runs(app.ServiceGateway) {
		t.Fatalf("asked the pipeline: %+v, %v", got, err)
	}
	startReplica(t, p, withStrictEgress(), withServices(app.ServiceDelivery))
	if _, err := subscriptions.AskPipeline(ctx, p.NC, 5*time.Second); !errors.Is(err, subscriptions.ErrPipelineDisagrees) || !strings.Contains(err.Error(), "1 of 2 run with it") {
		t.Errorf("with a strict replica beside it: %v, want the disagreement named", err)
	}

	strict := startPipeline(t, "", withGateway(), withStrictEgress())
	if got, err := subscriptions.AskPipeline(ctx, strict.NC, 5*time.Second); err != nil || got.AllowPrivateTargets {
		t.Errorf("a strict pipeline says %+v, %v", got, err)
	}
	// Written while the pipeline allowed it, or by hand.
	s := subscriptions.Subscription{ID: subscriptions.NewID(), Tenant: "acme", URL: "http://127.0.0.1:9/x", Events: []string{"scan.started"},
		Profile: "standard-webhooks", Secrets: []subscriptions.Secret{{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}}
	doc, _ := json.Marshal(s)
	kv, err := strict.JS.KeyValue(ctx, natsx.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, subscriptions.Key("acme", s.ID), doc); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Subscriptions []map[string]any    `json:"subscriptions"`
		Invalid       []map[string]string `json:"invalid"`
	}
	if code := strict.api(t, acmeKey).do("GET", "/v1/subscriptions", nil, &list); code != 200 || len(list.Subscriptions) != 0 || len(list.Invalid) != 1 ||
		!strings.Contains(list.Invalid[0]["error"], `subscription.url: "http://127.0.0.1:9/x" must use https`) {
		t.Errorf("GET /v1/subscriptions: %d %+v", code, list)
	}
}

// Issue 11.4: when a subscription's name stops resolving, disabling,
// enabling, rotating its secret, auto-disable and deleting still succeed:
// only a new or changed URL is looked up (auto-disable logged "disabling
// subscription" and failed forever). A name that does not resolve at
// create says DNS may be the cause.
func TestWritesSurviveAHostThatStopsResolving(t *testing.T) {
	t.Parallel()
	host := "writes.switch.example.net"
	switchable.Store(host, netip.MustParseAddr("127.0.0.1"))
	t.Cleanup(func() { switchable.Delete(host) })
	r := newReceiver(t, nil)
	u, _ := url.Parse(r.URL)
	p := startPipeline(t, "", withGateway(), func(c *app.Config) { c.Delivery.AutoDisableAfter = time.Millisecond })
	acme := p.api(t, acmeKey)
	sub := acme.createSub(map[string]any{"url": "http://" + host + ":" + u.Port() + "/hook", "events": []string{"scan.started"},
		"retry": map[string]any{"schedule": []string{"50ms", "50ms", "50ms", "50ms", "50ms"}}})
	path := "/v1/subscriptions/" + sub.ID

	switchable.Delete(host)
	var e map[string]any
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"PATCH", path, map[string]any{"disabled": true, "disabled_reason": "endpoint moving"}},
		{"PATCH", path, map[string]any{"disabled": false, "disabled_reason": ""}},
		{"PATCH", path, map[string]any{"description": "name withdrawn"}},
		{"POST", path + "/rotate-secret", map[string]string{"overlap": "1h"}},
	} {
		if code := acme.do(c.method, c.path, c.body, &e); code != 200 {
			t.Errorf("%s %s %v: %d %v", c.method, c.path, c.body, code, e)
		}
	}
	// A new URL is still looked up, and the answer says DNS may be why.
	for _, c := range []struct{ method, path string }{{"POST", "/v1/subscriptions"}, {"PATCH", path}} {
		body := map[string]any{"url": "https://gone.switch.example.net/hook", "events": []string{"scan.started"}}
		e = nil
		if code := acme.do(c.method, c.path, body, &e); code != 422 || !strings.Contains(fmt.Sprint(e["error"]), "does not resolve") ||
			!strings.Contains(fmt.Sprint(e["error"]), "DNS may be the cause") {
			t.Errorf("%s with a name that does not resolve: %d %v", c.method, code, e)
		}
	}

	// Deliveries fail now; past the auto-disable period the subscription
	// is disabled.
	eventually(t, 5*time.Second, func() bool { s, ok := p.Subs.Get("acme", sub.ID); return ok && s.Description == "name withdrawn" })
	p.publish(t, "acme", "scan.started", "s1", map[string]any{"scan_id": "s1", "target": "app.example.com"})
	var stored *subscriptions.Subscription
	eventually(t, 20*time.Second, func() bool {
		stored, _, _ = p.Store.Get(context.Background(), "acme", sub.ID)
		return stored != nil && stored.Disabled
	})
	if !strings.Contains(stored.DisabledReason, "deliveries failing since") {
		t.Errorf("disabled with reason %q", stored.DisabledReason)
	}
	if code := acme.do("DELETE", path, nil, nil); code != 204 {
		t.Errorf("delete: %d", code)
	}
	if n := r.count(); n != 0 {
		t.Errorf("the receiver got %d requests through a name that no longer resolves", n)
	}
}

// testAnswer is the API's answer to a test delivery, as a test reads it.
type testAnswer struct {
	code int
	body map[string]any
	took time.Duration
}

func (a *api) test(id string) testAnswer {
	a.t.Helper()
	start := time.Now()
	var body map[string]any
	code := a.do("POST", "/v1/subscriptions/"+id+"/test", nil, &body)
	return testAnswer{code: code, body: body, took: time.Since(start)}
}

// Issue 11.5: a test of a disabled subscription answers 409 with its
// reason, of a deleted one 404, at once (it answered 504 "will still be
// made" after the whole wait, while the test was dead-lettered at once).
func TestTestOfDisabledOrDeletedSubscriptionAnswersAtOnce(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	sub := acme.createSub(map[string]any{"url": newReceiver(t, nil).URL, "events": []string{"scan.started"}})
	if code := acme.do("PATCH", "/v1/subscriptions/"+sub.ID, map[string]any{"disabled": true, "disabled_reason": "endpoint moving"}, nil); code != 200 {
		t.Fatalf("disable: %d", code)
	}
	if a := acme.test(sub.ID); a.code != http.StatusConflict || a.body["disabled_reason"] != "endpoint moving" ||
		!strings.Contains(fmt.Sprint(a.body["error"]), "is disabled (endpoint moving)") || a.took > 5*time.Second {
		t.Errorf("test of a disabled subscription: %+v", a)
	}
	if code := acme.do("DELETE", "/v1/subscriptions/"+sub.ID, nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if a := acme.test(sub.ID); a.code != http.StatusNotFound || a.took > 5*time.Second {
		t.Errorf("test of a deleted subscription: %+v", a)
	}
}

// Issue 11.5: a test that delivery dead-letters without an attempt (here
// its subscription was disabled while the job waited for a delivery
// worker) is reported at once with the dead letter's reason, not after the
// wait as "will still be made".
func TestDeadLetteredTestIsReportedAtOnce(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withServices(app.ServiceFanout), withGateway(), // no delivery yet
		func(c *app.Config) { c.Gateway.TestWait = 30 * time.Second })
	acme := p.api(t, acmeKey)
	r := newReceiver(t, nil)
	sub := acme.createSub(map[string]any{"url": r.URL, "events": []string{"scan.started"}})
	answer := make(chan testAnswer, 1)
	go func() { answer <- acme.test(sub.ID) }()
	eventually(t, 10*time.Second, func() bool { return len(p.jobs(t)) == 1 })
	if code := acme.do("PATCH", "/v1/subscriptions/"+sub.ID, map[string]any{"disabled": true, "disabled_reason": "endpoint moving"}, nil); code != 200 {
		t.Fatalf("disable: %d", code)
	}
	startReplica(t, p, withServices(app.ServiceDelivery))
	select {
	case a := <-answer:
		if a.code != http.StatusConflict || a.body["code"] != dlq.ReasonSubscriptionDisabled.String() ||
			!strings.Contains(fmt.Sprint(a.body["error"]), "subscription disabled: endpoint moving") || a.body["dead_letter_id"] == nil {
			t.Errorf("answer: %+v", a)
		}
	case <-time.After(15 * time.Second): // the gateway waits 30 s for an attempt
		t.Fatal("no answer within 15 s of delivery starting")
	}
	if r.count() != 0 {
		t.Errorf("the disabled subscription's receiver got %d requests", r.count())
	}
}

// Issue 11.5: replaying a dead letter whose subscription was deleted is
// refused with the reason, and the dead letter stays (replay answered 202
// and a new dead letter appeared).
func TestReplayOfDeadLetterWhoseSubscriptionIsGone(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	sub := acme.createSub(map[string]any{"url": newReceiver(t, func(int) int { return 500 }).URL, "events": []string{"scan.started"},
		"retry": map[string]any{"schedule": []string{"50ms"}}})
	p.publish(t, "acme", "scan.started", "s1", map[string]any{"scan_id": "s1", "target": "app.example.com"})
	var dl struct {
		DeadLetters []struct {
			ID uint64 `json:"id"`
		} `json:"dead_letters"`
	}
	eventually(t, 15*time.Second, func() bool { acme.do("GET", "/v1/dlq", nil, &dl); return len(dl.DeadLetters) == 1 })
	id := dl.DeadLetters[0].ID

	if code := acme.do("DELETE", "/v1/subscriptions/"+sub.ID, nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	var e map[string]any
	if code := acme.do("POST", fmt.Sprintf("/v1/dlq/%d/replay", id), nil, &e); code != http.StatusConflict ||
		!strings.Contains(fmt.Sprint(e["error"]), fmt.Sprintf("dead letter %d not replayed: subscription %s was deleted", id, sub.ID)) {
		t.Errorf("replay: %d %v", code, e)
	}
	p.settle(t)
	if acme.do("GET", "/v1/dlq", nil, &dl); len(dl.DeadLetters) != 1 || dl.DeadLetters[0].ID != id {
		t.Errorf("dead letters after the refused replay: %+v, want only %d", dl, id)
	}
}

// Issue 11.5: a webhook.test naming a subscription that does not exist is
// rejected into REJECTED with the reason (fan-out acked it silently).
func TestWebhookTestForMissingSubscriptionIsRejected(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	missing := subscriptions.NewID()
	p.publish(t, "acme", events.TypeWebhookTest, missing, map[string]any{"subscription_id": missing})
	var rejected []string
	eventually(t, 10*time.Second, func() bool {
		rejected = nil
		for _, m := range p.readStream(t, natsx.StreamRejected) {
			rejected = append(rejected, m.Header.Get(events.HeaderRejectCode)+": "+m.Header.Get(events.HeaderRejectReason))
		}
		return len(rejected) > 0
	})
	want := events.RejectNoSubscription.String() + `: webhook.test for subscription "` + missing + `": tenant acme has no such subscription`
	if len(rejected) != 1 || rejected[0] != want {
		t.Errorf("REJECTED holds %q, want %q", rejected, want)
	}
	if n := len(p.jobs(t)); n != 0 {
		t.Errorf("%d jobs queued for a missing subscription", n)
	}
}
