package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/scanwire/scanwire/internal/app"
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
	sameRejection(t, a, "scan.started", data, err)
}

// publish judges a callback_url by the running pipeline's egress policy,
// not by a flag of its own: loopback passes a pipeline run with
// --allow-private-targets and is refused by one run without it; with no
// pipeline the strict policy applies, with a warning, and the event is
// still published; the client-side flag is refused; metadata is refused
// by every policy.
func TestPublishCallbackURLPolicy(t *testing.T) {
	t.Parallel()
	private := startApp(t, app.Config{Services: []string{app.ServiceFanout}, AllowPrivateTargets: true})
	strict := startApp(t, fanoutOnly)
	none := startApp(t, app.Config{}) // streams and buckets, no service: no pipeline answers
	tests := []struct {
		name     string
		a        *app.App
		callback string
		flags    []string
		refusal  string // "" when published
		warned   bool
	}{
		{"loopback, private pipeline", private, "http://127.0.0.1:9/cb", nil, "", false},
		{"metadata, private pipeline", private, "http://169.254.169.254/latest", nil, "cloud metadata", false},
		{"client flag refused", private, "http://127.0.0.1:9/cb", []string{"--allow-private-targets"}, "flag of 'scanwire run'", false},
		{"loopback, strict pipeline", strict, "http://127.0.0.1:9/cb", nil, "--allow-private-targets", false},
		{"public, strict pipeline", strict, "https://93.184.216.34/cb", nil, "", false},
		{"loopback, no pipeline", none, "https://127.0.0.1:9/cb", nil, "is a loopback address", true},
		{"public, no pipeline", none, "https://93.184.216.34/cb", nil, "", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("e%d", i)
			args := append([]string{"publish", "--nats", tt.a.ClientURL(), "--tenant", "acme", "--type", "scan.started", "--scan", "s1", "--id", id,
				"--data", `{"scan_id":"s1","target":"t","callback_url":"` + tt.callback + `"}`}, tt.flags...)
			out, err := runCLI(t, context.Background(), args...)
			switch {
			case tt.refusal == "" && (err != nil || !strings.Contains(out, "published "+id)):
				t.Errorf("want it published: %v %q", err, out)
			case tt.refusal != "" && (err == nil || !strings.Contains(err.Error(), tt.refusal)):
				t.Errorf("got %v, want a refusal naming %q", err, tt.refusal)
			}
			if warned := strings.Contains(out, "warning: no running scanwire pipeline answered"); warned != tt.warned {
				t.Errorf("warned %v, want %v: %q", warned, tt.warned, out)
			}
		})
	}
}

// What no egress policy accepts is refused before connecting, so it is
// named even with no NATS to reach; what depends on the pipeline's policy
// (loopback) needs the pipeline, so without NATS the connection fails.
func TestPublishChecksCallbackURLBeforeConnecting(t *testing.T) {
	t.Parallel()
	publish := func(callback string) error {
		_, err := runCLI(t, context.Background(), "publish", "--nats=nats://127.0.0.1:1", "--tenant", "acme", "--type", "scan.started", "--scan", "s1",
			"--data", `{"scan_id":"s1","target":"t","callback_url":"`+callback+`"}`)
		return err
	}
	if err := publish("https://0xa9fea9fe/cb"); err == nil || !strings.Contains(err.Error(), "data/callback_url") ||
		!strings.Contains(err.Error(), "is 169.254.169.254, a link-local address") {
		t.Errorf("metadata: %v", err)
	}
	if err := publish("https://hooks.example.com:99999/cb"); err == nil || !strings.Contains(err.Error(), "data/callback_url: \"https://hooks.example.com:99999/cb\": port must be 1-65535") {
		t.Errorf("bad port: %v", err)
	}
	if err := publish("https://0x7f.1/cb"); err == nil || strings.Contains(err.Error(), "callback_url") || !strings.Contains(err.Error(), "connect to nats") {
		t.Errorf("loopback with no NATS: %v, want the connection's failure (the pipeline decides loopback)", err)
	}
}
