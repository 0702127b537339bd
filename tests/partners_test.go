package tests

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// A partner's subscription with include_customer_events hears its
// customers' events, each saying whose it is; customers hear neither the
// partner's events nor each other's.
func TestPartnerIsolationBothWays(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	admin := p.api(t, adminKey)
	for _, c := range []string{"acme", "globex"} {
		var v map[string]any
		if code := admin.do("PUT", "/v1/tenants/"+c, map[string]string{"partner": "mssp"}, &v); code != 200 || v["partner"] != "mssp" {
			t.Fatalf("PUT tenant %s: %d %v", c, code, v)
		}
	}
	if code := p.api(t, acmeKey).do("PUT", "/v1/tenants/acme", map[string]string{"partner": ""}, nil); code != 403 {
		t.Errorf("a tenant key changed its own partner: %d", code)
	}
	eventually(t, 5*time.Second, func() bool { return p.TenantsC.Partner("globex") == "mssp" })

	partnerAll := newReceiver(t, nil)
	partnerOwn := newReceiver(t, nil)
	acmeR := newReceiver(t, nil)
	globexR := newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "mssp", URL: partnerAll.URL, Events: []string{"scan.started"}, IncludeCustomerEvents: true})
	p.subscribe(t, subscriptions.Subscription{Tenant: "mssp", URL: partnerOwn.URL, Events: []string{"scan.started"}})
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: acmeR.URL, Events: []string{"scan.started"}, IncludeCustomerEvents: true})
	p.subscribe(t, subscriptions.Subscription{Tenant: "globex", URL: globexR.URL, Events: []string{"scan.started"}})

	for _, tenant := range []string{"acme", "globex", "mssp"} {
		p.publish(t, tenant, events.TypeScanStarted, "s-"+tenant, map[string]any{"scan_id": "s-" + tenant, "target": tenant + ".example.com"})
	}
	eventually(t, 10*time.Second, func() bool { return partnerAll.count() == 3 })
	p.settle(t)

	from := func(r *receiver) map[string]bool {
		got := map[string]bool{}
		for _, req := range r.requests() {
			var ce struct {
				Tenant string `json:"tenant"`
			}
			_ = json.Unmarshal(req.Body, &ce)
			if h := req.Header.Get("X-Scanwire-Tenant"); h != ce.Tenant {
				t.Errorf("X-Scanwire-Tenant %q but the event's tenant is %q", h, ce.Tenant)
			}
			got[ce.Tenant] = true
		}
		return got
	}
	if got := from(partnerAll); len(got) != 3 || !got["acme"] || !got["globex"] || !got["mssp"] {
		t.Errorf("partner with include_customer_events got events of %v, want acme, globex, mssp", got)
	}
	if got := from(partnerOwn); len(got) != 1 || !got["mssp"] {
		t.Errorf("partner without include_customer_events got %v, want only mssp", got)
	}
	if got := from(acmeR); len(got) != 1 || !got["acme"] {
		t.Errorf("customer acme got %v, want only its own", got)
	}
	if got := from(globexR); len(got) != 1 || !got["globex"] {
		t.Errorf("customer globex got %v, want only its own", got)
	}
}
