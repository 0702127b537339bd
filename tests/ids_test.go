package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// call sends a request and returns the status and the raw answer.
func (a *api) call(method, path string, body any) (int, string) {
	a.t.Helper()
	var raw json.RawMessage
	code := a.do(method, path, body, &raw)
	return code, string(raw)
}

// leaksNATS reports whether an answer carries an error of NATS's own.
func leaksNATS(body string) bool {
	b := strings.ToLower(body)
	return strings.Contains(b, "nats:") || strings.Contains(b, "jetstream") || strings.Contains(b, "invalid key") ||
		strings.Contains(b, "invalid subject")
}

// withDeadLetter starts a pipeline with the gateway where acme has a
// subscription with attempts and a dead letter, and returns them.
func withDeadLetter(t *testing.T) (p *pipeline, sub subDoc, dlqID uint64) {
	t.Helper()
	p = startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	failing := newReceiver(t, func(int) int { return 500 })
	sub = acme.createSub(map[string]any{"url": failing.URL, "events": []string{"scan.*"}, "retry": map[string]any{"schedule": []string{"50ms"}}})
	eventually(t, 5*time.Second, func() bool { _, ok := p.Subs.Get("acme", sub.ID); return ok })
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 1 })
	var dl struct {
		DeadLetters []struct {
			ID uint64 `json:"id"`
		} `json:"dead_letters"`
	}
	if code := acme.do("GET", "/v1/dlq", nil, &dl); code != 200 || len(dl.DeadLetters) != 1 {
		t.Fatalf("acme's DLQ: %d %+v", code, dl)
	}
	return p, sub, dl.DeadLetters[0].ID
}

// Every id in an API path is checked before it is used: one that cannot
// name a resource is 404, never 503 (a NATS error) and never a wildcard
// over other records. Numbers that are valid tokens but name nothing are
// 404 too (a scan with no records has empty stats).
func TestMalformedIDsNeverReachNATS(t *testing.T) {
	t.Parallel()
	p, sub, dlqID := withDeadLetter(t)
	subID := sub.ID
	acme, admin := p.api(t, acmeKey), p.api(t, adminKey)

	malformed := []string{"*", ">", "%2A", "%3E", "a%20b", "%2F", "a%2Fb", "a.b", "acme.%3E", "sub_01KAP...", "sub_*", "sub_01KAP%2A",
		"%C3%A9", "a%00b", strings.Repeat("s", events.MaxTokenLen+1)}
	numbers := []string{"0", "-1", "99999999999999999999999", "18446744073709551615", "424242"}
	type endpoint struct {
		method, path string // path with %s for the id
		body         any
		tokenIsFine  bool // a valid token may name a resource here (not a 404 then)
		adminOnly    bool // a tenant key gets 403 whatever the id
	}
	endpoints := []endpoint{
		{"GET", "/v1/subscriptions/%s", nil, false, false},
		{"PATCH", "/v1/subscriptions/%s", map[string]any{"description": "x"}, false, false},
		{"DELETE", "/v1/subscriptions/%s", nil, false, false},
		{"POST", "/v1/subscriptions/%s/rotate-secret", nil, false, false},
		{"POST", "/v1/subscriptions/%s/test", nil, false, false},
		{"GET", "/v1/subscriptions/%s/attempts", nil, false, false},
		{"GET", "/v1/scans/%s/stats?tenant=acme", nil, true, false},
		{"POST", "/v1/dlq/%s/replay", nil, false, false},
		{"GET", "/v1/tenants/%s", nil, false, false},
		{"PUT", "/v1/tenants/%s", map[string]any{"partner": ""}, true, true},
		{"DELETE", "/v1/tenants/%s", nil, false, true},
	}
	for _, ep := range endpoints {
		for i, id := range append(append([]string{}, malformed...), numbers...) {
			isNumber := i >= len(malformed)
			if isNumber && ep.tokenIsFine && ep.method != "GET" {
				continue // PUT /v1/tenants/0 creates tenant "0", rightly
			}
			path := fmt.Sprintf(ep.path, id)
			for _, who := range []struct {
				name string
				api  *api
			}{{"acme", acme}, {"admin", admin}} {
				t.Run(ep.method+" "+path+" as "+who.name, func(t *testing.T) {
					code, body := who.api.call(ep.method, path, ep.body)
					switch {
					case code == http.StatusServiceUnavailable || code >= 500:
						t.Errorf("%d %s", code, body)
					case leaksNATS(body):
						t.Errorf("NATS's error reaches the client: %d %s", code, body)
					case ep.adminOnly && who.name == "acme":
						// 404 where the id leaves no route ("/v1/tenants//").
						if code != http.StatusForbidden && code != http.StatusNotFound {
							t.Errorf("%d %s, want 403", code, body)
						}
					case isNumber && ep.tokenIsFine:
						if code != http.StatusOK || !strings.Contains(body, `"subscriptions":[]`) {
							t.Errorf("%d %s, want 200 with no stats", code, body)
						}
					case code != http.StatusNotFound:
						t.Errorf("%d %s, want 404", code, body)
					}
				})
			}
		}
	}

	// Nothing above reached acme's records: the subscription, its
	// attempts and its dead letter are all still there.
	var got subDoc
	if code := acme.do("GET", "/v1/subscriptions/"+subID, nil, &got); code != 200 || got.ID != subID {
		t.Errorf("acme's subscription after the probes: %d %+v", code, got)
	}
	if len(p.dlq(t)) != 1 {
		t.Errorf("acme's dead letter %d is gone: a probe replayed it", dlqID)
	}
}

// GET /v1/subscriptions/*/attempts answered with every attempt of the
// caller's tenant; /v1/scans/*/stats with mangled records.
func TestWildcardIDsReadNoOtherRecords(t *testing.T) {
	t.Parallel()
	p, sub, _ := withDeadLetter(t)
	subID := sub.ID
	acme := p.api(t, acmeKey)
	var list struct {
		Attempts []json.RawMessage `json:"attempts"`
	}
	if code := acme.do("GET", "/v1/subscriptions/"+subID+"/attempts", nil, &list); code != 200 || len(list.Attempts) == 0 {
		t.Fatalf("acme's own attempts: %d %d", code, len(list.Attempts))
	}
	for _, path := range []string{"/v1/subscriptions/*/attempts", "/v1/subscriptions/%3E/attempts", "/v1/scans/*/stats", "/v1/scans/%3E/stats"} {
		if code, body := acme.call("GET", path, nil); code != 404 || strings.Contains(body, "attempts\":[") || strings.Contains(body, subID) {
			t.Errorf("GET %s = %d %s, want 404", path, code, body)
		}
	}
}

// The README's own placeholder got 503 "subscription store unavailable",
// and POST /v1/dlq/0/replay showed a raw NATS error.
func TestREADMEPlaceholderAndDeadLetterZeroAre404(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	for _, key := range []string{acmeKey, adminKey} {
		a := p.api(t, key)
		for _, c := range []struct{ method, path string }{
			{"GET", "/v1/subscriptions/sub_01KAP..."},
			{"POST", "/v1/subscriptions/sub_01KAP.../test"},
			{"GET", "/v1/subscriptions/sub_01KAP.../attempts"},
			{"PATCH", "/v1/subscriptions/sub_01KAP..."},
			{"POST", "/v1/dlq/0/replay"},
			{"POST", "/v1/dlq/-1/replay"},
			{"POST", "/v1/dlq/18446744073709551616/replay"},
		} {
			if code, body := a.call(c.method, c.path, `{}`); code != 404 || leaksNATS(body) {
				t.Errorf("%s %s = %d %s, want 404 in our words", c.method, c.path, code, body)
			}
		}
	}
}

// Query parameters that become subject tokens are checked too: 400 naming
// the rule. The admin's ?subscription_id= on the DLQ needs ?tenant=.
func TestMalformedQueryIDsAre400(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme, admin := p.api(t, acmeKey), p.api(t, adminKey)
	tests := []struct {
		name       string
		api        *api
		path       string
		want       int
		wantField  string
		wantInBody string
	}{
		{"admin lists subscriptions of *", admin, "/v1/subscriptions?tenant=*", 400, "tenant", "?tenant= must be 1-128 characters"},
		{"admin lists subscriptions of >", admin, "/v1/subscriptions?tenant=%3E", 400, "tenant", ""},
		{"admin DLQ of a.b", admin, "/v1/dlq?tenant=a.b", 400, "tenant", ""},
		{"admin rejected of a space", admin, "/v1/rejected?tenant=a%20b", 400, "tenant", ""},
		{"admin signing secret of *", admin, "/v1/signing-secret?tenant=*", 400, "tenant", ""},
		{"admin scan stats of *", admin, "/v1/scans/s1/stats?tenant=*", 400, "tenant", ""},
		{"tenant key with tenant=*", acme, "/v1/subscriptions?tenant=*", 400, "tenant", ""},
		{"DLQ of subscription *", acme, "/v1/dlq?subscription_id=*", 400, "subscription_id", "?subscription_id= must be"},
		{"DLQ of subscription sub_01KAP...", acme, "/v1/dlq?subscription_id=sub_01KAP...", 400, "subscription_id", ""},
		{"admin DLQ of a subscription without tenant", admin, "/v1/dlq?subscription_id=sub_01KAPXXXXXXXXXXXXXXXXXXXXX", 422, "tenant", "needs ?tenant="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e struct{ Error, Field string }
			code := tt.api.do("GET", tt.path, nil, &e)
			if code != tt.want || e.Field != tt.wantField || !strings.Contains(e.Error, tt.wantInBody) || leaksNATS(e.Error) {
				t.Errorf("%d %+v, want %d field %q saying %q", code, e, tt.want, tt.wantField, tt.wantInBody)
			}
		})
	}
}

// A secret sent in a body never comes back in an error, not even one
// character of it: neither a malformed body's nor a refused secret's.
func TestRefusedSecretsAreNotEchoed(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	r := newReceiver(t, nil)
	sub := acme.createSub(map[string]any{"url": r.URL, "events": []string{"scan.*"}})
	const secret = "Zq9xKv7Wm2Lp4Rt8Yb3N" // no substring of 3 appears in any message of ours
	tests := []struct {
		name, method, path, body string
	}{
		{"unquoted secret on create", "POST", "/v1/subscriptions", `{"url":"` + r.URL + `","events":["scan.*"],"secrets":[{"secret":` + secret + `}]}`},
		{"literal secret for standard webhooks", "POST", "/v1/subscriptions", `{"url":"` + r.URL + `","events":["scan.*"],"secrets":[{"secret":"` + secret + `"}]}`},
		{"whsec_ secret not base64", "POST", "/v1/subscriptions", `{"url":"` + r.URL + `","events":["scan.*"],"secrets":[{"secret":"whsec_` + secret + `!!"}]}`},
		{"secret too short", "POST", "/v1/subscriptions", `{"url":"` + r.URL + `","events":["scan.*"],"profile":"pwnkemon","secrets":[{"secret":"` + secret[:12] + `"}]}`},
		{"unquoted secret on rotate", "POST", "/v1/subscriptions/" + sub.ID + "/rotate-secret", `{"secret":` + secret + `}`},
		{"bad secret on rotate", "POST", "/v1/subscriptions/" + sub.ID + "/rotate-secret", `{"secret":"whsec_` + secret + `!!"}`},
		{"secret of the wrong type", "POST", "/v1/subscriptions/" + sub.ID + "/rotate-secret", `{"secret":["` + secret + `"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := acme.call(tt.method, tt.path, tt.body)
			if code < 400 {
				t.Fatalf("%d %s: accepted", code, body)
			}
			for i := 0; i+3 <= len(secret); i++ {
				if strings.Contains(body, secret[i:i+3]) {
					t.Fatalf("the answer shows %q of the secret: %s", secret[i:i+3], body)
				}
			}
			if strings.Contains(body, "'"+secret[:1]+"'") {
				t.Errorf("the answer quotes the secret's first character: %s", body)
			}
		})
	}
}

// No job is made twice (issue 12, point 3): events fan-out sees again after
// their jobs were delivered and the pipeline restarted, as when a kill -9
// loses fan-out's acks, make no second job: for a subscription, for a
// finding held to limits, and for a per-scan callback. A work queue forgot
// the dedupe ids of the jobs it had delivered; a job's own subject, kept
// with the job, does not forget.
func TestNoJobMadeTwiceAcrossRestarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startPipeline(t, dir)
	r, cb := newReceiver(t, nil), newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"*"}})
	msgs := []*nats.Msg{
		eventMsg(t, "acme", events.TypeScanStarted, "s9", map[string]any{"scan_id": "s9", "target": "app.example.com", "callback_url": cb.URL + "/cb"}),
		eventMsg(t, "acme", events.TypeFindingHigh, "s9", finding("s9", "xss", 7.5, "XSS")),
		eventMsg(t, "acme", events.TypeScanFinished, "s9", map[string]any{"scan_id": "s9", "target": "app.example.com", "status": "completed"}),
	}
	for _, m := range msgs {
		publishRaw(t, p.JS, m)
	}
	eventually(t, 10*time.Second, func() bool { return r.count() == 3 && cb.count() == 1 })
	p.settle(t)
	p.stop(t)

	p = startPipeline(t, dir)
	for _, m := range msgs {
		// Past SCAN_EVENTS' own dedupe, as once its window is over.
		m.Header.Set(nats.MsgIdHdr, "again-"+m.Header.Get(nats.MsgIdHdr))
		publishRaw(t, p.JS, m)
	}
	p.settle(t)
	if r.count() != 3 || cb.count() != 1 {
		t.Errorf("%d webhooks and %d callbacks after the events came again, want still 3 and 1", r.count(), cb.count())
	}
	if n := len(p.jobs(t)); n != 4 {
		t.Errorf("DELIVERIES holds %d jobs, want 4: one per (event, subscription) and one callback", n)
	}
}
