package tests

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
)

// callbackEvent is a structured scan.started carrying callback.
func callbackEvent(id, callback string) string {
	return `{"specversion":"1.0","id":"` + id + `","source":"//s","type":"scan.started","subject":"s1","tenant":"acme","datacontenttype":"application/json",` +
		`"data":{"scan_id":"s1","target":"t","callback_url":"` + callback + `"}}`
}

// postEvent sends a structured event to POST /v1/events and returns the
// status and the error answer.
func postEvent(a *api, body string) (int, struct{ Error, Field string }) {
	a.t.Helper()
	var e struct{ Error, Field string }
	code := a.do("POST", "/v1/events", body, &e, "Content-Type", "application/cloudevents+json")
	return code, e
}

// POST /v1/events judges a scan.started's callback_url with the running
// pipeline's egress policy and refuses what it refuses with 422 naming
// data/callback_url, storing nothing: the SIIT-translated form of
// 127.0.0.1 (issue 10.6), a loopback http URL, and names that resolve only
// to blocked addresses (through the policy's resolver). A name that does
// not resolve is left to delivery, which judges the address it dials.
func TestEgressCallbackURLRefusedByTheGateway(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway(), func(c *app.Config) { c.AllowPrivateTargets = false })
	acme := p.api(t, acmeKey)
	tests := []struct {
		url, want string // want: part of the error; "" means accepted
	}{
		{"https://[::ffff:0:7f00:1]/cb", `"https://[::ffff:0:7f00:1]/cb" embeds 127.0.0.1, a loopback address (127.0.0.0/8)`},
		{"http://127.0.0.1/cb", "must use https"},
		{"https://127.0.0.1/cb", "is a loopback address (127.0.0.0/8)"},
		{"https://[64:ff9b::a00:1]/cb", "embeds 10.0.0.1, a private address (10.0.0.0/8)"},
		{"https://internal.example.net/cb", "internal.example.net resolves only to blocked addresses: 10.1.2.3 is a private address (10.0.0.0/8); subscriptions must reach the public internet (scanwire run --allow-private-targets"},
		{"https://rebind.example.net/cb", "rebind.example.net resolves only to blocked addresses: 169.254.169.254 is a link-local address (cloud metadata); no webhook may reach it"},
		{"https://hooks.example.com/cb", ""},
		{"https://not-in-dns.example.org/cb", ""},
	}
	accepted := 0
	for i, tt := range tests {
		code, e := postEvent(acme, callbackEvent("cb-"+strconv.Itoa(i), tt.url))
		switch {
		case tt.want == "" && code != 202:
			t.Errorf("%s: %d %+v, want 202", tt.url, code, e)
		case tt.want == "":
			accepted++
		case code != 422 || e.Field != "data/callback_url" || !strings.HasPrefix(e.Error, "invalid event: data/callback_url: ") || !strings.Contains(e.Error, tt.want):
			t.Errorf("%s: %d %+v, want 422 on data/callback_url containing %q", tt.url, code, e, tt.want)
		}
	}
	if n := len(p.readStream(t, natsx.StreamScanEvents)); n != accepted {
		t.Errorf("SCAN_EVENTS holds %d events, want the %d accepted", n, accepted)
	}
}

// The gateway uses the pipeline's own policy: under
// --allow-private-targets a loopback callback passes, and cloud metadata
// is still refused.
func TestEgressCallbackURLFollowsThePipelinesPolicy(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	if code, e := postEvent(acme, callbackEvent("lo", "http://127.0.0.1:9/cb")); code != 202 {
		t.Errorf("loopback under --allow-private-targets: %d %+v", code, e)
	}
	if code, e := postEvent(acme, callbackEvent("md", "https://rebind.example.net/cb")); code != 422 || e.Field != "data/callback_url" || !strings.Contains(e.Error, "cloud metadata") {
		t.Errorf("a name resolving to metadata: %d %+v", code, e)
	}
}

// One check at every door: what the gateway refuses, fan-out rejects with
// the very same message when the event arrives over NATS instead.
func TestEgressCallbackURLSameMessageAtEveryDoor(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway(), func(c *app.Config) { c.AllowPrivateTargets = false })
	acme := p.api(t, acmeKey)
	for i, u := range []string{"https://[::ffff:0:7f00:1]/cb", "https://internal.example.net/cb"} {
		body := callbackEvent("door-"+strconv.Itoa(i), u)
		code, e := postEvent(acme, body)
		if code != 422 {
			t.Fatalf("%s: gateway answered %d %+v", u, code, e)
		}
		publishRaw(t, p.JS, natsMsg("scans.acme.s1.started", body))
		eventually(t, 10*time.Second, func() bool { return len(p.readStream(t, natsx.StreamRejected)) == i+1 })
		m := p.readStream(t, natsx.StreamRejected)[i]
		if reason := m.Header.Get(events.HeaderRejectReason); reason != e.Error {
			t.Errorf("%s: the gateway said %q, fan-out said %q", u, e.Error, reason)
		}
		if code := m.Header.Get(events.HeaderRejectCode); code != string(events.RejectCallbackURL) {
			t.Errorf("%s: reject code %q", u, code)
		}
	}
}
