package profiles

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jsonx"
)

// standardSecret is a Standard Webhooks secret: whsec_ and base64.
var standardSecret = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5c}, 32))

// secretFor is a secret the profile accepts.
func secretFor(name string) string {
	if name == StandardWebhooks {
		return standardSecret
	}
	return literal
}

// verifyStandard is the Standard Webhooks 1.0 verifier: the base64 key
// after whsec_, HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<raw
// body>", one of the space-separated v1 signatures, a 5-minute window.
func verifyStandard(secret string, req Request) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	ts := req.Header.Get("Webhook-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || math.Abs(float64(time.Now().Unix()-sec)) > 300 {
		return fmt.Errorf("webhook-timestamp %q outside the tolerance", ts)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(req.Header.Get("Webhook-Id") + "." + ts + "."))
	m.Write(req.Body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, sig := range strings.Fields(req.Header.Get("Webhook-Signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no webhook-signature matches")
}

// plexTracNode is the PlexTrac document's JavaScript verifier in one
// long-lived node process, so that a fuzz run can ask it thousands of
// times: a line "<base64 secret> <base64 body>" in, the hex HMAC of
// JSON.stringify(JSON.parse(body)) out. It ends when the test binary
// closes its stdin.
var plexTracNode struct {
	once sync.Once
	mu   sync.Mutex
	in   io.WriteCloser
	out  *bufio.Reader
	err  error
}

const plexTracNodeScript = `const crypto = require("crypto");
require("readline").createInterface({input: process.stdin}).on("line", line => {
  const [secret, body] = line.split(" ").map(s => Buffer.from(s, "base64").toString("utf8"));
  try {
    const payload = JSON.parse(body);
    const hmac = crypto.createHmac('SHA256', secret);
    hmac.update(Buffer.from(JSON.stringify(payload)));
    process.stdout.write(hmac.digest('hex') + "\n");
  } catch (e) {
    process.stdout.write("error " + String(e).replace(/\n/g, " ") + "\n");
  }
});`

func verifyPlexTracNode(t *testing.T, secret string, req Request) error {
	t.Helper()
	n := &plexTracNode
	n.once.Do(func() {
		node, err := exec.LookPath("node")
		if err != nil {
			n.err = err
			return
		}
		cmd := exec.Command(node, "-e", plexTracNodeScript)
		if n.in, n.err = cmd.StdinPipe(); n.err != nil {
			return
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			n.err = err
			return
		}
		n.out = bufio.NewReader(out)
		n.err = cmd.Start()
	})
	if n.err != nil {
		t.Skipf("node not available (%v): the PlexTrac verifier is the document's JavaScript", n.err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	enc := base64.StdEncoding.EncodeToString
	if _, err := fmt.Fprintf(n.in, "%s %s\n", enc([]byte(secret)), enc(req.Body)); err != nil {
		return fmt.Errorf("node: %v", err)
	}
	line, err := n.out.ReadString('\n')
	if err != nil {
		return fmt.Errorf("node: %v", err)
	}
	if got, want := req.Header.Get("x-authorization-hmac-256"), strings.TrimSuffix(line, "\n"); got != want {
		return fmt.Errorf("x-authorization-hmac-256 %s, the document's code computes %s over JSON.stringify(JSON.parse(body))", got, want)
	}
	return nil
}

// verify checks req as the receiver of profile name would, from its
// document alone.
func verify(t *testing.T, name, secret string, req Request) error {
	t.Helper()
	check := func(header, want string) error {
		if got := req.Header.Get(header); !hmac.Equal([]byte(got), []byte(want)) {
			return fmt.Errorf("%s %q, want %q", header, got, want)
		}
		return nil
	}
	switch name {
	case StandardWebhooks:
		return verifyStandard(secret, req)
	case Pwnkemon:
		return verifyPwnkemon(secret, req)
	case PlexTrac:
		return verifyPlexTracNode(t, secret, req)
	case XSignature:
		return check("X-Signature", hexMAC(secret, req.Body))
	case CG:
		return check("X-CG-Hook-Signature", "sha256="+hexMAC(secret, req.Body))
	case Detectify:
		return check("X-Detectify-Signature", hexMAC(secret, req.Body))
	}
	return fmt.Errorf("no verifier for %s", name)
}

// deliver renders e for profile name as delivery does: e is validated,
// stored as events.Structured writes it, and decoded from those bytes.
func deliver(t *testing.T, name string, e *event.Event) Request {
	t.Helper()
	kind, _ := events.KindOf(e.Type())
	if err := events.Validate(events.Address{Tenant: "acme", ScanID: "s1", Kind: kind}, e); err != nil {
		t.Fatalf("test event is invalid: %v", err)
	}
	structured, err := events.Structured(e)
	if err != nil {
		t.Fatal(err)
	}
	var stored event.Event
	if err := json.Unmarshal(structured, &stored); err != nil {
		t.Fatal(err)
	}
	p, _ := Lookup(name)
	req, err := p.Render(Delivery{WebhookID: "msg_1", Event: &stored, Structured: structured,
		Secrets: []string{secretFor(name)}, Now: time.Now(), UserAgent: "scanwire/test"})
	if err != nil {
		t.Fatalf("render %s: %v", name, err)
	}
	return req
}

// The bug: standard-webhooks, cg and x-signature bodies carried
// \u003cscript\u003e \u0026 although bodies are never HTML-escaped. Each
// profile, whether the scanner's encoder escaped the data or not, sends
// the text as itself, signed over the raw body.
func TestNoBodyIsHTMLEscaped(t *testing.T) {
	const text = `<script> & "q"`
	const want = `<script> & \"q\"`
	encoders := map[string]func(any) ([]byte, error){"as written": jsonx.Marshal, "Go json.Marshal": json.Marshal}
	for _, name := range Names() {
		for encName, encode := range encoders {
			t.Run(name+"/"+encName, func(t *testing.T) {
				typ, data := "finding.high", map[string]any{"scan_id": "s1", "target": text, "finding_id": "f1", "type": "xss",
					"title": text, "cvss_score": 7.5, "url": "https://app.example.com/?a=1&b=<2>", "tags": []string{"<new>"}}
				if name == Pwnkemon {
					typ, data = "scan.finished", map[string]any{"scan_id": "s1", "target": text, "status": "completed",
						"summary": map[string]any{"summary": text, "attack_chains": []string{text}}}
				}
				b, _ := encode(data)
				req := deliver(t, name, testEvent(t, typ, string(b)))
				if !bytes.Contains(req.Body, []byte(want)) {
					t.Errorf("body does not hold %s: %s", want, req.Body)
				}
				for _, esc := range []string{`\u003c`, `\u003e`, `\u0026`} {
					if bytes.Contains(req.Body, []byte(esc)) {
						t.Errorf("body holds %s: %s", esc, req.Body)
					}
				}
				if !json.Valid(req.Body) {
					t.Errorf("body is not JSON: %s", req.Body)
				}
				if err := verify(t, name, secretFor(name), req); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// A job queued before fan-out used events.Structured holds json.Marshal's
// form, escapes and all; its attempts (and a replay of its dead letter)
// are sent unescaped by every profile, signed over what is sent.
func TestBodiesOfAnOldJob(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			e := testEvent(t, "finding.high", findingData(`<script> & "q"`, 7))
			if name == Pwnkemon {
				e = testEvent(t, "scan.finished", `{"scan_id":"s1","target":"\u003cscript\u003e \u0026 \"q\"","status":"completed","summary":{"summary":"\u003cscript\u003e \u0026 \"q\""}}`)
			}
			old, _ := json.Marshal(e)
			var stored event.Event // as delivery decodes the job
			if err := json.Unmarshal(old, &stored); err != nil {
				t.Fatal(err)
			}
			p, _ := Lookup(name)
			req, err := p.Render(Delivery{WebhookID: "msg_1", Event: &stored, Structured: old, Secrets: []string{secretFor(name)}, Now: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(req.Body, []byte(`<script> & \"q\"`)) || hasHTMLEscape(req.Body) {
				t.Errorf("body %s", req.Body)
			}
			if err := verify(t, name, secretFor(name), req); err != nil {
				t.Error(err)
			}
		})
	}
}

// Every profile's rendering of any valid event verifies with the
// receiver's own code over the raw body, is JSON, carries the text as
// sent, and holds no HTML escape.
func FuzzRender(f *testing.F) {
	f.Add(uint8(2), `<script> & "q"`, 7.5, false)
	f.Add(uint8(2), "x", 4.2, true)
	f.Add(uint8(1), `a\u003c & \\u003c`, 1.0, true)
	f.Add(uint8(1), "line\u2028separator <>", 9.0, false)
	f.Add(uint8(0), "Überprüfung – 日本語 ✓ &amp;", 0.0, false)
	f.Add(uint8(3), "<b>", 0.0, true)
	f.Fuzz(func(t *testing.T, kind uint8, text string, cvss float64, goEncoded bool) {
		text = strings.ToValidUTF8(text, "\uFFFD") // Go's encoders would replace the bytes anyway
		var typ string
		var data map[string]any
		switch kind % 4 {
		case 0:
			typ, data = "scan.started", map[string]any{"scan_id": "s1", "target": text, "report_url": text}
		case 1:
			status := "completed"
			if cvss < 5 {
				status = "failed"
			}
			typ, data = "scan.finished", map[string]any{"scan_id": "s1", "target": text, "status": status, "error": text,
				"tier": "standard", "credits_used": math.Abs(cvss), "summary": map[string]any{"summary": text}}
		case 2:
			typ = "finding.medium"
			if cvss >= 6 {
				typ = "finding.high"
			}
			data = map[string]any{"scan_id": "s1", "target": text, "finding_id": "f1", "type": "xss", "title": text,
				"cvss_score": cvss, "tags": []string{text}}
		case 3:
			typ, data = "webhook.test", map[string]any{"message": text, "company": text}
		}
		encode := jsonx.Marshal
		if goEncoded {
			encode = json.Marshal
		}
		b, err := encode(data)
		if err != nil {
			return // NaN, ±Inf
		}
		e := testEvent(t, typ, string(b))
		kindName, _ := events.KindOf(typ)
		if events.Validate(events.Address{Tenant: "acme", ScanID: "s1", Kind: kindName}, e) != nil {
			return // the fuzzer's text or score broke the schema
		}
		for _, name := range Names() {
			if p, _ := Lookup(name); !p.Accepts(typ) {
				continue
			}
			req := deliver(t, name, e)
			if err := verify(t, name, secretFor(name), req); err != nil {
				t.Fatalf("%s: %v\nbody %s", name, err, req.Body)
			}
			var body any
			if err := json.Unmarshal(req.Body, &body); err != nil {
				t.Fatalf("%s: body is not JSON: %v\n%s", name, err, req.Body)
			}
			if !bytes.Equal(jsonx.UnescapeHTML(req.Body), req.Body) || !strings.Contains(text, `\`) && hasHTMLEscape(req.Body) {
				t.Fatalf("%s: an HTML escape in %s", name, req.Body)
			}
			if typ != "webhook.test" && !holds(body, text) {
				t.Fatalf("%s: the text %q is not in %s", name, text, req.Body)
			}
		}
	})
}

// hasHTMLEscape is the plain reading of "the body holds \u003c": right
// only when no string of the body holds a backslash of its own.
func hasHTMLEscape(b []byte) bool {
	for _, esc := range []string{`\u003c`, `\u003C`, `\u003e`, `\u003E`, `\u0026`} {
		if bytes.Contains(b, []byte(esc)) {
			return true
		}
	}
	return false
}

// holds reports whether a decoded JSON value has the string s in it.
func holds(v any, s string) bool {
	switch v := v.(type) {
	case string:
		return v == s
	case []any:
		for _, e := range v {
			if holds(e, s) {
				return true
			}
		}
	case map[string]any:
		for _, e := range v {
			if holds(e, s) {
				return true
			}
		}
	}
	return false
}
