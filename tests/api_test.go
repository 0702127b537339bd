package tests

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/services/gateway"
)

const (
	adminKey  = "admin-key-0123456789"
	acmeKey   = "acme-key-0123456789"
	globexKey = "globex-key-0123456789"
)

func withGateway() pipelineOpt {
	return func(c *app.Config) {
		c.Services = append(c.Services, app.ServiceGateway)
		c.HTTPAddr = "127.0.0.1:0"
		c.Gateway.Keys = gateway.Keys{Admin: adminKey, Tenants: map[string]string{"acme": acmeKey, "globex": globexKey}}
		c.Gateway.TestWait = 10 * time.Second
	}
}

// api is a client of the gateway with one key.
type api struct {
	t    testing.TB
	base string
	key  string
}

func (p *pipeline) api(t testing.TB, key string) *api {
	return &api{t: t, base: "http://" + p.HTTPAddr(), key: key}
}

// do sends a request and decodes a JSON answer into out (if not nil).
func (a *api) do(method, path string, body any, out any, hdr ...string) int {
	a.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, a.base+path, r)
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s: answer is not JSON: %s", method, path, raw)
		}
	}
	return resp.StatusCode
}

type subDoc struct {
	ID      string `json:"id"`
	Tenant  string `json:"tenant"`
	URL     string `json:"url"`
	Secrets []struct {
		Secret  string     `json:"secret"`
		Expires *time.Time `json:"expires"`
	} `json:"secrets"`
	Description string `json:"description"`
}

func (a *api) createSub(doc map[string]any) subDoc {
	a.t.Helper()
	var s subDoc
	var e map[string]any
	code := a.do("POST", "/v1/subscriptions", doc, &e)
	if code != http.StatusCreated {
		a.t.Fatalf("create subscription: %d %v", code, e)
	}
	b, _ := json.Marshal(e)
	_ = json.Unmarshal(b, &s)
	return s
}

// One tenant's key cannot read, change, test, replay or publish for
// another tenant, on any endpoint; where existence would leak the answer is
// 404.
func TestAPITenantIsolation(t *testing.T) {
	t.Parallel()
	p, sub, id := withDeadLetter(t)
	globex, admin := p.api(t, globexKey), p.api(t, adminKey)
	dlqID := fmt.Sprint(id)

	tests := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"get", "GET", "/v1/subscriptions/" + sub.ID, nil, 404},
		{"patch", "PATCH", "/v1/subscriptions/" + sub.ID, map[string]any{"url": "https://evil.example.com"}, 404},
		{"delete", "DELETE", "/v1/subscriptions/" + sub.ID, nil, 404},
		{"rotate", "POST", "/v1/subscriptions/" + sub.ID + "/rotate-secret", nil, 404},
		{"test", "POST", "/v1/subscriptions/" + sub.ID + "/test", nil, 404},
		{"attempts", "GET", "/v1/subscriptions/" + sub.ID + "/attempts", nil, 404},
		{"replay", "POST", "/v1/dlq/" + dlqID + "/replay", nil, 404},
		{"create for acme", "POST", "/v1/subscriptions", map[string]any{"tenant": "acme", "url": "https://h.example.com", "events": []string{"*"}}, 403},
		{"list as acme", "GET", "/v1/subscriptions?tenant=acme", nil, 403},
		{"publish for acme", "POST", "/v1/events", `{"specversion":"1.0","id":"x1","source":"//s","type":"scan.started","subject":"s1","tenant":"acme","datacontenttype":"application/json","data":{"scan_id":"s1","target":"t"}}`, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e map[string]any
			if code := globex.do(tt.method, tt.path, tt.body, &e, "Content-Type", "application/cloudevents+json"); code != tt.want {
				t.Errorf("globex %s %s = %d %v, want %d", tt.method, tt.path, code, e, tt.want)
			}
			if code := (&api{t: t, base: globex.base}).do(tt.method, tt.path, tt.body, nil); code != 401 {
				t.Errorf("no key: %d, want 401", code)
			}
			if code := (&api{t: t, base: globex.base, key: "wrong-key-0123456789"}).do(tt.method, tt.path, tt.body, nil); code != 401 {
				t.Errorf("unknown key: %d, want 401", code)
			}
		})
	}
	var list struct {
		Subscriptions []subDoc `json:"subscriptions"`
	}
	if globex.do("GET", "/v1/subscriptions", nil, &list); len(list.Subscriptions) != 0 {
		t.Errorf("globex lists acme's subscriptions: %+v", list)
	}
	var dl struct {
		DeadLetters []any `json:"dead_letters"`
	}
	if globex.do("GET", "/v1/dlq", nil, &dl); len(dl.DeadLetters) != 0 {
		t.Errorf("globex sees acme's dead letters: %+v", dl)
	}
	// Nothing globex tried changed acme's subscription.
	var got subDoc
	if code := admin.do("GET", "/v1/subscriptions/"+sub.ID, nil, &got); code != 200 || got.URL != sub.URL {
		t.Errorf("admin GET: %d %+v", code, got)
	}
}

// Events over HTTP: binary and structured mode, 202 with the id, the same
// id twice is one event, and a bad event gets fan-out's own words.
func TestAPIPublishEvents(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	r := newReceiver(t, nil)
	sub := acme.createSub(map[string]any{"url": r.URL, "events": []string{"scan.started", "finding.high"}})
	eventually(t, 5*time.Second, func() bool { _, ok := p.Subs.Get("acme", sub.ID); return ok })

	binary := func(id string) int {
		var out map[string]any
		code := acme.do("POST", "/v1/events", `{"scan_id":"s1","target":"t"}`, &out,
			"Ce-Specversion", "1.0", "Ce-Id", id, "Ce-Source", "//scanners/http", "Ce-Type", "scan.started",
			"Ce-Subject", "s1", "Ce-Tenant", "acme", "Content-Type", "application/json")
		if code == 202 && out["id"] != id {
			t.Errorf("202 answer %v does not carry the id", out)
		}
		return code
	}
	if code := binary("http-1"); code != 202 {
		t.Fatalf("binary mode: %d", code)
	}
	if code := binary("http-1"); code != 202 {
		t.Fatalf("binary mode again: %d", code)
	}
	structured := `{"specversion":"1.0","id":"http-2","source":"//s","type":"finding.high","subject":"s1","tenant":"acme","datacontenttype":"application/json",
		"data":{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"<script>","cvss_score":8.1}}`
	if code := acme.do("POST", "/v1/events", structured, nil, "Content-Type", "application/cloudevents+json"); code != 202 {
		t.Fatalf("structured mode: %d", code)
	}
	eventually(t, 10*time.Second, func() bool { return r.count() >= 2 })
	p.settle(t)
	if n := r.count(); n != 2 {
		t.Errorf("%d deliveries, want 2 (the repeated id is one event)", n)
	}

	// The same bad event over HTTP and over NATS: the same message.
	bad := `{"specversion":"1.0","id":"http-3","source":"//s","type":"finding.high","subject":"s1","tenant":"acme","datacontenttype":"application/json",
		"data":{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":4.2}}`
	var e struct {
		Error string `json:"error"`
		Field string `json:"field"`
	}
	if code := acme.do("POST", "/v1/events", bad, &e, "Content-Type", "application/cloudevents+json"); code != 422 || e.Field != "data/cvss_score" {
		t.Fatalf("bad event: %d %+v", code, e)
	}
	m := natsMsg("scans.acme.s1.finding.high", bad)
	publishRaw(t, p.JS, m)
	eventually(t, 10*time.Second, func() bool { return len(p.readStream(t, natsx.StreamRejected)) == 1 })
	if reason := p.readStream(t, natsx.StreamRejected)[0].Header.Get(events.HeaderRejectReason); reason != e.Error {
		t.Errorf("HTTP said %q, fan-out said %q", e.Error, reason)
	}
	if code := acme.do("POST", "/v1/events", strings.Repeat("x", gateway.MaxBody+1), nil, "Content-Type", "application/json"); code != 413 {
		t.Errorf("oversized body: %d, want 413", code)
	}
	if code := acme.do("POST", "/v1/events", "hello", nil, "Content-Type", "text/plain"); code != 400 {
		t.Errorf("not a CloudEvent: %d, want 400", code)
	}
}

// During a rotation's overlap a receiver holding only the old secret and
// one holding only the new both verify; with overlap 0 the old one stops.
func TestAPIRotationOverlap(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	r := newReceiver(t, nil)
	sub := acme.createSub(map[string]any{"url": r.URL, "events": []string{"scan.started"}})
	oldSecret := sub.Secrets[0].Secret
	var rot struct {
		Secret string     `json:"secret"`
		Expire *time.Time `json:"previous_secrets_expire"`
	}
	if code := acme.do("POST", "/v1/subscriptions/"+sub.ID+"/rotate-secret", map[string]string{"overlap": "1h"}, &rot); code != 200 || rot.Secret == "" || rot.Secret == oldSecret {
		t.Fatalf("rotate: %d %+v", code, rot)
	}
	if rot.Expire == nil || time.Until(*rot.Expire) < 59*time.Minute {
		t.Errorf("old secret expires %v, want in 1h", rot.Expire)
	}
	eventually(t, 5*time.Second, func() bool { s, _ := p.Subs.Get("acme", sub.ID); return s != nil && len(s.Secrets) == 2 })
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() == 1 })
	got := r.requests()[0]
	if n := len(strings.Fields(got.Header.Get("webhook-signature"))); n != 2 {
		t.Errorf("%d signatures during the overlap, want 2", n)
	}
	for name, secret := range map[string]string{"old": oldSecret, "new": rot.Secret} {
		if err := verifyStandardWebhook(secret, got.Header, got.Body); err != nil {
			t.Errorf("receiver with only the %s secret: %v", name, err)
		}
	}

	var rot2 struct {
		Secret string `json:"secret"`
	}
	if code := acme.do("POST", "/v1/subscriptions/"+sub.ID+"/rotate-secret", map[string]string{"overlap": "0s"}, &rot2); code != 200 {
		t.Fatalf("rotate with overlap 0: %d", code)
	}
	eventually(t, 5*time.Second, func() bool { s, _ := p.Subs.Get("acme", sub.ID); return s != nil && len(s.Secrets) == 1 })
	p.publish(t, "acme", events.TypeScanStarted, "s2", map[string]any{"scan_id": "s2", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() == 2 })
	got = r.requests()[1]
	if err := verifyStandardWebhook(rot2.Secret, got.Header, got.Body); err != nil {
		t.Errorf("newest secret: %v", err)
	}
	if err := verifyStandardWebhook(rot.Secret, got.Header, got.Body); err == nil {
		t.Error("a secret retired with overlap 0 still verifies")
	}
	var shown map[string]any
	acme.do("GET", "/v1/subscriptions/"+sub.ID, nil, &shown)
	if b, _ := json.Marshal(shown); strings.Contains(string(b), rot2.Secret) {
		t.Error("GET shows the secret; it is shown only on create and rotate")
	}
}

// Two edits of the same revision: one wins, the other gets 409 and
// changes nothing.
func TestAPIConcurrentUpdatesConflict(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	sub := acme.createSub(map[string]any{"url": "http://127.0.0.1:9/x", "events": []string{"scan.started"}})
	req, _ := http.NewRequest("GET", acme.base+"/v1/subscriptions/"+sub.ID, nil)
	req.Header.Set("Authorization", "Bearer "+acmeKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")

	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = acme.do("PATCH", "/v1/subscriptions/"+sub.ID, map[string]string{"description": fmt.Sprint("edit ", i)}, nil, "If-Match", etag)
		}()
	}
	wg.Wait()
	if !(codes[0] == 200 && codes[1] == 409 || codes[0] == 409 && codes[1] == 200) {
		t.Fatalf("codes %v, want one 200 and one 409", codes)
	}
	winner := 0
	if codes[1] == 200 {
		winner = 1
	}
	var got subDoc
	acme.do("GET", "/v1/subscriptions/"+sub.ID, nil, &got)
	if got.Description != fmt.Sprint("edit ", winner) {
		t.Errorf("description %q, want the winner's", got.Description)
	}
	var e map[string]any
	if code := acme.do("PATCH", "/v1/subscriptions/"+sub.ID, map[string]any{"events": []string{"scan.paused"}}, &e); code != 422 || e["field"] != "events[0]" {
		t.Errorf("bad patch: %d %v", code, e)
	}
	if code := acme.do("PATCH", "/v1/subscriptions/"+sub.ID, map[string]any{"secrets": []any{}}, &e); code != 422 || e["field"] != "secrets" {
		t.Errorf("patching secrets: %d %v", code, e)
	}
}

// The test endpoint goes through the pipeline and reports the first
// attempt; the attempt log and the DLQ can be read and a dead letter
// replayed with the same webhook-id.
func TestAPITestAttemptsAndReplay(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	var mu sync.Mutex
	status := 503
	r := newReceiver(t, func(int) int { mu.Lock(); defer mu.Unlock(); return status })
	sub := acme.createSub(map[string]any{"url": r.URL, "events": []string{"finding.high"}, "retry": map[string]any{"schedule": []string{"50ms"}}})
	eventually(t, 5*time.Second, func() bool { _, ok := p.Subs.Get("acme", sub.ID); return ok })

	var res struct {
		EventID   string `json:"event_id"`
		WebhookID string `json:"webhook_id"`
		Attempt   struct {
			Status  int    `json:"status"`
			Attempt int    `json:"attempt"`
			Outcome string `json:"outcome"`
		} `json:"attempt"`
	}
	if code := acme.do("POST", "/v1/subscriptions/"+sub.ID+"/test", nil, &res); code != 200 || res.Attempt.Status != 503 || res.Attempt.Attempt != 1 || res.Attempt.Outcome != "retry" {
		t.Fatalf("test: %d %+v", code, res)
	}
	if ce := r.requests()[0]; !strings.Contains(string(ce.Body), `"type":"webhook.test"`) {
		t.Errorf("test delivery body: %s", ce.Body)
	}
	eventually(t, 10*time.Second, func() bool { return len(p.dlq(t)) == 1 })

	var at struct {
		Attempts []struct {
			Attempt  int     `json:"attempt"`
			Status   int     `json:"status"`
			Latency  float64 `json:"latency_ms"`
			Response string  `json:"response"`
			EventID  string  `json:"event_id"`
		} `json:"attempts"`
	}
	eventually(t, 5*time.Second, func() bool {
		acme.do("GET", "/v1/subscriptions/"+sub.ID+"/attempts?event_id="+res.EventID, nil, &at)
		return len(at.Attempts) == 2
	})
	if at.Attempts[0].Attempt != 1 || at.Attempts[1].Attempt != 2 || at.Attempts[1].Status != 503 || at.Attempts[0].EventID != res.EventID {
		t.Errorf("attempt log: %+v", at)
	}

	var dl struct {
		DeadLetters []struct {
			ID     uint64 `json:"id"`
			Reason string `json:"reason"`
			Job    struct {
				WebhookID string `json:"webhook_id"`
			} `json:"job"`
		} `json:"dead_letters"`
	}
	if code := acme.do("GET", "/v1/dlq", nil, &dl); code != 200 || len(dl.DeadLetters) != 1 || dl.DeadLetters[0].Job.WebhookID != res.WebhookID {
		t.Fatalf("dlq: %d %+v", code, dl)
	}
	mu.Lock()
	status = 200
	mu.Unlock()
	before := r.count()
	if code := acme.do("POST", fmt.Sprintf("/v1/dlq/%d/replay", dl.DeadLetters[0].ID), nil, nil); code != 202 {
		t.Fatalf("replay: %d", code)
	}
	eventually(t, 10*time.Second, func() bool { return r.count() == before+1 })
	last := r.requests()[before]
	if last.Header.Get("webhook-id") != res.WebhookID {
		t.Errorf("replay webhook-id %q, want %q", last.Header.Get("webhook-id"), res.WebhookID)
	}
	if err := verifyStandardWebhook(sub.Secrets[0].Secret, last.Header, last.Body); err != nil {
		t.Errorf("replayed delivery: %v", err)
	}
	if acme.do("GET", "/v1/dlq", nil, &dl); len(dl.DeadLetters) != 0 {
		t.Errorf("a replayed dead letter is still listed: %+v", dl)
	}
}

// An operator's invalid document in the bucket shows in the API as invalid
// and does not stop valid ones from being served.
func TestAPIShowsInvalidDocuments(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	kv, err := p.JS.KeyValue(context.Background(), natsx.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "acme.sub_HANDWRITTEN", []byte(`{"tenant":"acme","url":"https://h.example.com","events":["scan.paused"]}`)); err != nil {
		t.Fatal(err)
	}
	acme.createSub(map[string]any{"url": "https://h.example.com/ok", "events": []string{"scan.started"}})
	var list struct {
		Subscriptions []subDoc          `json:"subscriptions"`
		Invalid       []json.RawMessage `json:"invalid"`
	}
	acme.do("GET", "/v1/subscriptions", nil, &list)
	if len(list.Subscriptions) != 1 || len(list.Invalid) != 1 || !strings.Contains(string(list.Invalid[0]), "scan.paused") {
		t.Errorf("list: %+v", list)
	}
}

// natsMsg is a structured-mode CloudEvent on a NATS subject.
func natsMsg(subject, body string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set("content-type", "application/cloudevents+json")
	m.Data = []byte(body)
	return m
}

// A rotated-out secret leaves the document once it has expired, and no
// webhook sent after its expiry is signed with it.
//
// Delivery prunes the document before it POSTs, so the order of "document
// pruned" and "request received" is not fixed: the checks hold for every
// request, whenever it came, rather than for "the first" one.
func TestExpiredSecretsAreRemoved(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	r := newReceiver(t, nil)
	sub := acme.createSub(map[string]any{"url": r.URL, "events": []string{"scan.started"}})
	oldSecret := sub.Secrets[0].Secret
	var rot struct {
		Secret string     `json:"secret"`
		Expire *time.Time `json:"previous_secrets_expire"`
	}
	if code := acme.do("POST", "/v1/subscriptions/"+sub.ID+"/rotate-secret", map[string]string{"overlap": "1s"}, &rot); code != 200 || rot.Secret == "" || rot.Expire == nil {
		t.Fatalf("rotate: %d %+v", code, rot)
	}
	// Delivery works from the cache: it must hold the rotated document,
	// old secret included, or there is nothing to prune.
	eventually(t, 5*time.Second, func() bool { s, _ := p.Subs.Get("acme", sub.ID); return s != nil && len(s.Secrets) == 2 })
	// The old secret expires on the clock at the time the API returned:
	// that moment is the condition, waited for and no longer.
	eventually(t, 5*time.Second, func() bool { return time.Now().After(*rot.Expire) })
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() >= 1 })
	// The stored document loses the expired secret (and keeps the new one).
	eventually(t, 10*time.Second, func() bool {
		s, _, err := p.Store.Get(context.Background(), "acme", sub.ID)
		return err == nil && len(s.Secrets) == 1 && s.Secrets[0].Secret == rot.Secret
	})
	p.settle(t)
	for i, got := range r.requests() {
		if n := len(strings.Fields(got.Header.Get("webhook-signature"))); n != 1 {
			t.Errorf("request %d: %d signatures after the overlap ended, want 1", i+1, n)
		}
		if err := verifyStandardWebhook(rot.Secret, got.Header, got.Body); err != nil {
			t.Errorf("request %d: new secret: %v", i+1, err)
		}
		if err := verifyStandardWebhook(oldSecret, got.Header, got.Body); err == nil {
			t.Errorf("request %d still verifies with the expired secret", i+1)
		}
	}
}

// What the limits suppressed is visible through the API, per subscription
// and finding type; another tenant sees nothing of it.
func TestAPIScanStats(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	r := newReceiver(t, nil)
	sub := acme.createSub(map[string]any{"url": r.URL, "events": []string{"finding.*"}, "limits": map[string]int{"findings_per_type": 2}})
	eventually(t, 5*time.Second, func() bool { _, ok := p.Subs.Get("acme", sub.ID); return ok })
	for i := range 5 {
		data := finding("s1", "sqli", 9, "SQLi")
		data["finding_id"] = fmt.Sprint(i)
		p.publish(t, "acme", events.TypeFindingHigh, "s1", data)
	}
	p.settle(t)
	var st struct {
		Subscriptions []struct {
			SubscriptionID string `json:"subscription_id"`
			Admitted       int    `json:"admitted"`
			Suppressed     int    `json:"suppressed"`
			ByType         map[string]struct {
				Suppressed int `json:"suppressed"`
			} `json:"by_type"`
		} `json:"subscriptions"`
	}
	if code := acme.do("GET", "/v1/scans/s1/stats", nil, &st); code != 200 || len(st.Subscriptions) != 1 {
		t.Fatalf("stats: %d %+v", code, st)
	}
	if s := st.Subscriptions[0]; s.SubscriptionID != sub.ID || s.Admitted != 2 || s.Suppressed != 3 || s.ByType["sqli"].Suppressed != 3 {
		t.Errorf("stats %+v", s)
	}
	var other struct {
		Subscriptions []any `json:"subscriptions"`
	}
	if p.api(t, globexKey).do("GET", "/v1/scans/s1/stats", nil, &other); len(other.Subscriptions) != 0 {
		t.Errorf("globex sees acme's stats: %+v", other)
	}
	resp, err := http.Get("http://" + p.HTTPAddr() + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("/readyz of a running pipeline: %v %v", err, resp.StatusCode)
	}
}

// Profiles end to end: a Detectify subscription without a secret gets
// unsigned Detectify bodies; a portal (cg) subscription with a user-given
// secret gets X-CG-Hook-Signature over the exact body.
func TestProfilesThroughThePipeline(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	det := newReceiver(t, nil)
	portal := newReceiver(t, nil)
	s1 := acme.createSub(map[string]any{"url": det.URL, "events": []string{"finding.high"}, "profile": "detectify", "secrets": []any{}})
	s2 := acme.createSub(map[string]any{"url": portal.URL, "events": []string{"scan.*"}, "profile": "cg",
		"secrets": []map[string]string{{"secret": "portal-secret-0123456789"}}})
	var e map[string]any
	if code := acme.do("POST", "/v1/subscriptions", map[string]any{"url": det.URL, "events": []string{"*"}, "secrets": []any{}}, &e); code != 422 || e["field"] != "secrets" {
		t.Errorf("unsigned standard-webhooks: %d %v", code, e)
	}
	eventually(t, 5*time.Second, func() bool {
		_, a := p.Subs.Get("acme", s1.ID)
		_, b := p.Subs.Get("acme", s2.ID)
		return a && b
	})
	p.publish(t, "acme", events.TypeFindingHigh, "s1", finding("s1", "xss", 6.2, `Reflected XSS in <script> & "quotes"`))
	p.publish(t, "acme", events.TypeScanFinished, "s1", map[string]any{"scan_id": "s1", "target": "app.example.com", "status": "completed"})
	eventually(t, 10*time.Second, func() bool { return det.count() == 1 && portal.count() == 1 })

	d := det.requests()[0]
	if d.Header.Get("X-Detectify-Signature") != "" {
		t.Error("a Detectify subscription without a secret got a signature header")
	}
	if !strings.HasPrefix(string(d.Body), `{"type":"event_finding_high","domain":"app.example.com","cvss_score":6.2,"severity":"high","title":"Reflected XSS in <script> & \"quotes\""`) {
		t.Errorf("detectify body %s", d.Body)
	}
	c := portal.requests()[0]
	mac := hmac.New(sha256.New, []byte("portal-secret-0123456789"))
	mac.Write(c.Body)
	if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); c.Header.Get("X-CG-Hook-Signature") != want {
		t.Errorf("X-CG-Hook-Signature %q, want %q", c.Header.Get("X-CG-Hook-Signature"), want)
	}
	if !strings.Contains(string(c.Body), `"event":"scan_completed"`) {
		t.Errorf("portal body %s", c.Body)
	}
}
