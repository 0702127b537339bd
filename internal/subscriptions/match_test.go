package subscriptions

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
)

// put feeds a document to the cache as the KV watch would.
func (c *Cache) put(t testing.TB, s *Subscription) {
	t.Helper()
	if s.ID == "" {
		s.ID = NewID()
	}
	if s.Profile == "" {
		s.Profile = "standard-webhooks"
	}
	if s.Secrets == nil {
		s.Secrets = []Secret{{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	c.apply(Key(s.Tenant, s.ID), b, 1, false)
}

func newTestCache() *Cache { return NewCache(nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil))) }

func TestMatch(t *testing.T) {
	c := newTestCache()
	all := &Subscription{Tenant: "acme", URL: "https://a.example.com", Events: []string{"*"}}
	findings := &Subscription{Tenant: "acme", URL: "https://a.example.com", Events: []string{"finding.*"}}
	critical := &Subscription{Tenant: "acme", URL: "https://a.example.com", Events: []string{"finding.high"}, Filter: Filter{MinCVSS: 9}}
	shop := &Subscription{Tenant: "acme", URL: "https://a.example.com", Events: []string{"finding.*", "scan.finished"}, Filter: Filter{Targets: []string{"*.shop.example.com"}}}
	oneScan := &Subscription{Tenant: "acme", URL: "https://a.example.com", Events: []string{"scan.*"}, Filter: Filter{ScanID: "s-7"}}
	other := &Subscription{Tenant: "globex", URL: "https://a.example.com", Events: []string{"*"}}
	for _, s := range []*Subscription{all, findings, critical, shop, oneScan, other} {
		c.put(t, s)
	}
	tests := []struct {
		name   string
		tenant string
		typ    string
		facts  Facts
		want   []*Subscription
	}{
		{"high finding, low score", "acme", "finding.high", Facts{Target: "app.example.com", ScanID: "s-1", CVSS: 7, HasCVSS: true}, []*Subscription{all, findings}},
		{"critical finding", "acme", "finding.high", Facts{Target: "app.example.com", ScanID: "s-1", CVSS: 9.8, HasCVSS: true}, []*Subscription{all, findings, critical}},
		{"medium on the shop", "acme", "finding.medium", Facts{Target: "eu.shop.example.com", ScanID: "s-1", CVSS: 4, HasCVSS: true}, []*Subscription{all, findings, shop}},
		{"target given as a URL", "acme", "finding.medium", Facts{Target: "https://EU.shop.example.com/login", CVSS: 4, HasCVSS: true}, []*Subscription{all, findings, shop}},
		{"glob does not match the bare domain", "acme", "scan.finished", Facts{Target: "shop.example.com", ScanID: "s-1"}, []*Subscription{all}},
		{"scan filter", "acme", "scan.started", Facts{Target: "x", ScanID: "s-7"}, []*Subscription{all, oneScan}},
		{"scan filter, other scan", "acme", "scan.started", Facts{Target: "x", ScanID: "s-8"}, []*Subscription{all}},
		{"min_cvss does not filter scan events", "acme", "scan.finished", Facts{Target: "x.shop.example.com", ScanID: "s-1"}, []*Subscription{all, shop}},
		{"other tenant", "globex", "finding.high", Facts{CVSS: 10, HasCVSS: true}, []*Subscription{other}},
		{"unknown tenant", "initech", "finding.high", Facts{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ids(c.Match(tt.tenant, tt.typ, tt.facts))
			if want := ids(tt.want); !slices.Equal(got, want) {
				t.Errorf("matched %v, want %v", got, want)
			}
		})
	}
	// A change of event types moves the subscription in the index.
	critical.Events = []string{"scan.started"}
	c.put(t, critical)
	if got := ids(c.Match("acme", "finding.high", Facts{CVSS: 10, HasCVSS: true})); slices.Contains(got, critical.ID) {
		t.Error("an updated subscription still matches its old event type")
	}
	c.apply(Key("acme", all.ID), nil, 2, true)
	if got := ids(c.Match("acme", "scan.started", Facts{ScanID: "s-7"})); slices.Contains(got, all.ID) {
		t.Error("a deleted subscription still matches")
	}
}

func ids(subs []*Subscription) []string {
	out := make([]string, len(subs))
	for i, s := range subs {
		out[i] = s.ID
	}
	slices.Sort(out)
	return out
}

// BenchmarkMatch: the event's tenant always has 100 subscriptions, 50 of
// which take finding.high; the other tenants' subscriptions grow from 1,000
// to 100,000 in all. The cost per event follows the 50 matches, not the
// total.
func BenchmarkMatch(b *testing.B) {
	for _, total := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("subscriptions=%d", total), func(b *testing.B) {
			c := newTestCache()
			for i := range total {
				tenant := fmt.Sprintf("t%d", i%1000)
				if i < 100 {
					tenant = "hot"
				}
				typ := []string{"finding.*", "scan.finished"}[i%2]
				c.put(b, &Subscription{Tenant: tenant, URL: "https://h.example.com", Events: []string{typ},
					Filter: Filter{Targets: []string{"*.example.com"}}})
			}
			f := Facts{Target: "app.example.com", ScanID: "s1", CVSS: 7.5, HasCVSS: true}
			matched := 0
			for b.Loop() {
				matched += len(c.Match("hot", "finding.high", f))
			}
			b.ReportMetric(float64(matched)/float64(b.N), "matches/event")
		})
	}
}
