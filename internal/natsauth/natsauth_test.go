package natsauth

import (
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

type keys map[string]string // password -> tenant, "" for the admin

func (k keys) Identify(p string) (string, bool, bool) {
	t, ok := k[p]
	return t, ok && t == "", ok
}

// The callout lets in a tenant with its own key and the admin with the
// admin key as "admin", and nobody else.
func TestCalloutJudges(t *testing.T) {
	c := &Callout{}
	c.SetKeys(keys{"acme-key": "acme", "globex-key": "globex", "admin-key": ""})
	for _, tc := range []struct {
		user, password string
		want           *Permissions
	}{
		{"acme", "acme-key", &Permissions{Publish: []string{"scans.acme.>"}, Subscribe: []string{"_INBOX_acme.>"}}},
		{"admin", "admin-key", &Permissions{Publish: []string{">"}, Subscribe: []string{">"}, Responses: true}},
		{"acme", "globex-key", nil},
		{"acme", "admin-key", nil},
		{"admin", "acme-key", nil},
		{"acme", "", nil},
		{"", "acme-key", nil},
		{UserFanout, "admin-key", nil},
	} {
		got, err := c.judge(tc.user, tc.password)
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("%s with %s: let in as %+v", tc.user, tc.password, got)
		case tc.want != nil && (err != nil || !slices.Equal(got.Publish, tc.want.Publish) || !slices.Equal(got.Subscribe, tc.want.Subscribe) || got.Responses != tc.want.Responses):
			t.Errorf("%s with %s: %+v, %v; want %+v", tc.user, tc.password, got, err, *tc.want)
		}
	}
}

// Fan-out cannot write a subscription; the gateway cannot take a job; no
// service may subscribe to every inbox; fan-out and delivery cannot set up
// the streams.
func TestServicePermissions(t *testing.T) {
	fanout, _ := Service(UserFanout)
	gateway, _ := Service(UserGateway)
	delivery, _ := Service(UserDelivery)
	pipeline, _ := Service(UserPipeline)
	for _, no := range []struct {
		user    string
		p       []string
		subject string
	}{
		{"fanout", fanout.Publish, "$KV.subscriptions.>"},
		{"fanout", fanout.Publish, "$JS.API.STREAM.CREATE.*"},
		{"gateway", gateway.Publish, "$JS.API.CONSUMER.CREATE.DELIVERIES.>"},
		{"gateway", gateway.Publish, "$JS.ACK.DELIVERIES.>"},
		{"delivery", delivery.Publish, "scans.>"},
		{"delivery", delivery.Publish, "$JS.API.STREAM.CREATE.*"},
		{"pipeline", pipeline.Subscribe, "_INBOX.>"},
		{"fanout", fanout.Subscribe, ">"},
	} {
		if slices.Contains(no.p, no.subject) || slices.Contains(no.p, ">") {
			t.Errorf("%s may %s", no.user, no.subject)
		}
	}
	if _, ok := Service("scanwire.other"); ok {
		t.Error("an unknown user has permissions")
	}
	if CanSetUp(UserFanout) || CanSetUp(UserDelivery) || !CanSetUp(UserGateway) || !CanSetUp(UserPipeline) {
		t.Error("CanSetUp")
	}
	if ForServices([]string{"fanout"}) != UserFanout || ForServices([]string{"fanout", "delivery"}) != UserPipeline || ForServices(nil) != UserPipeline {
		t.Error("ForServices")
	}
	if !strings.HasPrefix(InboxPrefix("acme"), "_INBOX_") || !strings.HasPrefix(InboxPrefix(UserFanout), "_INBOX.scanwire.") {
		t.Error("InboxPrefix")
	}
}

// The embedded server's configurations load in the server's own parser,
// with the users, accounts and callout they say.
func TestServerConfParses(t *testing.T) {
	c := Credentials{}.Complete()
	opts := &server.Options{}
	if err := opts.ProcessConfigString(ServerConf(c)); err != nil {
		t.Fatal(err)
	}
	if opts.AuthCallout == nil || opts.AuthCallout.Account != AuthAccount || opts.SystemAccount != SystemAccount || len(opts.Users) != len(ServiceUsers)+1 {
		t.Errorf("closed: %+v, %d users", opts.AuthCallout, len(opts.Users))
	}
	open := &server.Options{}
	if err := open.ProcessConfigString(OpenServerConf()); err != nil {
		t.Fatal(err)
	}
	if open.NoAuthUser == "" || open.AuthCallout != nil {
		t.Errorf("open: no_auth_user %q, callout %v", open.NoAuthUser, open.AuthCallout)
	}
	if _, err := CredentialsFromEnv(func(k string) string {
		if k == EnvPassword(UserFanout) {
			return "short"
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), EnvPassword(UserFanout)) {
		t.Errorf("a short password: %v", err)
	}
	if _, err := CredentialsFromEnv(func(k string) string {
		if k == EnvIssuer {
			return "SUAP277QP7U4JMFFPVZHLJYEQJ2UHOTYVEIZJYAWRJXQLP4FRSEHYZJJOU" // a user seed
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), EnvIssuer) {
		t.Errorf("a user seed as issuer: %v", err)
	}
}
