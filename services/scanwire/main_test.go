package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
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

// The README's first command: the demo delivers every event with a
// verified signature, retries the ones its receiver refuses, and exits.
func TestDemoDeliversAndVerifies(t *testing.T) {
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

func startApp(t *testing.T) *app.App {
	t.Helper()
	a, err := app.Start(context.Background(), app.Config{
		Server:   natsx.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"},
		Topology: natsx.DefaultTopology(),
		Services: []string{app.ServiceFanout},
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	return a
}

// publish refuses what fan-out would reject, with the same words, and
// sends nothing.
func TestPublishRefusesInvalidEventWithFanoutsMessage(t *testing.T) {
	a := startApp(t)
	data := `{"scan_id":"s1","target":"t","finding_id":"f1","type":"xss","title":"x","cvss_score":4.5}`
	_, err := runCLI(t, context.Background(), "publish", "--nats", a.ClientURL(), "--tenant", "acme", "--type", "finding.high", "--scan", "s1", "--data", data)
	if err == nil {
		t.Fatal("publish accepted a finding.high with CVSS 4.5")
	}
	// The same event sent around the CLI is rejected by fan-out with the
	// same reason.
	e := events.New("acme", "//scanwire/cli", "finding.high", "s1", []byte(data))
	if _, perr := events.Publish(context.Background(), a.JS, "scans.acme.s1.finding.high", &e); perr != nil {
		t.Fatal(perr)
	}
	var reason string
	deadline := time.Now().Add(10 * time.Second)
	for reason == "" && time.Now().Before(deadline) {
		s, _ := a.JS.Stream(context.Background(), natsx.StreamRejected)
		if m, gerr := s.GetLastMsgForSubject(context.Background(), "rejected.acme"); gerr == nil {
			reason = m.Header.Get(events.HeaderRejectReason)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if reason != err.Error() {
		t.Errorf("CLI said %q\nfan-out said %q", err, reason)
	}
	s, _ := a.JS.Stream(context.Background(), natsx.StreamScanEvents)
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Errorf("SCAN_EVENTS holds %d events; the refused one must not have been sent", info.State.Msgs)
	}
}

func TestPublishSendsValidEvent(t *testing.T) {
	a := startApp(t)
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
	a := startApp(t)
	ctx := context.Background()
	out, err := runCLI(t, ctx, "subs", "create", "--nats", a.ClientURL(), "--tenant", "acme", "--url", "https://hooks.example.com/x", "--events", "finding.*,scan.finished")
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
	if _, err := runCLI(t, ctx, "subs", "create", "--nats", a.ClientURL(), "--tenant", "acme", "--url", "https://h.example.com", "--events", "scan.paused"); err == nil ||
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
