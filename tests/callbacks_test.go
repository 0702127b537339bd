package tests

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
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
	t.Parallel()
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
	t.Parallel()
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
//
// The race is made to happen, not hoped for: two fan-out processes share
// the work, and each scan's scan.started and two scan.finished (distinct
// ids) are published in one burst with every other scan's, so that the
// workers of both take them at once. Rounds of scans are sent until the two
// scan.finished of some scan were seen in fan-out at the same time (their
// fan-out spans overlap); a run in which that never happened fails, since
// it would prove nothing.
func TestConcurrentScanFinishedQueueOneCallback(t *testing.T) {
	t.Parallel()
	const scans, maxRounds = 20, 5
	optA, recA, _ := withRecorder(t)
	p := startPipeline(t, "", optA)
	optB, recB, _ := withRecorder(t)
	startReplica(t, p, optB, func(c *app.Config) { c.Services = []string{app.ServiceFanout} })
	r := newReceiver(t, nil)

	// Every callback job fan-out publishes, duplicates the server drops
	// included: two for one scan mean both events got past the record.
	var mu sync.Mutex
	queued := map[string]int{}
	sub, err := p.NC.Subscribe(jobs.Filter("acme", jobs.CallbackSubscription), func(m *nats.Msg) {
		if j, err := jobs.Decode(m.Data); err == nil {
			mu.Lock()
			queued[j.ScanID]++
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := p.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	var all []string
	overlapped := 0
	for round := 0; round < maxRounds && overlapped == 0; round++ {
		var burst []*nats.Msg
		for i := range scans {
			scan := fmt.Sprintf("race-%d-%d", round, i)
			all = append(all, scan)
			started := eventMsg(t, "acme", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t", "callback_url": r.URL + "/cb"})
			finished := func() *nats.Msg {
				return eventMsg(t, "acme", events.TypeScanFinished, scan, map[string]any{"scan_id": scan, "target": "t", "status": "completed"})
			}
			// The start first, between or last: the pair must meet in any order.
			evs := []*nats.Msg{finished(), finished()}
			evs = slices.Insert(evs, i%3, started)
			burst = append(burst, evs...)
		}
		publishBurst(t, p.JS, burst)
		eventually(t, 20*time.Second, func() bool { return len(callbackScans(t, r)) >= len(all) })
		p.settle(t)
		overlapped = concurrentFinishes(append(recA.Ended(), recB.Ended()...))
	}
	// Settled: fan-out and delivery have nothing pending or in flight, so
	// a second callback of any scan would have arrived by now.
	got := callbackScans(t, r)
	for _, scan := range all {
		if got[scan] != 1 {
			t.Errorf("scan %s: %d callbacks, want 1", scan, got[scan])
		}
	}
	if len(got) != len(all) {
		t.Errorf("callbacks for %d scans, want %d", len(got), len(all))
	}
	mu.Lock()
	doubled := 0
	for _, n := range queued {
		if n > 1 {
			doubled++
		}
	}
	mu.Unlock()
	t.Logf("%d scans in %d round(s): %d with both scan.finished in fan-out at once, %d queued their callback twice (one kept by the server)",
		len(all), len(all)/scans, overlapped, doubled)
	if overlapped == 0 {
		t.Fatalf("in %d rounds the two scan.finished of no scan were fanned out at the same time: the race was not exercised", maxRounds)
	}
}

// callbackScans counts a receiver's callbacks per scan.
func callbackScans(t *testing.T, r *receiver) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, req := range r.requests() {
		var body struct {
			ScanID string `json:"scan_id"`
		}
		if err := json.Unmarshal(req.Body, &body); err != nil || body.ScanID == "" {
			t.Fatalf("callback body %s: %v", req.Body, err)
		}
		got[body.ScanID]++
	}
	return got
}

// concurrentFinishes counts the scans whose scan.finished events were in
// fan-out at overlapping times, from fan-out's spans.
func concurrentFinishes(spans []sdktrace.ReadOnlySpan) int {
	type interval struct{ start, end time.Time }
	byScan := map[string][]interval{}
	for _, s := range spans {
		if !strings.HasPrefix(s.Name(), "fanout ") {
			continue
		}
		var scan, typ string
		for _, a := range s.Attributes() {
			switch a.Key {
			case "scanwire.scan_id":
				scan = a.Value.AsString()
			case "scanwire.event_type":
				typ = a.Value.AsString()
			}
		}
		if typ == events.TypeScanFinished {
			byScan[scan] = append(byScan[scan], interval{s.StartTime(), s.EndTime()})
		}
	}
	n := 0
	for _, iv := range byScan {
	pairs:
		for i := range iv {
			for j := i + 1; j < len(iv); j++ {
				if iv[i].start.Before(iv[j].end) && iv[j].start.Before(iv[i].end) {
					n++
					break pairs
				}
			}
		}
	}
	return n
}
