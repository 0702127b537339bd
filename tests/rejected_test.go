package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/rejected"
)

// Rejected events are visible over the API, scoped like the DLQ: a
// tenant's key sees its own, the admin every tenant's or one with
// ?tenant=, newest first, each with its reason and the start of its body.
func TestRejectedEventsListedPerTenant(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	const low = `{"scan_id":"s1","target":"app.example.com","finding_id":"f1","type":"xss","title":"XSS","cvss_score":4.0}`
	// One at a time: fan-out's workers would store a burst in any order.
	for i, m := range []*nats.Msg{
		binaryMsg("scans.acme.s1.finding.high", validAttrs("acme-1"), low),
		binaryMsg("scans.globex.s1.finding.high", with(validAttrs("globex-1"), "ce-tenant", "globex"), low),
		binaryMsg("scans.acme.s1.finding.high", without(validAttrs("acme-2"), "ce-source"), low),
	} {
		publishRaw(t, p.JS, m)
		eventually(t, 10*time.Second, func() bool { return len(p.readStream(t, natsx.StreamRejected)) == i+1 })
	}

	list := func(key, query string) (int, []rejected.Entry) {
		var out struct {
			Rejected []rejected.Entry `json:"rejected"`
		}
		code := p.api(t, key).do("GET", "/v1/rejected"+query, nil, &out)
		return code, out.Rejected
	}
	ids := func(entries []rejected.Entry) string {
		var s []string
		for _, e := range entries {
			s = append(s, e.Tenant+"/"+e.EventID)
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		name, key, query string
		want             string
	}{
		{"acme sees its own, newest first", acmeKey, "", "acme/acme-2,acme/acme-1"},
		{"globex sees its own", globexKey, "", "globex/globex-1"},
		{"acme names itself", acmeKey, "?tenant=acme", "acme/acme-2,acme/acme-1"},
		{"admin sees every tenant", adminKey, "", "acme/acme-2,globex/globex-1,acme/acme-1"},
		{"admin filters by tenant", adminKey, "?tenant=globex", "globex/globex-1"},
		{"admin, a tenant with none", adminKey, "?tenant=initech", ""},
		{"limit keeps the newest", adminKey, "?limit=1", "acme/acme-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, entries := list(tt.key, tt.query)
			if code != 200 || ids(entries) != tt.want {
				t.Errorf("%d %s, want %s", code, ids(entries), tt.want)
			}
		})
	}
	if code, _ := list(acmeKey, "?tenant=globex"); code != 403 {
		t.Errorf("acme asking for globex's: %d, want 403", code)
	}
	if code, _ := list("", ""); code != 401 {
		t.Errorf("no key: %d, want 401", code)
	}

	_, entries := list(acmeKey, "")
	e, first := entries[0], entries[1]
	if e.Code != "invalid" || !strings.Contains(e.Reason, "source: missing") || e.OriginalSubject != "scans.acme.s1.finding.high" ||
		e.OriginalSeq != 3 || e.Body != low || e.BodySize != len(low) || e.Time.IsZero() || e.Seq <= first.Seq {
		t.Errorf("entry %+v", e)
	}
	if !strings.Contains(first.Reason, "below 6.0, the floor of finding.high") {
		t.Errorf("first entry's reason %q", first.Reason)
	}
}
