package tests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/services/gateway"
)

// shortly is a context for one call that the server will refuse: it has
// no answer, so it ends at the deadline.
func shortly(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	t.Cleanup(cancel)
	return ctx
}

// natsClient is a client of a closed NATS, as a scanner or an attacker
// connects: it records the violations the server reports to it.
type natsClient struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	violations chan string
}

// connectAs connects to p's NATS as user with password, reading replies
// under inbox ("" for nats.go's default).
func connectAs(t *testing.T, p *pipeline, user, password, inbox string) (*natsClient, error) {
	t.Helper()
	c := &natsClient{violations: make(chan string, 16)}
	opts := []nats.Option{nats.UserInfo(user, password), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.violations <- err.Error():
			default:
			}
		})}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := nats.Connect(p.ClientURL(), opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, _ = jetstream.New(nc)
	return c, nil
}

// refused waits for the server to report a permissions violation naming
// subject.
func (c *natsClient) refused(t *testing.T, subject string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case v := <-c.violations:
			if strings.Contains(v, "Permissions Violation") && strings.Contains(v, `"`+subject+`"`) {
				return
			}
		case <-timeout:
			t.Errorf("no permissions violation for %s", subject)
			return
		}
	}
}

// withNATSKeys gives a process the API keys of withGateway without
// running the gateway: its NATS is closed with them.
func withNATSKeys() pipelineOpt {
	return func(c *app.Config) {
		c.Gateway.Keys = gateway.Keys{Admin: adminKey, Tenants: map[string]string{"acme": acmeKey, "globex": globexKey}}
	}
}

// Issue 13.1: a scanner connects with its tenant's API key and may publish
// only its tenant's events; it reads no stream, bucket or other inbox,
// and calls no JetStream API. Its events are delivered.
func TestNATSScannerIsItsTenant(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withNATSKeys())
	rec := newReceiver(t, nil)
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rec.URL, Events: []string{"scan.started"}})
	ctx := context.Background()

	acme, err := connectAs(t, p, "acme", acmeKey, natsauth.InboxPrefix("acme"))
	if err != nil {
		t.Fatalf("acme with its key: %v", err)
	}
	// As the README shows a scanner in Go: a binary-mode CloudEvent.
	m := nats.NewMsg("scans.acme.scan-1.started")
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "evt-1", "ce-source": "//scanners/zap-eu-1",
		"ce-type": "scan.started", "ce-subject": "scan-1", "ce-tenant": "acme", "content-type": "application/json"} {
		m.Header.Set(k, v)
	}
	m.Data = []byte(`{"scan_id":"scan-1","target":"app.example.com"}`)
	if _, err := acme.js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("acme publishes its own event: %v", err)
	}
	eventually(t, 10*time.Second, func() bool { return rec.count() == 1 })
	if err := verifyStandardWebhook(sub.Secrets[0].Secret, rec.requests()[0].Header, rec.requests()[0].Body); err != nil {
		t.Errorf("acme's event delivered unverifiable: %v", err)
	}

	// Another tenant's subject.
	m2 := eventMsg(t, "globex", events.TypeScanStarted, "scan-2", map[string]any{"scan_id": "scan-2", "target": "t"})
	if _, err := acme.js.PublishMsg(shortly(t), m2); err == nil {
		t.Error("acme published an event of globex")
	}
	acme.refused(t, m2.Subject)

	// Buckets, streams, the JetStream API.
	if _, err := acme.js.KeyValue(shortly(t), natsx.BucketSubscriptions); err == nil {
		t.Error("acme opened the subscriptions bucket")
	}
	acme.refused(t, "$JS.API.STREAM.INFO.KV_subscriptions")
	if err := acme.nc.Publish("$JS.API.DIRECT.GET.KV_subscriptions.$KV.subscriptions."+sub.Tenant+"."+sub.ID, nil); err != nil {
		t.Fatal(err)
	}
	acme.refused(t, "$JS.API.DIRECT.GET.KV_subscriptions.$KV.subscriptions."+sub.Tenant+"."+sub.ID)
	if _, err := acme.js.CreateStream(shortly(t), jetstream.StreamConfig{Name: "MINE", Subjects: []string{"mine.>"}}); err == nil {
		t.Error("acme created a stream")
	}
	acme.refused(t, "$JS.API.STREAM.CREATE.MINE")
	if err := acme.js.DeleteStream(shortly(t), natsx.StreamScanEvents); err == nil {
		t.Error("acme deleted SCAN_EVENTS")
	}
	acme.refused(t, "$JS.API.STREAM.DELETE.SCAN_EVENTS")
	if _, err := p.JS.Stream(ctx, natsx.StreamScanEvents); err != nil {
		t.Errorf("SCAN_EVENTS after acme tried to delete it: %v", err)
	}

	// Writes it must not make: a forged job (which delivery would sign and
	// send), a subscription, a dead letter, the JetStream API.
	for _, subject := range []string{"deliveries.acme." + sub.ID + ".x.y.z", "retries.x", "$KV.subscriptions.acme.sub_forged", "dlq.x", "$JS.API.INFO"} {
		if err := acme.nc.Publish(subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		acme.refused(t, subject)
	}

	// Subscriptions: jobs, other clients' replies, the auth callout.
	for _, subject := range []string{"deliveries.>", "_INBOX.>", ">", "scans.globex.>", "$SYS.REQ.USER.AUTH"} {
		if _, err := acme.nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		acme.refused(t, subject)
	}
}

// Issue 13.1: a wrong key, a key of another tenant, no key and a removed
// key cannot connect; the admin key connects as the operator, which may
// read the buckets.
func TestNATSKeysDecideWhoConnects(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withNATSKeys())
	for _, tc := range []struct{ name, user, password string }{
		{"wrong key", "acme", "acme-key-wrong-0123456789"},
		{"another tenant's key", "acme", globexKey},
		{"admin key as a tenant", "acme", adminKey},
		{"tenant key as admin", natsauth.UserOperator, acmeKey},
		{"a service's name", natsauth.UserFanout, acmeKey},
		{"no key", "acme", ""},
	} {
		if _, err := connectAs(t, p, tc.user, tc.password, ""); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
			t.Errorf("%s: connected (%v)", tc.name, err)
		}
	}
	if nc, err := nats.Connect(p.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("connected without credentials")
	}

	op, err := connectAs(t, p, natsauth.UserOperator, adminKey, "")
	if err != nil {
		t.Fatalf("operator: %v", err)
	}
	ctx := context.Background()
	if _, err := op.js.KeyValue(ctx, natsx.BucketSubscriptions); err != nil {
		t.Errorf("operator opens the subscriptions bucket: %v", err)
	}

	if _, err := connectAs(t, p, "globex", globexKey, ""); err != nil {
		t.Fatalf("globex before its key is removed: %v", err)
	}
	p.SetKeys(gateway.Keys{Admin: adminKey, Tenants: map[string]string{"acme": acmeKey}})
	if _, err := connectAs(t, p, "globex", globexKey, ""); err == nil {
		t.Error("globex connected after its key was removed")
	}
	if _, err := connectAs(t, p, "acme", acmeKey, ""); err != nil {
		t.Errorf("acme after globex's key was removed: %v", err)
	}
}

// Issue 13.2: each service's user may do what the service does and no
// more: fan-out cannot write a subscription, the gateway cannot take a
// job.
func TestNATSServicesHaveLeastPrivilege(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withNATSKeys())
	ctx := context.Background()

	fanout, err := connectAs(t, p, natsauth.UserFanout, p.auth.Passwords[natsauth.UserFanout], natsauth.InboxPrefix(natsauth.UserFanout))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := fanout.js.KeyValue(ctx, natsx.BucketSubscriptions)
	if err != nil {
		t.Fatalf("fan-out opens the subscriptions bucket: %v", err)
	}
	if _, err := kv.Put(shortly(t), "acme.sub_forged", []byte(`{}`)); err == nil {
		t.Error("fan-out wrote a subscription")
	}
	fanout.refused(t, "$KV.subscriptions.acme.sub_forged")

	gw, err := connectAs(t, p, natsauth.UserGateway, p.auth.Passwords[natsauth.UserGateway], natsauth.InboxPrefix(natsauth.UserGateway))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.js.CreateOrUpdateConsumer(shortly(t), natsx.StreamDeliveries, jetstream.ConsumerConfig{Durable: "thief"}); err == nil {
		t.Error("the gateway created a consumer of DELIVERIES")
	}
	gw.refused(t, "$JS.API.CONSUMER.CREATE.DELIVERIES.thief")
	if err := gw.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.DELIVERIES.delivery", natsauth.InboxPrefix(natsauth.UserGateway)+".x", []byte(`{"batch":1}`)); err != nil {
		t.Fatal(err)
	}
	gw.refused(t, "$JS.API.CONSUMER.MSG.NEXT.DELIVERIES.delivery")
	if _, err := gw.nc.SubscribeSync("_INBOX.>"); err != nil {
		t.Fatal(err)
	}
	gw.refused(t, "_INBOX.>")

	// A wrong password for a service user is not passed to the callout.
	if _, err := connectAs(t, p, natsauth.UserDelivery, adminKey, ""); err == nil {
		t.Error("delivery's user connected with the admin key")
	}
}

// Issue 13.3: without keys the embedded server is open, so it listens on
// loopback only: asked for another address, scanwire refuses to start.
func TestNATSOpenOnlyOnLoopback(t *testing.T) {
	t.Parallel()
	cfg := baseConfig(t)
	cfg.Server = natsx.ServerConfig{DataDir: t.TempDir(), Listen: "0.0.0.0:0"}
	_, err := app.Start(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "--nats-listen 0.0.0.0:0") || !strings.Contains(err.Error(), "SCANWIRE_API_KEYS") {
		t.Fatalf("open on all addresses: %v", err)
	}
	withNATSKeys()(&cfg)
	cfg.NATSAuth = cfg.NATSAuth.Complete()
	a, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("closed on all addresses: %v", err)
	}
	if err := a.Close(context.Background()); err != nil && !errors.Is(err, context.Canceled) {
		t.Error(err)
	}
}

// Issue 13.2: fan-out, delivery and the gateway, each a process with its
// own NATS user, do all their work without a permissions violation (start
// fails every test that has one): the users allow what the services use. Events over NATS and over HTTP,
// limits, rejections, a failing endpoint's retries and dead letter, its
// replay, the attempt log, scan statistics, a tenant's signing secret,
// a subscription changed and deleted.
func TestNATSSplitServicesNeedNoMore(t *testing.T) {
	t.Parallel()
	hub := startPipeline(t, "", withNATSKeys(), withServices())
	gw := startReplica(t, hub, withServices(), withGateway())
	fanoutP := startReplica(t, hub, withServices(app.ServiceFanout))
	deliveryP := startReplica(t, hub, withServices(app.ServiceDelivery))

	acme := gw.api(t, acmeKey)
	var mu sync.Mutex
	status := 503
	r := newReceiver(t, func(int) int { mu.Lock(); defer mu.Unlock(); return status })
	sub := acme.createSub(map[string]any{"url": r.URL, "events": []string{"scan.*", "finding.*"}, "retry": map[string]any{"schedule": []string{"50ms"}},
		"limits": map[string]any{"findings_per_scan": 2}})
	eventually(t, 5*time.Second, func() bool { _, ok := hub.Subs.Get("acme", sub.ID); return ok })
	acme.test(sub.ID)
	eventually(t, 10*time.Second, func() bool { return len(hub.dlq(t)) == 1 })
	mu.Lock()
	status = 204
	mu.Unlock()

	scanner, err := connectAs(t, hub, "acme", acmeKey, natsauth.InboxPrefix("acme"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		m := eventMsg(t, "acme", events.TypeFindingHigh, "s1", finding("s1", fmt.Sprint("f", i), 9.1, "t"))
		if _, err := scanner.js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	bad := eventMsg(t, "acme", events.TypeFindingHigh, "s1", map[string]any{"nonsense": true})
	if _, err := scanner.js.PublishMsg(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	if code := acme.do("POST", "/v1/events", `{"scan_id":"s1","target":"t"}`, nil,
		"Ce-Specversion", "1.0", "Ce-Id", "http-1", "Ce-Source", "//scanners/http", "Ce-Type", "scan.started", "Ce-Subject", "s1",
		"Ce-Tenant", "acme", "Content-Type", "application/json"); code != 202 {
		t.Errorf("POST /v1/events: %d", code)
	}

	var dl struct {
		DeadLetters []struct {
			ID uint64 `json:"id"`
		} `json:"dead_letters"`
	}
	if code := acme.do("GET", "/v1/dlq", nil, &dl); code != 200 || len(dl.DeadLetters) != 1 {
		t.Fatalf("dlq: %d %+v", code, dl)
	}
	if code := acme.do("POST", fmt.Sprintf("/v1/dlq/%d/replay", dl.DeadLetters[0].ID), nil, nil); code != 202 {
		t.Fatalf("replay: %d", code)
	}
	// The test webhook twice and its replay, two findings of four (the
	// limit), scan.started.
	eventually(t, 15*time.Second, func() bool { return r.count() >= 6 })
	var st map[string]any
	if code := acme.do("GET", "/v1/scans/s1/stats", nil, &st); code != 200 {
		t.Errorf("scan stats: %d", code)
	}
	var rej map[string]any
	eventually(t, 5*time.Second, func() bool {
		return acme.do("GET", "/v1/rejected", nil, &rej) == 200 && strings.Contains(fmt.Sprint(rej), "nonsense")
	})
	if code := acme.do("GET", "/v1/subscriptions/"+sub.ID+"/attempts", nil, nil); code != 200 {
		t.Errorf("attempts: %d", code)
	}
	if code := acme.do("GET", "/v1/signing-secret", nil, nil); code != 200 {
		t.Errorf("signing secret: %d", code)
	}
	if code := acme.do("PATCH", "/v1/subscriptions/"+sub.ID, map[string]any{"description": "changed"}, nil); code != 200 {
		t.Errorf("patch: %d", code)
	}
	if code := acme.do("DELETE", "/v1/subscriptions/"+sub.ID, nil, nil); code != 204 {
		t.Errorf("delete: %d", code)
	}
	// Each process's metrics: the consumers' and lanes' backlog.
	for _, p := range []*pipeline{gw, fanoutP, deliveryP} {
		if v := metricSum(p, "scanwire_consumer_pending"); v < 0 {
			t.Errorf("%v: consumer pending %v", p.services, v)
		}
	}
}

// A tenant on NATS cannot have another tenant's event dropped as a copy by
// publishing first with the dedupe id that event would have: the gateway's
// dedupe ids are keyed with the caller's API key (events.DedupeSecret).
// The caller's own retry is still one event.
func TestNATSTenantCannotPreemptAnothersEvent(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	rec := newReceiver(t, nil)
	globex := p.api(t, globexKey)
	sub := globex.createSub(map[string]any{"url": rec.URL, "events": []string{"scan.started"}})
	eventually(t, 5*time.Second, func() bool { _, ok := p.Subs.Get("globex", sub.ID); return ok })

	acme, err := connectAs(t, p, "acme", acmeKey, natsauth.InboxPrefix("acme"))
	if err != nil {
		t.Fatal(err)
	}
	forged := eventMsg(t, "acme", events.TypeScanStarted, "s-acme", map[string]any{"scan_id": "s-acme", "target": "t"})
	forged.Header.Set(nats.MsgIdHdr, events.Key("globex", "//scanners/http", "evt-shared"))
	if _, err := acme.js.PublishMsg(context.Background(), forged); err != nil {
		t.Fatal(err)
	}

	post := func() map[string]any {
		var out map[string]any
		if code := globex.do("POST", "/v1/events", `{"scan_id":"s1","target":"t"}`, &out,
			"Ce-Specversion", "1.0", "Ce-Id", "evt-shared", "Ce-Source", "//scanners/http", "Ce-Type", "scan.started",
			"Ce-Subject", "s1", "Ce-Tenant", "globex", "Content-Type", "application/json"); code != 202 {
			t.Fatalf("POST /v1/events: %d %v", code, out)
		}
		return out
	}
	if out := post(); out["duplicate"] == true {
		t.Errorf("globex's event was taken for acme's copy: %v", out)
	}
	if out := post(); out["duplicate"] != true {
		t.Errorf("globex's retry is not one event: %v", out)
	}
	eventually(t, 10*time.Second, func() bool { return rec.count() == 1 })
}

// Issue 13.1: a scanner's connection lasts its lifetime and is then judged
// again: once its key is removed, the connection ends; a kept key's
// connection comes back.
func TestNATSRemovedKeyLosesItsConnections(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withNATSKeys(), func(c *app.Config) { c.NATSLifetime = 2 * time.Second })
	connect := func(user, key string) *nats.Conn {
		nc, err := nats.Connect(p.ClientURL(), nats.UserInfo(user, key), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	acme, globex := connect("acme", acmeKey), connect("globex", globexKey)
	p.SetKeys(gateway.Keys{Admin: adminKey, Tenants: map[string]string{"acme": acmeKey}})
	eventually(t, 10*time.Second, func() bool { return !globex.IsConnected() })
	time.Sleep(3 * time.Second) // past another lifetime: globex stays out, acme was judged again
	if globex.IsConnected() {
		t.Error("the connection of a removed key came back")
	}
	eventually(t, 5*time.Second, acme.IsConnected)
	if acme.Stats().Reconnects == 0 {
		t.Error("acme's connection was never judged again")
	}
}
