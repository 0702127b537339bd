package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/rejected"
)

func TestRejectedListCLI(t *testing.T) {
	t.Parallel()
	a := startApp(t, fanoutOnly)
	ctx := context.Background()
	low := `{"scan_id":"s1","target":"t","finding_id":"f1","type":"xss","title":"x","cvss_score":4.5}`
	for i, tenant := range []string{"acme", "globex", "acme"} {
		e := events.New(tenant, "//s", events.TypeFindingHigh, "s1", []byte(low))
		if _, err := events.Publish(ctx, a.JS, "scans."+tenant+".s1.finding.high", &e); err != nil {
			t.Fatal(err)
		}
		// One at a time, so that REJECTED keeps them in this order.
		if !waitFor(10*time.Second, func() bool {
			s, err := a.JS.Stream(ctx, natsx.StreamRejected)
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			return err == nil && info.State.Msgs == uint64(i+1)
		}) {
			t.Fatalf("event %d of %s never reached REJECTED", i, tenant)
		}
	}
	nats := "--nats=" + a.ClientURL()

	out, err := runCLI(t, ctx, "rejected", "list", nats)
	if err != nil || strings.Count(out, "\n") != 4 || !strings.Contains(out, "acme") || !strings.Contains(out, "globex") ||
		!strings.Contains(out, "below 6.0") || !strings.Contains(out, "scans.globex.s1.finding.high #2") {
		t.Errorf("rejected list: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, "rejected", "list", nats, "--tenant", "globex")
	if err != nil || strings.Count(out, "\n") != 2 || strings.Contains(out, "acme") {
		t.Errorf("rejected list --tenant globex: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, "rejected", "list", nats, "--tenant", "acme", "--limit", "1", "--json")
	var list []rejected.Entry
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 {
		t.Fatalf("rejected list --json: %v\n%s", err, out)
	}
	if e := list[0]; e.Tenant != "acme" || e.Seq != 3 || e.Code != "invalid" || e.Body != low || e.EventID == "" || e.OriginalSeq != 3 {
		t.Errorf("newest of acme: %+v", e)
	}
	out, err = runCLI(t, ctx, "rejected", "list", nats, "--tenant", "initech", "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("a tenant with none: %v %q", err, out)
	}
}

// Ids the commands pass to NATS are checked first: a wildcard, a dot or a
// space is refused with the rule, before connecting, never sent on as a
// wildcard or answered with NATS's error.
func TestCLIRefusesMalformedIDs(t *testing.T) {
	t.Parallel()
	nowhere := "--nats=nats://127.0.0.1:1"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"subs", "get", nowhere, "*"}, `"*" is not a subscription id`},
		{[]string{"subs", "get", nowhere, "sub_01KAP..."}, `"sub_01KAP..." is not a subscription id`},
		{[]string{"subs", "delete", nowhere, "sub_>"}, "is not a subscription id"},
		{[]string{"subs", "test", nowhere, "sub_a b"}, "is not a subscription id"},
		{[]string{"subs", "test", nowhere, "sub_é"}, "is not a subscription id"},
		{[]string{"subs", "list", nowhere, "--tenant", "*"}, "--tenant: \"*\" must be 1-128 characters"},
		{[]string{"attempts", nowhere, "--subscription", "*"}, `"*" is not a subscription id`},
		{[]string{"attempts", nowhere, "--subscription", "sub_01KAP..."}, "is not a subscription id"},
		{[]string{"dlq", "replay", nowhere, "0"}, `"0" is not a dead letter id: a positive integer`},
		{[]string{"dlq", "replay", nowhere, "--", "-1"}, `"-1" is not a dead letter id`},
		{[]string{"dlq", "replay", nowhere, "99999999999999999999999"}, "is not a dead letter id"},
		{[]string{"dlq", "list", nowhere, "--tenant", "*"}, "--tenant: \"*\" must be"},
		{[]string{"dlq", "list", nowhere, "--tenant", "acme", "--subscription", ">"}, "--subscription: \">\" must be"},
		{[]string{"scans", "stats", nowhere, "*", "--tenant", "acme"}, "scan id: \"*\" must be"},
		{[]string{"scans", "stats", nowhere, "s1", "--tenant", "a.b"}, "--tenant: \"a.b\" must be"},
		{[]string{"tenants", "set", nowhere, "*", "--partner", "mssp"}, "tenant: \"*\" must be"},
		{[]string{"tenants", "signing-secret", nowhere, "a b"}, "tenant: \"a b\" must be"},
		{[]string{"rejected", "list", nowhere, "--tenant", ">"}, "--tenant: \">\" must be"},
	} {
		_, err := runCLI(t, context.Background(), c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "nats:") || strings.Contains(err.Error(), "connect") {
			t.Errorf("%v: got %v, want %q", c.args, err, c.want)
		}
	}
}
