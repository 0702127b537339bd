package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// Issue 11.3, one way: against a pipeline run without
// --allow-private-targets, the CLI refuses what the pipeline would ignore
// (it printed "created" and the subscription sat "active" forever), the
// flag on a client command is an error naming 'scanwire run', and a stored
// document the pipeline does not serve is listed as invalid with the reason.
func TestCLIFollowsStrictPipelinePolicy(t *testing.T) {
	t.Parallel()
	a := startApp(t, fanoutOnly)
	ctx := context.Background()
	nats := "--nats=" + a.ClientURL()

	_, err := runCLI(t, ctx, "subs", "create", nats, "--tenant", "acme", "--url", "http://127.0.0.1:9/x", "--events", "scan.started")
	if err == nil || !strings.Contains(err.Error(), `subscription.url: "http://127.0.0.1:9/x" must use https`) {
		t.Errorf("create of a loopback URL: %v", err)
	}
	for _, args := range [][]string{
		{"subs", "create", nats, "--allow-private-targets", "--tenant", "acme", "--url", "http://127.0.0.1:9/x", "--events", "scan.started"},
		{"subs", "list", nats, "--allow-private-targets"},
		{"dlq", "list", nats, "--allow-private-targets"},
	} {
		if _, err := runCLI(t, ctx, args...); err == nil || !strings.Contains(err.Error(), "--allow-private-targets is a flag of 'scanwire run'") {
			t.Errorf("%v: %v, want the flag refused", args, err)
		}
	}

	// A document written when the pipeline allowed private targets (or by
	// hand): the pipeline does not serve it, and says so everywhere.
	s := subscriptions.Subscription{ID: subscriptions.NewID(), Tenant: "acme", URL: "http://127.0.0.1:9/x", Events: []string{"scan.started"},
		Profile: "standard-webhooks", Secrets: []subscriptions.Secret{{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}}
	doc, _ := json.Marshal(s)
	kv, err := a.JS.KeyValue(ctx, natsx.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, subscriptions.Key("acme", s.ID), doc); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, ctx, "subs", "list", nats)
	if err != nil || !strings.Contains(out, "acme."+s.ID) || !strings.Contains(out, "INVALID: subscription.url") || strings.Contains(out, "active") {
		t.Errorf("list shows the unserved document as: %v\n%s", err, out)
	}
	if _, err := runCLI(t, ctx, "subs", "update", nats, s.ID, "--disable"); err == nil || !strings.Contains(err.Error(), "is invalid: subscription.url") {
		t.Errorf("disable of the unserved document: %v", err)
	}
	if out, err := runCLI(t, ctx, "subs", "delete", nats, s.ID); err != nil || !strings.Contains(out, "deleted "+s.ID) {
		t.Errorf("delete of the unserved document: %v %q", err, out)
	}
}

// Issue 11.3, the other way: against a pipeline run with
// --allow-private-targets, the CLI creates, disables, enables and rotates a
// loopback subscription without repeating the flag (each used to refuse
// it), and the always-blocked ranges stay refused.
func TestCLIFollowsPermissivePipelinePolicy(t *testing.T) {
	t.Parallel()
	a := startApp(t, app.Config{Services: []string{app.ServiceFanout}, AllowPrivateTargets: true})
	ctx := context.Background()
	nats := "--nats=" + a.ClientURL()

	id := createSub(t, ctx, nats, "--tenant", "acme", "--url", "http://127.0.0.1:9/x", "--events", "scan.started")
	if out, err := runCLI(t, ctx, "subs", "list", nats); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "active") {
		t.Errorf("list: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"subs", "update", nats, id, "--disable", "--reason", "moving"},
		{"subs", "update", nats, id, "--enable"},
		{"subs", "rotate-secret", nats, id},
		{"subs", "update", nats, id, "--url", "http://127.0.0.2:9/y"},
	} {
		if out, err := runCLI(t, ctx, args...); err != nil {
			t.Errorf("%v: %v %s", args, err, out)
		}
	}
	if _, err := runCLI(t, ctx, "subs", "create", nats, "--tenant", "acme", "--url", "http://169.254.169.254/latest", "--events", "scan.started"); err == nil ||
		!strings.Contains(err.Error(), "cloud metadata") {
		t.Errorf("metadata address: %v", err)
	}
}

// With no pipeline answering, nothing says what policy a URL will be held
// to: writes are refused at once with the reason, reads warn and go on.
func TestCLIWithoutPipeline(t *testing.T) {
	t.Parallel()
	a := startApp(t, app.Config{}) // streams and buckets, no services: nothing answers
	ctx := context.Background()
	nats := "--nats=" + a.ClientURL()
	start := time.Now()
	_, err := runCLI(t, ctx, "subs", "create", nats, "--tenant", "acme", "--url", "https://93.184.216.34/x", "--events", "scan.started")
	if err == nil || !strings.Contains(err.Error(), "no running scanwire pipeline answered") || !strings.Contains(err.Error(), "start it") {
		t.Errorf("create: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("create took %s to say no pipeline runs", d)
	}
	out, err := runCLI(t, ctx, "subs", "list", nats)
	if err != nil || !strings.Contains(out, "warning: no running scanwire pipeline answered") {
		t.Errorf("list: %v %q", err, out)
	}
}

// switchResolver resolves flip.example.net to 127.0.0.1 until off is
// closed, and nothing after: a receiver whose name is withdrawn.
type switchResolver struct{ off chan struct{} }

func (r switchResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	select {
	case <-r.off:
	default:
		if host == "flip.example.net" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// Issue 11.4: once a subscription's name no longer resolves, the writes
// that leave its URL alone still succeed (--disable was refused, for the
// DNS lookup every write made); a new URL is still looked up.
func TestCLIWritesNeedNoDNSForUnchangedURL(t *testing.T) {
	t.Parallel()
	r := switchResolver{off: make(chan struct{})}
	a := startApp(t, app.Config{Services: []string{app.ServiceFanout}, AllowPrivateTargets: true, Resolver: r})
	ctx := context.Background()
	nats := "--nats=" + a.ClientURL()
	s, err := a.Store.Create(ctx, subscriptions.Subscription{Tenant: "acme", URL: "http://flip.example.net:9/x", Events: []string{"scan.started"}})
	if err != nil {
		t.Fatal(err)
	}
	close(r.off) // the CLI resolves with the machine's DNS, which does not know the name either
	for _, args := range [][]string{
		{"subs", "update", nats, s.ID, "--disable"},
		{"subs", "update", nats, s.ID, "--enable"},
		{"subs", "update", nats, s.ID, "--description", "withdrawn"},
		{"subs", "rotate-secret", nats, s.ID},
		{"subs", "delete", nats, s.ID},
	} {
		if out, err := runCLI(t, ctx, args...); err != nil {
			t.Errorf("%v: %v %s", args, err, out)
		}
	}
	_, err = runCLI(t, ctx, "subs", "create", nats, "--tenant", "acme", "--url", "http://flip.example.net:9/x", "--events", "scan.started")
	if err == nil || !strings.Contains(err.Error(), "does not resolve") || !strings.Contains(err.Error(), "DNS may be the cause") {
		t.Errorf("create with a name that does not resolve: %v", err)
	}
}

// Issue 11.5: 'subs test' of a disabled subscription answers at once with
// its reason, and of a deleted one with "not found" (it said "is 'scanwire
// run' running?" after 30 s); replay of a dead letter whose subscription
// is gone is refused (it printed "replayed", and a new dead letter came).
func TestCLITestAndReplayTellTheTruth(t *testing.T) {
	t.Parallel()
	a := startApp(t, app.Config{Services: []string{app.ServiceFanout, app.ServiceDelivery}, AllowPrivateTargets: true})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	nats := "--nats=" + a.ClientURL()
	id := createSub(t, ctx, nats, "--tenant", "acme", "--url", srv.URL, "--events", "scan.started", "--retry", "50ms")

	// A dead letter to replay.
	if out, err := runCLI(t, ctx, "publish", nats, "--tenant", "acme", "--type", "scan.started", "--scan", "s1", "--data", `{"scan_id":"s1","target":"t"}`); err != nil {
		t.Fatalf("publish: %v %s", err, out)
	}
	var out string
	if !waitFor(15*time.Second, func() bool {
		out, _ = runCLI(t, ctx, "dlq", "list", nats)
		return strings.Contains(out, "retries exhausted")
	}) {
		t.Fatalf("no dead letter:\n%s", out)
	}
	dlqID := strings.Fields(strings.Split(out, "\n")[1])[0]

	if _, err := runCLI(t, ctx, "subs", "update", nats, id, "--disable", "--reason", "endpoint moving"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := runCLI(t, ctx, "subs", "test", nats, id, "--wait", "20s")
	if err == nil || !strings.Contains(err.Error(), "is disabled (endpoint moving)") || !strings.Contains(err.Error(), "--enable") {
		t.Errorf("test of a disabled subscription: %v", err)
	}
	if _, err := runCLI(t, ctx, "dlq", "replay", nats, dlqID); err == nil || !strings.Contains(err.Error(), "is disabled (endpoint moving); enable it first") {
		t.Errorf("replay to a disabled subscription: %v", err)
	}

	if _, err := runCLI(t, ctx, "subs", "delete", nats, id); err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, ctx, "subs", "test", nats, id, "--wait", "20s")
	if err == nil || !strings.Contains(err.Error(), "subscription not found") {
		t.Errorf("test of a deleted subscription: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the refusals took %s; they must not wait for an attempt", d)
	}
	_, err = runCLI(t, ctx, "dlq", "replay", nats, dlqID)
	if err == nil || !strings.Contains(err.Error(), "dead letter "+dlqID+" not replayed: subscription "+id+" was deleted") {
		t.Errorf("replay to a deleted subscription: %v", err)
	}
	if out, _ := runCLI(t, ctx, "dlq", "list", nats); !strings.Contains(out, dlqID+" ") || strings.Count(out, "\n") != 2 {
		t.Errorf("the refused dead letter must stay, and no new one come:\n%s", out)
	}
}
