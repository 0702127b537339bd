package profiles

// Each verifier below is written from its product's public webhook
// document (summarised in docs/design.md, Profiles), as a receiver would
// write it, not from the signer.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/scanwire/scanwire/internal/events"
)

const literal = "whsec_0123456789abcdefLiteral"

var titles = []string{
	`Reflected XSS in <script> & "quotes"`,
	"Überprüfung – 日本語 ✓",
	"line\u2028separator and \\u2028 as text",
}

func testEvent(t *testing.T, typ, data string) *event.Event {
	t.Helper()
	e := event.New()
	e.SetID("evt-1")
	e.SetSource("//scanners/test")
	e.SetType(typ)
	e.SetSubject("s1")
	e.SetExtension("tenant", "acme")
	e.SetDataContentType("application/json")
	e.DataEncoded = []byte(data)
	return &e
}

func findingData(title string, cvss float64) string {
	b, _ := json.Marshal(map[string]any{"scan_id": "s1", "target": "app.example.com", "finding_id": "f1", "type": "xss",
		"title": title, "cvss_score": cvss, "url": "https://app.example.com/f1", "tags": []string{"new"}})
	return string(b) // Go's encoding: \u003c escapes, as a Go scanner would publish
}

func render(t *testing.T, name string, e *event.Event, secrets ...string) Request {
	t.Helper()
	p, ok := Lookup(name)
	if !ok {
		t.Fatalf("no profile %s", name)
	}
	structured, err := events.Structured(e)
	if err != nil {
		t.Fatalf("structured: %v", err)
	}
	req, err := p.Render(Delivery{WebhookID: "msg_1", Event: e, Structured: structured, Secrets: secrets, Now: time.Now(), UserAgent: "scanwire/test"})
	if err != nil {
		t.Fatalf("render %s: %v", name, err)
	}
	return req
}

func hexMAC(secret string, parts ...[]byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	for _, p := range parts {
		m.Write(p)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Pwnkemon: parts = dict(p.split("=", 1) for p in header.split(",")),
// HMAC(secret, ts + "." + raw body), constant-time compare, 5-minute window.
func verifyPwnkemon(secret string, req Request) error {
	parts := map[string]string{}
	for _, p := range strings.Split(req.Header.Get("X-Pwnkemon-Signature"), ",") {
		k, v, _ := strings.Cut(p, "=")
		parts[k] = v
	}
	ts, sig := parts["t"], parts["v1"]
	if ts == "" || sig == "" {
		return fmt.Errorf("no t= or v1=")
	}
	sec, _ := strconv.ParseInt(ts, 10, 64)
	if math.Abs(float64(time.Now().Unix()-sec)) > 300 {
		return fmt.Errorf("outside the replay window")
	}
	if !hmac.Equal([]byte(hexMAC(secret, []byte(ts+"."), req.Body)), []byte(sig)) {
		return fmt.Errorf("signature mismatch")
	}
	return nil
}

// verifyPlexTrac runs the PlexTrac document's own JavaScript under Node:
// hmac.update(Buffer.from(JSON.stringify(payload))) over the parsed body.
// Nothing in Go can stand in for JSON.stringify; without node the test
// skips.
func verifyPlexTrac(t *testing.T, secret string, req Request) error {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed: the PlexTrac verifier is the document's JavaScript")
	}
	script := `const crypto = require("crypto");
let raw = ""; process.stdin.on("data", d => raw += d).on("end", () => {
  const payload = JSON.parse(raw);
  const hmac = crypto.createHmac('SHA256', process.argv[1]);
  hmac.update(Buffer.from(JSON.stringify(payload)));
  process.stdout.write(hmac.digest('hex'));
});`
	cmd := exec.Command(node, "-e", script, secret)
	cmd.Stdin = bytes.NewReader(req.Body)
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("node: %v", err)
	}
	if got := req.Header.Get("x-authorization-hmac-256"); got != string(out) {
		return fmt.Errorf("x-authorization-hmac-256 %s, the document's code computes %s over JSON.stringify(JSON.parse(body))", got, out)
	}
	return nil
}

// verifyPlexTracPython runs the document's Python verifier:
// json.dumps(payload, separators=(',', ':')).
func verifyPlexTracPython(t *testing.T, secret string, req Request) error {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	script := `import hmac, hashlib, json, sys
payload = json.loads(sys.stdin.buffer.read())
payload_str = json.dumps(payload, separators=(',', ':'))
sys.stdout.write(hmac.new(sys.argv[1].encode(), payload_str.encode(), hashlib.sha256).hexdigest())`
	cmd := exec.Command(py, "-c", script, secret)
	cmd.Stdin = bytes.NewReader(req.Body)
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("python: %v", err)
	}
	if got := req.Header.Get("x-authorization-hmac-256"); got != string(out) {
		return fmt.Errorf("python computes %s, header %s", out, got)
	}
	return nil
}

func TestPwnkemon(t *testing.T) {
	completed := `{"scan_id":"8fda1c2e","target":"example.com","status":"completed","tier":"standard","credits_used":5,"findings_count":5,
		"summary":{"risk_rating":"medium","summary":"Überprüfung <ok>","attack_chains":["a & b"]}}`
	req := render(t, Pwnkemon, testEvent(t, "scan.finished", completed), literal)
	if err := verifyPwnkemon(literal, req); err != nil {
		t.Fatal(err)
	}
	if err := verifyPwnkemon("another-secret-0123456789", req); err == nil {
		t.Error("a wrong secret verified")
	}
	if req.Header.Get("User-Agent") != "Pwnkemon/1.0" || req.Header.Get("X-Pwnkemon-Webhook-Timestamp") == "" {
		t.Errorf("headers %v", req.Header)
	}
	var report map[string]any
	_ = json.Unmarshal(req.Body, &report)
	if report["status"] != "completed" || report["findings_count"] != 5.0 || report["summary"].(map[string]any)["summary"] != "Überprüfung <ok>" {
		t.Errorf("report %v", report)
	}
	if !strings.HasPrefix(string(req.Body), `{"scan_id":"8fda1c2e","status":"completed","target":"example.com","tier":"standard","credits_used":5,"findings_count":5,"summary":`) {
		t.Errorf("report fields out of the document's order: %s", req.Body)
	}

	failed := render(t, Pwnkemon, testEvent(t, "scan.finished", `{"scan_id":"s1","target":"t","status":"failed","error":"Credit budget exceeded","findings_count":2}`), literal)
	if string(failed.Body) != `{"scan_id":"s1","status":"failed","error":"Credit budget exceeded"}` {
		t.Errorf("reduced failure payload: %s", failed.Body)
	}
	if err := verifyPwnkemon(literal, failed); err != nil {
		t.Error(err)
	}
	if (pwnkemon{}).Accepts("finding.high") {
		t.Error("pwnkemon accepts findings")
	}
}

func TestPlexTracStringifyForm(t *testing.T) {
	for _, title := range titles {
		t.Run(title, func(t *testing.T) {
			req := render(t, PlexTrac, testEvent(t, "finding.high", findingData(title, 7.0)), literal)
			if err := verifyPlexTrac(t, literal, req); err != nil {
				t.Fatal(err)
			}
			if err := verifyPlexTrac(t, "another-secret-0123456789", req); err == nil {
				t.Error("a wrong secret verified")
			}
			if bytes.Contains(req.Body, []byte(`\u003c`)) || strings.Contains(title, "\u2028") && !bytes.Contains(req.Body, []byte("\u2028")) {
				t.Errorf("escaped where JSON.stringify does not: %s", req.Body)
			}
			var got struct {
				Event string `json:"event"`
				Data  struct {
					Title string  `json:"title"`
					CVSS  float64 `json:"cvss_score"`
				} `json:"data"`
			}
			_ = json.Unmarshal(req.Body, &got)
			if got.Data.Title != title || got.Event != "finding.high" || got.Data.CVSS != 7 {
				t.Errorf("body %s", req.Body)
			}
			if !bytes.Contains(req.Body, []byte(`"cvss_score":7,`)) {
				t.Errorf("7.0 not printed as JavaScript does: %s", req.Body)
			}
		})
	}
}

// The document's Python verifier (json.dumps with compact separators)
// agrees for ASCII text; for non-ASCII it re-escapes (ensure_ascii) and
// cannot match what JSON.stringify signs: see the README.
func TestPlexTracPythonVerifierASCII(t *testing.T) {
	req := render(t, PlexTrac, testEvent(t, "finding.high", findingData(titles[0], 7.5)), literal)
	if err := verifyPlexTracPython(t, literal, req); err != nil {
		t.Fatal(err)
	}
}

func TestJSNumbers(t *testing.T) {
	for in, want := range map[float64]string{7: "7", 7.5: "7.5", 1e21: "1e+21", 1e-7: "1e-7", 0.000001: "0.000001", 123456789012: "123456789012", -0.5: "-0.5", 1.5e300: "1.5e+300"} {
		if got := jsNumber(in); got != want {
			t.Errorf("jsNumber(%v) = %s, want %s", in, got, want)
		}
	}
}

func TestXSignature(t *testing.T) {
	for _, title := range titles {
		req := render(t, XSignature, testEvent(t, "finding.high", findingData(title, 8)), literal)
		if req.Header.Get("X-Signature") != hexMAC(literal, req.Body) {
			t.Fatal("X-Signature is not the hex HMAC of the body")
		}
		var body struct {
			Event     string `json:"event"`
			Payload   struct{ Title string }
			Timestamp int64 `json:"timestamp"`
		}
		if err := json.Unmarshal(req.Body, &body); err != nil {
			t.Fatal(err)
		}
		if body.Event != "finding.high" || body.Payload.Title != title || strconv.FormatInt(body.Timestamp, 10) != req.Header.Get("X-Timestamp") {
			t.Errorf("body %s headers %v", req.Body, req.Header)
		}
		if req.Header.Get("X-Webhook-Event-Id") != "msg_1" {
			t.Errorf("X-Webhook-Event-Id %q", req.Header.Get("X-Webhook-Event-Id"))
		}
	}
	test := render(t, XSignature, testEvent(t, "webhook.test", `{"subscription_id":"sub_1"}`), literal)
	var body struct {
		Event   string            `json:"event"`
		Payload map[string]string `json:"payload"`
	}
	_ = json.Unmarshal(test.Body, &body)
	if body.Event != "test.webhook-event" || body.Payload["company"] != "acme" {
		t.Errorf("test event %s", test.Body)
	}
}

func TestCG(t *testing.T) {
	for typ, name := range map[string]string{"scan.started": "scan_started", "scan.finished": "scan_completed"} {
		req := render(t, CG, testEvent(t, typ, `{"scan_id":"s1","target":"t","status":"completed"}`), literal)
		// Ruby: 'sha256=' + OpenSSL::HMAC.hexdigest('sha256', SECRET, payload_body)
		if want := "sha256=" + hexMAC(literal, req.Body); req.Header.Get("X-CG-Hook-Signature") != want {
			t.Errorf("%s: signature %q, want %q", typ, req.Header.Get("X-CG-Hook-Signature"), want)
		}
		var body map[string]any
		_ = json.Unmarshal(req.Body, &body)
		if body["event"] != name || body["organization"] != "acme" {
			t.Errorf("%s: body %s", typ, req.Body)
		}
	}
	req := render(t, CG, testEvent(t, "finding.high", findingData(titles[0], 9)))
	if req.Header.Get("X-CG-Hook-Signature") != "" {
		t.Error("signed without a secret")
	}
}

func TestDetectify(t *testing.T) {
	req := render(t, Detectify, testEvent(t, "finding.high", findingData(titles[0], 6.2)), literal)
	// HMAC_SHA256({secret key}, {message content}) = {X-Detectify-Signature value}
	if req.Header.Get("X-Detectify-Signature") != hexMAC(literal, req.Body) {
		t.Error("X-Detectify-Signature is not the hex HMAC of the body")
	}
	want := `{"type":"event_finding_high","domain":"app.example.com","cvss_score":6.2,"severity":"high","title":"Reflected XSS in <script> & \"quotes\"","finding_url":"https://app.example.com/f1","tags":["new"]}`
	if string(req.Body) != want {
		t.Errorf("finding body\n got %s\nwant %s", req.Body, want)
	}
	medium := render(t, Detectify, testEvent(t, "finding.medium", findingData(titles[1], 4.3)))
	if medium.Header.Get("X-Detectify-Signature") != "" {
		t.Error("a signature without a secret; the document says it is omitted")
	}
	var m map[string]any
	_ = json.Unmarshal(medium.Body, &m)
	if m["type"] != "event_finding_medium" || m["severity"] != "medium" || m["title"] != titles[1] {
		t.Errorf("medium body %s", medium.Body)
	}
	started := render(t, Detectify, testEvent(t, "scan.started", `{"scan_id":"s1","target":"my.domain","report_url":"https://r/1"}`), literal)
	if string(started.Body) != `{"type":"event_scan_started","domain":"my.domain","report_url":"https://r/1"}` {
		t.Errorf("scan started %s", started.Body)
	}
	finished := render(t, Detectify, testEvent(t, "scan.finished", `{"scan_id":"s1","target":"my.domain","status":"completed","critical_findings":1,"medium_findings":2,"notice_findings":4}`), literal)
	if string(finished.Body) != `{"type":"event_scan_finished","domain":"my.domain","report_url":"","critical_findings":1,"medium_findings":2,"notice_findings":4}` {
		t.Errorf("scan finished %s", finished.Body)
	}
}

// Standard Webhooks with two live secrets: a receiver holding either one
// verifies.
func TestStandardRotationOverlap(t *testing.T) {
	oldS, newS := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	req := render(t, StandardWebhooks, testEvent(t, "scan.started", `{"scan_id":"s1","target":"t"}`), newS, oldS)
	for _, secret := range []string{oldS, newS} {
		key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		m := hmac.New(sha256.New, key)
		m.Write([]byte(req.Header.Get("Webhook-Id") + "." + req.Header.Get("Webhook-Timestamp") + "."))
		m.Write(req.Body)
		want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
		if !strings.Contains(" "+req.Header.Get("Webhook-Signature")+" ", " "+want+" ") {
			t.Errorf("no signature for %s in %q", secret[:10], req.Header.Get("Webhook-Signature"))
		}
	}
}

// The other profiles sign with the newest secret only, and each attempt
// is signed afresh.
func TestNewestSecretAndFreshSignatures(t *testing.T) {
	e := testEvent(t, "scan.finished", `{"scan_id":"s1","target":"t","status":"completed"}`)
	p, _ := Lookup(Pwnkemon)
	structured, _ := events.Structured(e)
	a, _ := p.Render(Delivery{WebhookID: "m", Event: e, Structured: structured, Secrets: []string{literal, "older-secret-0123456789"}, Now: time.Now()})
	b, _ := p.Render(Delivery{WebhookID: "m", Event: e, Structured: structured, Secrets: []string{literal}, Now: time.Now().Add(3 * time.Second)})
	if verifyPwnkemon(literal, a) != nil || verifyPwnkemon("older-secret-0123456789", a) == nil {
		t.Error("not signed with the newest secret only")
	}
	if a.Header.Get("X-Pwnkemon-Signature") == b.Header.Get("X-Pwnkemon-Signature") {
		t.Error("two attempts carry the same signature")
	}
}

// Rotation overlap for the literal-secret profiles: with a new and an old
// secret live, they sign with the new one, which a receiver that switched
// verifies.
func TestLiteralProfilesSignWithTheNewestSecret(t *testing.T) {
	const older = "older-secret-0123456789"
	e := testEvent(t, "scan.finished", `{"scan_id":"s1","target":"t","status":"completed"}`)
	for name, header := range map[string]func(Request) (string, string){
		PlexTrac: func(r Request) (string, string) {
			return r.Header.Get("x-authorization-hmac-256"), hexMAC(literal, r.Body)
		},
		XSignature: func(r Request) (string, string) { return r.Header.Get("X-Signature"), hexMAC(literal, r.Body) },
		CG: func(r Request) (string, string) {
			return r.Header.Get("X-CG-Hook-Signature"), "sha256=" + hexMAC(literal, r.Body)
		},
		Detectify: func(r Request) (string, string) {
			return r.Header.Get("X-Detectify-Signature"), hexMAC(literal, r.Body)
		},
	} {
		req := render(t, name, e, literal, older)
		if got, want := header(req); got != want {
			t.Errorf("%s: signature %q, want the newest secret's %q", name, got, want)
		}
	}
	if err := verifyPwnkemon(literal, render(t, Pwnkemon, e, literal, older)); err != nil {
		t.Errorf("pwnkemon: %v", err)
	}
}

func TestSchedulesAndSecrets(t *testing.T) {
	want := map[string]string{
		Pwnkemon:   "[1s 2s 4s]",
		XSignature: "[2m0s 4m0s 8m0s 16m0s 32m0s]",
		CG:         "[1m0s 5m0s 15m0s]",
		// about three days in all
		StandardWebhooks: "[5s 5m0s 30m0s 2h0m0s 5h0m0s 10h0m0s 10h0m0s 20h0m0s 24h0m0s]",
	}
	for name, w := range want {
		p, _ := Lookup(name)
		if got := fmt.Sprint(p.DefaultSchedule()); got != w {
			t.Errorf("%s schedule %s, want %s", name, got, w)
		}
	}
	for _, name := range Names() {
		p, _ := Lookup(name)
		if p.CheckSecret("short-secret") == nil {
			t.Errorf("%s accepts a 12-character secret", name)
		}
	}
}

// Whatever the title, the PlexTrac body is a fixed point of parse and
// re-serialise, and its signature is over exactly those bytes.
func FuzzPlexTracStringifyForm(f *testing.F) {
	for _, s := range titles {
		f.Add(s, 7.25)
	}
	f.Fuzz(func(t *testing.T, title string, cvss float64) {
		if math.IsNaN(cvss) || math.IsInf(cvss, 0) {
			return
		}
		data, err := json.Marshal(map[string]any{"scan_id": "s1", "title": title, "cvss_score": cvss})
		if err != nil {
			return
		}
		req := render(t, PlexTrac, testEvent(t, "finding.high", string(data)), literal)
		if err := verifyPlexTrac(t, literal, req); err != nil {
			t.Fatal(err)
		}
	})
}
