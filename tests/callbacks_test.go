package tests

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/events"
)

// verifyPwnkemon is the Pwnkemon document's Flask verifier in Go: parse
// t= and v1=, HMAC-SHA256(secret, "<t>." + raw body), compare, and refuse
// a timestamp more than five minutes off.
func verifyPwnkemon(secret string, r received) error {
	parts := map[string]string{}
	for _, p := range strings.Split(r.Header.Get("X-Pwnkemon-Signature"), ",") {
		k, v, _ := strings.Cut(p, "=")
		parts[k] = v
	}
	var ts int64
	if _, err := fmt.Sscan(parts["t"], &ts); err != nil || parts["v1"] == "" {
		return fmt.Errorf("header %q", r.Header.Get("X-Pwnkemon-Signature"))
	}
	if d := time.Since(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp off by %s", d)
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(parts["t"] + "."))
	m.Write(r.Body)
	if !hmac.Equal([]byte(hex.EncodeToString(m.Sum(nil))), []byte(parts["v1"])) {
		return fmt.Errorf("signature mismatch")
	}
	return nil
}

func TestPerScanCallbacks(t *testing.T) {
	p := startPipeline(t, "")
	r := newReceiver(t, nil)
	secret, err := p.Tenants.SigningSecret(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	started := func(scan string, callback bool) {
		data := map[string]any{"scan_id": scan, "target": "example.com", "tier": "standard"}
		if callback {
			data["callback_url"] = r.URL + "/webhooks/pwnkemon"
		}
		p.publish(t, "acme", events.TypeScanStarted, scan, data)
	}
	finished := func(scan, status string) {
		data := map[string]any{"scan_id": scan, "target": "example.com", "status": status, "findings_count": 5, "credits_used": 5,
			"summary": map[string]any{"risk_rating": "medium", "summary": "<b>5 findings</b>", "attack_chains": []string{"xss -> session theft"}}}
		if status == "failed" {
			data["error"] = "Credit budget exceeded"
		}
		p.publish(t, "acme", events.TypeScanFinished, scan, data)
	}
	started("done", true)
	finished("done", "completed")
	started("broke", true)
	finished("broke", "failed")
	started("stopped", true)
	finished("stopped", "cancelled")
	started("quiet", false)
	finished("quiet", "completed")
	finished("late", "completed") // the start arrives after the end
	started("late", true)
	finished("done", "completed") // a second end of the same scan: still one callback

	eventually(t, 15*time.Second, func() bool { return r.count() >= 4 })
	p.settle(t)
	got := map[string]map[string]any{}
	for _, req := range r.requests() {
		if err := verifyPwnkemon(secret, req); err != nil {
			t.Errorf("signature: %v", err)
		}
		if req.Header.Get("User-Agent") != "Pwnkemon/1.0" {
			t.Errorf("User-Agent %q", req.Header.Get("User-Agent"))
		}
		var body map[string]any
		if err := json.Unmarshal(req.Body, &body); err != nil {
			t.Fatal(err)
		}
		scan := body["scan_id"].(string)
		if got[scan] != nil {
			t.Errorf("scan %s called back twice", scan)
		}
		got[scan] = body
	}
	if len(got) != 4 || got["quiet"] != nil {
		t.Fatalf("callbacks for %v, want done, broke, stopped, late", keys(got))
	}
	if got["done"]["status"] != "completed" || got["done"]["summary"].(map[string]any)["summary"] != "<b>5 findings</b>" {
		t.Errorf("completed report %v", got["done"])
	}
	if len(got["broke"]) != 3 || got["broke"]["error"] != "Credit budget exceeded" {
		t.Errorf("failed payload %v, want the reduced {scan_id, status, error}", got["broke"])
	}
	if got["stopped"]["status"] != "cancelled" || got["late"]["status"] != "completed" {
		t.Errorf("cancelled %v, late %v", got["stopped"], got["late"])
	}
}

// A callback URL the egress policy refuses is refused with its event.
func TestCallbackURLPassesEgressPolicy(t *testing.T) {
	p := startPipeline(t, "")
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t", "callback_url": "http://169.254.169.254/latest"})
	eventually(t, 10*time.Second, func() bool { return len(p.readStream(t, "REJECTED")) == 1 })
	reason := p.readStream(t, "REJECTED")[0].Header.Get(events.HeaderRejectReason)
	if !strings.Contains(reason, "data/callback_url") || !strings.Contains(reason, "cloud metadata") {
		t.Errorf("reason %q", reason)
	}
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Two scan.finished events of one scan fanned out at once by different
// workers used to queue two callbacks (each under its own event's dedupe
// id) before either recorded it. One scan, one callback.
func TestConcurrentScanFinishedQueueOneCallback(t *testing.T) {
	p := startPipeline(t, "")
	r := newReceiver(t, nil)
	const scans = 20
	for i := range scans {
		scan := fmt.Sprintf("race-%d", i)
		p.publish(t, "acme", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t", "callback_url": r.URL + "/cb"})
	}
	p.settle(t)
	for i := range scans {
		scan := fmt.Sprintf("race-%d", i)
		for range 3 {
			p.publish(t, "acme", events.TypeScanFinished, scan, map[string]any{"scan_id": scan, "target": "t", "status": "completed"})
		}
	}
	eventually(t, 10*time.Second, func() bool { return r.count() >= scans })
	p.settle(t)
	if n := r.count(); n != scans {
		t.Errorf("%d callbacks for %d scans", n, scans)
	}
}
