package tests

import (
	"bytes"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/profiles"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// Through the whole pipeline, every profile's raw body carries `<`, `>`,
// `&` and a quote exactly as JSON writes them, never HTML-escaped.
func TestEveryProfileBodyCarriesTextAsSent(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	const text = `<script> & "q"`
	const want = `<script> & \"q\"`
	receivers := map[string]*receiver{}
	for _, name := range profiles.Names() {
		prof, _ := profiles.Lookup(name)
		var types []string
		for _, typ := range []string{events.TypeFindingHigh, events.TypeScanFinished} {
			if prof.Accepts(typ) {
				types = append(types, typ)
			}
		}
		r := newReceiver(t, nil)
		receivers[name] = r
		p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: types, Profile: name})
	}
	p.publish(t, "acme", events.TypeFindingHigh, "s1", finding("s1", "xss", 7.5, text))
	p.publish(t, "acme", events.TypeScanFinished, "s1", map[string]any{"scan_id": "s1", "target": "app.example.com",
		"status": "completed", "summary": map[string]any{"summary": text, "attack_chains": []string{text}}})
	eventually(t, 10*time.Second, func() bool {
		for _, r := range receivers {
			if r.count() == 0 {
				return false
			}
		}
		return true
	})
	p.settle(t)
	for name, r := range receivers {
		found := false
		for _, req := range r.requests() {
			found = found || bytes.Contains(req.Body, []byte(want))
			for _, esc := range []string{`\u003c`, `\u003e`, `\u0026`} {
				if bytes.Contains(req.Body, []byte(esc)) {
					t.Errorf("%s: body holds %s: %s", name, esc, req.Body)
				}
			}
		}
		if !found {
			t.Errorf("%s: no body holds %s byte for byte", name, want)
		}
	}
}
