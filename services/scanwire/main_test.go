package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
)

// runCLI runs the scanwire command with args and returns what it printed.
func runCLI(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// createSub runs `scanwire subs create` with args and returns the new
// subscription's id, failing t if the command fails.
func createSub(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := runCLI(t, ctx, append([]string{"subs", "create"}, args...)...)
	if err != nil {
		t.Fatalf("create: %v %s", err, out)
	}
	return strings.Fields(out)[1]
}

// The README's first command: the demo delivers every event with a
// verified signature, retries the ones its receiver refuses, and exits.
func TestDemoDeliversAndVerifies(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := runCLI(t, ctx, "demo", "--scans", "2", "--interval", "50ms", "--data", t.TempDir())
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{"10 deliveries verified, 0 failed verification", "answered 503 on purpose", "attempt 2", "signature verified", `Reflected XSS in <script> & \"quotes\"`} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// startApp starts a pipeline with cfg's services and options on an
// embedded NATS server of the test's own, and stops it when the test ends.
func startApp(t *testing.T, cfg app.Config) *app.App {
	t.Helper()
	cfg.Server = natsx.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	cfg.Topology = natsx.DefaultTopology()
	cfg.Log = slog.New(slog.DiscardHandler)
	a, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	return a
}

// fanoutOnly runs fan-out alone: what the CLI publishes is checked, and no
// webhook is sent.
var fanoutOnly = app.Config{Services: []string{app.ServiceFanout}}

// waitFor polls cond until it holds or timeout has passed, and says
// whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// publish refuses what fan-out would reject, with the same words, and
// sends nothing.
func TestPublishRefusesInvalidEventWithFanoutsMessage(t *testing.T) {
	t.Parallel()
	a := startApp(t, fanoutOnly)
	data := `{"scan_id":"s1","target":"t","finding_id":"f1","type":"xss","title":"x","cvss_score":4.5}`
	_, err := runCLI(t, context.Background(), "publish", "--nats", a.ClientURL(), "--tenant", "acme", "--type", "finding.high", "--scan", "s1", "--data", data)
	if err == nil {
		t.Fatal("publish accepted a finding.high with CVSS 4.5")
	}
	// The same event sent around the CLI is rejected by fan-out with the
	// same reason.
	sameRejection(t, a, "finding.high", data, err)
}

func TestPublishSendsValidEvent(t *testing.T) {
	t.Parallel()
	a := startApp(t, fanoutOnly)
	out, err := runCLI(t, context.Background(), "publish", "--nats", a.ClientURL(), "--tenant", "acme", "--type", "scan.started",
		"--scan", "s1", "--id", "evt-1", "--data", `{"scan_id":"s1","target":"app.example.com"}`)
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	if !strings.Contains(out, "published evt-1 to scans.acme.s1.started, SCAN_EVENTS seq 1") {
		t.Errorf("output %q", out)
	}
	out, err = runCLI(t, context.Background(), "publish", "--nats", a.ClientURL(), "--tenant", "acme", "--type", "scan.started",
		"--scan", "s1", "--id", "evt-1", "--data", `{"scan_id":"s1","target":"app.example.com"}`)
	if err != nil || !strings.Contains(out, "duplicate id") {
		t.Errorf("republishing an id: %v %q", err, out)
	}
}

func TestSubsCreateListDelete(t *testing.T) {
	t.Parallel()
	a := startApp(t, fanoutOnly)
	ctx := context.Background()
	out, err := runCLI(t, ctx, "subs", "create", "--nats", a.ClientURL(), "--tenant", "acme", "--url", "https://93.184.216.34/x", "--events", "finding.*,scan.finished")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	if !strings.Contains(out, "signing secret (shown once, keep it now): whsec_") {
		t.Errorf("create does not show the secret: %q", out)
	}
	id := strings.Fields(out)[1]
	out, err = runCLI(t, ctx, "subs", "list", "--nats", a.ClientURL())
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "finding.*,scan.finished") || strings.Contains(out, "whsec_") {
		t.Errorf("list: %v\n%s", err, out)
	}
	if _, err := runCLI(t, ctx, "subs", "create", "--nats", a.ClientURL(), "--tenant", "acme", "--url", "https://93.184.216.34", "--events", "scan.paused"); err == nil ||
		!strings.Contains(err.Error(), `subscription.events[0]: unknown event type "scan.paused"`) {
		t.Errorf("bad event type: %v", err)
	}
	if out, err := runCLI(t, ctx, "subs", "delete", "--nats", a.ClientURL(), id); err != nil || !strings.Contains(out, "deleted "+id) {
		t.Errorf("delete: %v %q", err, out)
	}
	if _, err := runCLI(t, ctx, "subs", "delete", "--nats", a.ClientURL(), id); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("second delete: %v", err)
	}
}

// The operator's loop from the CLI: test a subscription, read its attempt
// log, rotate its secret, find a dead letter and replay it.
func TestCLITestAttemptsRotateAndReplay(t *testing.T) {
	t.Parallel()
	a := startApp(t, app.Config{Services: []string{app.ServiceFanout, app.ServiceDelivery}, AllowPrivateTargets: true})
	var mu sync.Mutex
	status := 200
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		fmt.Fprint(w, "thanks")
	}))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	nats := "--nats=" + a.ClientURL()

	id := createSub(t, ctx, nats, "--tenant", "acme", "--url", srv.URL, "--events", "scan.started", "--retry", "50ms")
	if !waitFor(5*time.Second, func() bool { _, ok := a.Subs.Get("acme", id); return ok }) {
		t.Fatalf("subscription %s never reached the services' cache", id)
	}
	out, err := runCLI(t, ctx, "subs", "test", nats, id)
	if err != nil || !strings.Contains(out, "attempt 1: HTTP 200, delivered") || !strings.Contains(out, "response: thanks") {
		t.Fatalf("subs test: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, "attempts", nats, "--subscription", id)
	if err != nil || !strings.Contains(out, "webhook.test") || !strings.Contains(out, "HTTP 200, delivered") {
		t.Errorf("attempts: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, "subs", "rotate-secret", nats, id, "--overlap", "2h")
	if err != nil || !strings.Contains(out, "new signing secret (shown once, keep it now): whsec_") || !strings.Contains(out, "keeps signing until") {
		t.Errorf("rotate: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, "subs", "update", nats, id, "--description", "soc hook", "--events", "scan.*")
	if err != nil || !strings.Contains(out, `"description": "soc hook"`) || !strings.Contains(out, `"scan.*"`) {
		t.Errorf("update: %v\n%s", err, out)
	}

	mu.Lock()
	status = 500
	mu.Unlock()
	e := events.New("acme", "//s", "scan.started", "s1", []byte(`{"scan_id":"s1","target":"t"}`))
	if _, err := events.Publish(ctx, a.JS, "scans.acme.s1.started", &e); err != nil {
		t.Fatal(err)
	}
	waitFor(10*time.Second, func() bool {
		out, _ = runCLI(t, ctx, "dlq", "list", nats)
		return strings.Contains(out, e.ID())
	})
	if !strings.Contains(out, "retries exhausted after 2 attempts: HTTP 500") {
		t.Fatalf("dlq list:\n%s", out)
	}
	dlqID := strings.Fields(strings.Split(out, "\n")[1])[0]
	mu.Lock()
	status = 200
	mu.Unlock()
	if out, err = runCLI(t, ctx, "dlq", "replay", nats, dlqID); err != nil || !strings.Contains(out, "replayed "+dlqID) {
		t.Fatalf("replay: %v %s", err, out)
	}
	waitFor(10*time.Second, func() bool {
		out, _ = runCLI(t, ctx, "attempts", nats, "--subscription", id, "--event", e.ID())
		return strings.Contains(out, "delivered")
	})
	if !strings.Contains(out, "HTTP 200, delivered") {
		t.Errorf("replayed event not delivered:\n%s", out)
	}
}

// Against a pipeline run without --allow-private-targets the CLI refuses a
// loopback http URL, naming the field and the fix.
func TestSubsCreateRefusesPrivateTargets(t *testing.T) {
	t.Parallel()
	a := startApp(t, fanoutOnly)
	_, err := runCLI(t, context.Background(), "subs", "create", "--nats", a.ClientURL(), "--tenant", "acme", "--url", "http://127.0.0.1:9/x", "--events", "scan.started")
	if err == nil || !strings.Contains(err.Error(), "subscription.url") || !strings.Contains(err.Error(), "--allow-private-targets") {
		t.Errorf("got %v", err)
	}
}

func TestTenantsCLI(t *testing.T) {
	t.Parallel()
	a := startApp(t, fanoutOnly)
	ctx := context.Background()
	out, err := runCLI(t, ctx, "tenants", "set", "--nats", a.ClientURL(), "acme", "--partner", "mssp")
	if err != nil || !strings.Contains(out, `tenant acme: partner "mssp"`) {
		t.Fatalf("set: %v %q", err, out)
	}
	if _, err := runCLI(t, ctx, "tenants", "set", "--nats", a.ClientURL(), "acme", "--partner", "acme"); err == nil || !strings.Contains(err.Error(), "partner: a tenant cannot be its own partner") {
		t.Errorf("own partner: %v", err)
	}
	first, err := runCLI(t, ctx, "tenants", "signing-secret", "--nats", a.ClientURL(), "acme")
	if err != nil || !strings.HasPrefix(first, "whsec_") {
		t.Fatalf("signing-secret: %v %q", err, first)
	}
	again, _ := runCLI(t, ctx, "tenants", "signing-secret", "--nats", a.ClientURL(), "acme")
	rotated, _ := runCLI(t, ctx, "tenants", "signing-secret", "--nats", a.ClientURL(), "acme", "--rotate")
	if again != first || rotated == first || !strings.HasPrefix(rotated, "whsec_") {
		t.Errorf("signing secret %q, again %q, rotated %q", first, again, rotated)
	}
}

// Flags and arguments are checked before the CLI connects, so a mistake
// is named even with no NATS to reach, and nothing is done.
func TestCLIChecksInputBeforeConnecting(t *testing.T) {
	t.Parallel()
	nowhere := "--nats=nats://127.0.0.1:1"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq", "list", nowhere, "--subscription", "sub_1"}, "--subscription needs --tenant"},
		{[]string{"dlq", "replay", nowhere, "1", "x"}, `"x" is not a dead letter id`},
		{[]string{"subs", "update", nowhere, "sub_1"}, "nothing to change"},
		{[]string{"subs", "update", nowhere, "sub_1", "--reason", "moving"}, "give --disable too"},
		{[]string{"publish", nowhere, "--tenant", "acme", "--type", "scan.started", "--scan", "s1", "--data", "{}"}, "invalid event"},
	} {
		if _, err := runCLI(t, context.Background(), c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.args, err, c.want)
		}
	}
}

// sameRejection publishes the event the CLI refused (err) around the CLI
// and checks that fan-out rejects it with the very words the CLI used, and
// that the CLI sent nothing: SCAN_EVENTS holds only this copy.
func sameRejection(t *testing.T, a *app.App, typ, data string, err error) {
	t.Helper()
	e := events.New("acme", "//scanwire/cli", typ, "s1", []byte(data))
	subject, serr := events.Subject("acme", "s1", typ)
	if serr != nil {
		t.Fatal(serr)
	}
	if _, perr := events.Publish(context.Background(), a.JS, subject, &e); perr != nil {
		t.Fatal(perr)
	}
	var reason string
	waitFor(10*time.Second, func() bool {
		s, serr := a.JS.Stream(context.Background(), natsx.StreamRejected)
		if serr != nil {
			return false
		}
		m, gerr := s.GetLastMsgForSubject(context.Background(), "rejected.acme")
		if gerr != nil {
			return false
		}
		reason = m.Header.Get(events.HeaderRejectReason)
		return reason != ""
	})
	if reason != err.Error() {
		t.Errorf("CLI said %q\nfan-out said %q", err, reason)
	}
	s, _ := a.JS.Stream(context.Background(), natsx.StreamScanEvents)
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Errorf("SCAN_EVENTS holds %d events; the refused one must not have been sent", info.State.Msgs)
	}
}
