package jobs_test

import (
	"testing"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
)

// A job's subject names it: one per (event, subscription), a finding's
// under its scan's limit filter with its type, which reads back.
func TestSubject(t *testing.T) {
	for _, c := range []struct {
		job  jobs.Job
		want string
	}{
		{jobs.Job{WebhookID: "msg_A", Tenant: "acme", SubscriptionID: "sub_1", EventType: events.TypeScanStarted, ScanID: "s1"},
			"deliveries.acme.sub_1.acme.s1.%scan~started"},
		{jobs.Job{WebhookID: "msg_B", Tenant: "mssp", SourceTenant: "acme", SubscriptionID: "sub_2", EventType: events.TypeFindingHigh, ScanID: "s1", FindingType: "web.xss:stored"},
			"deliveries.mssp.sub_2.acme.s1.web~xss:stored"},
		{jobs.Job{WebhookID: "msg_C", Tenant: "acme", SubscriptionID: "sub_1", EventType: events.TypeFindingMedium}, // no scan, no type: still tokens
			"deliveries.acme.sub_1.acme._.%"},
	} {
		if got := c.job.Subject(); got != c.want {
			t.Errorf("Subject() = %q, want %q", got, c.want)
		}
		if got := c.job.CopySubject(); got != c.want+".r" {
			t.Errorf("CopySubject() = %q, want %q", got, c.want+".r")
		}
		m, err := c.job.Msg()
		if err != nil || m.Subject != c.want || m.Header.Get(jobs.HeaderWebhookID) != c.job.WebhookID {
			t.Errorf("Msg() = %v on %s with webhook id %q, want %s and %s", err, m.Subject, m.Header.Get(jobs.HeaderWebhookID), c.want, c.job.WebhookID)
		}
	}
	if f := jobs.ScopeFilter("mssp", "sub_2", "acme", "s1"); f != "deliveries.mssp.sub_2.acme.s1.*" {
		t.Errorf("ScopeFilter = %q", f)
	}
	if !jobs.IsFindingToken(jobs.TypeToken("xss")) || !jobs.IsFindingToken(jobs.TypeToken("")) || jobs.IsFindingToken(jobs.KindToken(events.TypeScanStarted)) {
		t.Error("IsFindingToken does not tell finding types from event kinds")
	}
	seen := map[string]string{}
	for _, typ := range []string{"", "xss", "a.b", "a_b", "..", ".", "a:b-c"} { // types are [A-Za-z0-9_.:-]+ (schemas/finding.json)
		tok := jobs.TypeToken(typ)
		if other, ok := seen[tok]; ok {
			t.Errorf("types %q and %q share the token %q", typ, other, tok)
		}
		seen[tok] = typ
		if jobs.TypeName(tok) != typ {
			t.Errorf("TypeName(TypeToken(%q)) = %q", typ, jobs.TypeName(tok))
		}
	}
}
