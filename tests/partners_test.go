package tests

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/limits"
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

// A partner's subscription counts each customer's scans apart: two
// customers may use the same scan id, and one customer's findings never
// use up another's budget. Stats show them apart.
func TestPartnerLimitsArePerCustomer(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	admin := p.api(t, adminKey)
	for _, c := range []string{"acme", "globex"} {
		if code := admin.do("PUT", "/v1/tenants/"+c, map[string]string{"partner": "mssp"}, nil); code != 200 {
			t.Fatalf("PUT tenant %s: %d", c, code)
		}
	}
	eventually(t, 5*time.Second, func() bool { return p.TenantsC.Partner("acme") == "mssp" && p.TenantsC.Partner("globex") == "mssp" })
	r := newReceiver(t, nil)
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "mssp", URL: r.URL, Events: []string{"finding.*"}, IncludeCustomerEvents: true,
		Limits: subscriptions.Limits{FindingsPerScan: 3}})

	for i := range 5 {
		for _, c := range []string{"acme", "globex"} {
			p.publish(t, c, events.TypeFindingHigh, "s1", finding("s1", "xss-"+strconv.Itoa(i), 7.5, "f"))
		}
	}
	eventually(t, 10*time.Second, func() bool { return r.count() >= 6 })
	p.settle(t)
	per := map[string]int{}
	for _, req := range r.requests() {
		per[req.Header.Get("X-Scanwire-Tenant")]++
	}
	if per["acme"] != 3 || per["globex"] != 3 {
		t.Errorf("the partner got %v findings per customer, want 3 each (findings_per_scan 3, counted per customer)", per)
	}

	var out struct {
		Subscriptions []limits.Stats `json:"subscriptions"`
	}
	if code := p.api(t, adminKey).do("GET", "/v1/scans/s1/stats?tenant=mssp", nil, &out); code != 200 {
		t.Fatalf("GET stats: %d", code)
	}
	got := map[string]limits.Stats{}
	for _, st := range out.Subscriptions {
		got[st.Customer] = st
	}
	for _, c := range []string{"acme", "globex"} {
		if st := got[c]; st.SubscriptionID != sub.ID || st.Admitted != 3 || st.Suppressed != 2 {
			t.Errorf("stats for customer %s: %+v, want 3 admitted and 2 suppressed for %s", c, st, sub.ID)
		}
	}
	if len(out.Subscriptions) != 2 {
		t.Errorf("stats %+v, want one entry per customer", out.Subscriptions)
	}
}
