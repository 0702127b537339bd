package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
)

// publish judges a scan.started's callback_url as fan-out does and refuses
// what fan-out would reject, with fan-out's words, before sending
// anything: here the SIIT form of 127.0.0.1 that issue 10.6 found.
func TestPublishRefusesCallbackURLWithFanoutsMessage(t *testing.T) {
	t.Parallel()
	a := startApp(t, fanoutOnly)
	data := `{"scan_id":"s1","target":"t","callback_url":"https://[::ffff:0:7f00:1]/cb"}`
	_, err := runCLI(t, context.Background(), "publish", "--nats", a.ClientURL(), "--tenant", "acme", "--type", "scan.started", "--scan", "s1", "--data", data)
	if err == nil || !strings.HasPrefix(err.Error(), "invalid event: data/callback_url: egress blocked: ") || !strings.Contains(err.Error(), "embeds 127.0.0.1") {
		t.Fatalf("publish: %v, want a refusal of data/callback_url naming 127.0.0.1", err)
	}
	e := events.New("acme", "//scanwire/cli", "scan.started", "s1", []byte(data))
	if _, perr := events.Publish(context.Background(), a.JS, "scans.acme.s1.started", &e); perr != nil {
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

// publish cannot know the pipeline's --allow-private-targets: it is strict
// unless given the flag itself, and metadata stays refused with it.
func TestPublishCallbackURLPolicy(t *testing.T) {
	t.Parallel()
	a := startApp(t, app.Config{Services: []string{app.ServiceFanout}, AllowPrivateTargets: true})
	publish := func(id, callback string, flags ...string) (string, error) {
		args := append([]string{"publish", "--nats", a.ClientURL(), "--tenant", "acme", "--type", "scan.started", "--scan", "s1", "--id", id,
			"--data", `{"scan_id":"s1","target":"t","callback_url":"` + callback + `"}`}, flags...)
		return runCLI(t, context.Background(), args...)
	}
	if _, err := publish("e1", "http://127.0.0.1:9/cb"); err == nil || !strings.Contains(err.Error(), "data/callback_url") || !strings.Contains(err.Error(), "--allow-private-targets") {
		t.Errorf("loopback without the flag: %v, want a refusal naming the flag", err)
	}
	if out, err := publish("e2", "http://127.0.0.1:9/cb", "--allow-private-targets"); err != nil || !strings.Contains(out, "published e2") {
		t.Errorf("loopback with the flag: %v %q", err, out)
	}
	if _, err := publish("e3", "http://169.254.169.254/latest", "--allow-private-targets"); err == nil || !strings.Contains(err.Error(), "cloud metadata") {
		t.Errorf("metadata with the flag: %v", err)
	}
	if out, err := publish("e4", "https://93.184.216.34/cb"); err != nil || !strings.Contains(out, "published e4") {
		t.Errorf("a public callback: %v %q", err, out)
	}
}

// The callback URL is judged before connecting: a refusal is named even
// with no NATS to reach.
func TestPublishChecksCallbackURLBeforeConnecting(t *testing.T) {
	t.Parallel()
	_, err := runCLI(t, context.Background(), "publish", "--nats=nats://127.0.0.1:1", "--tenant", "acme", "--type", "scan.started", "--scan", "s1",
		"--data", `{"scan_id":"s1","target":"t","callback_url":"https://0x7f.1/cb"}`)
	if err == nil || !strings.Contains(err.Error(), "data/callback_url") || !strings.Contains(err.Error(), "is 127.0.0.1, a loopback address") {
		t.Errorf("got %v", err)
	}
}
