package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/services/gateway"
)

// Issue 13.2: nats.conf's service users have the permissions the embedded
// server gives them (internal/natsauth), no more and no less.
func TestNATSConfUsersAreTheServicesUsers(t *testing.T) {
	t.Parallel()
	opts := natsConf(t)
	found := map[string]bool{}
	for _, u := range opts.Users {
		want, ok := natsauth.Service(u.Username)
		if !ok {
			if u.Username != natsauth.UserAuth {
				t.Errorf("nats.conf: user %s is not a scanwire service", u.Username)
			}
			continue
		}
		found[u.Username] = true
		p := u.Permissions
		if p == nil || p.Publish == nil || p.Subscribe == nil {
			t.Errorf("nats.conf: %s has no permissions", u.Username)
			continue
		}
		if !slices.Equal(sorted(p.Publish.Allow), want.Publish) || !slices.Equal(sorted(p.Subscribe.Allow), want.Subscribe) ||
			len(p.Publish.Deny) > 0 || len(p.Subscribe.Deny) > 0 || (p.Response != nil) != want.Responses {
			t.Errorf("nats.conf: %s's permissions differ from internal/natsauth's", u.Username)
		}
		if u.Account == nil || u.Account.Name != natsauth.Account {
			t.Errorf("nats.conf: %s is not in account %s", u.Username, natsauth.Account)
		}
	}
	for _, u := range natsauth.ServiceUsers {
		if !found[u] {
			t.Errorf("nats.conf: no user %s", u)
		}
	}
	if opts.AuthCallout == nil || opts.AuthCallout.Account != natsauth.AuthAccount || len(opts.AuthCallout.AuthUsers) != len(natsauth.ServiceUsers)+1 {
		t.Errorf("nats.conf: auth callout %+v", opts.AuthCallout)
	}
	if opts.SystemAccount != natsauth.SystemAccount || opts.TLSConfig == nil {
		t.Errorf("nats.conf: system account %q, TLS %v", opts.SystemAccount, opts.TLSConfig != nil)
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

// Issue 13.3: against a server of nats.conf (TLS, accounts, the callout),
// three scanwire processes, one per service, each connect as their own
// user and the credentials of the environment; a scanner connects with its
// tenant's key and its event is delivered.
func TestNATSConfServesThePipeline(t *testing.T) {
	t.Parallel()
	opts, creds, ca := natsConfWith(t)
	opts.StoreDir, opts.Host, opts.Port, opts.HTTPPort, opts.NoSigs = t.TempDir(), "127.0.0.1", server.RANDOM_PORT, 0, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("a server from nats.conf did not start")
	}
	const acmeKey = "acme-conf-key-0123456789"
	keys := gateway.Keys{Admin: "admin-conf-key-0123456789", Tenants: map[string]string{"acme": acmeKey}}
	var apps []*app.App
	for _, svc := range []string{app.ServiceGateway, app.ServiceFanout, app.ServiceDelivery} {
		cfg := app.Config{NATSURL: ns.ClientURL(), NATSCA: ca.CA, NATSAuth: creds, Services: []string{svc},
			Topology: natsx.DefaultTopology(), Log: slog.New(slog.DiscardHandler), AllowPrivateTargets: true, HTTPAddr: "127.0.0.1:0"}
		cfg.Gateway.Keys = keys
		a, err := app.Start(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%s against nats.conf: %v", svc, err)
		}
		t.Cleanup(func() { _ = a.Close(context.Background()) })
		apps = append(apps, a)
	}
	var got atomic.Int32
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { got.Add(1) }))
	t.Cleanup(rec.Close)
	if _, err := apps[0].Store.Create(context.Background(), subscriptions.Subscription{Tenant: "acme", URL: rec.URL, Events: []string{"scan.started"}}); err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("acme", acmeKey), nats.RootCAs(ca.CA), nats.CustomInboxPrefix(natsauth.InboxPrefix("acme")))
	if err != nil {
		t.Fatalf("scanner: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	e := events.New("acme", "//scanners/conf", events.TypeScanStarted, "s1", []byte(`{"scan_id":"s1","target":"t"}`))
	subject, _ := events.Subject("acme", "s1", events.TypeScanStarted)
	deadline := time.Now().Add(15 * time.Second)
	for got.Load() == 0 && time.Now().Before(deadline) {
		if _, err := events.Publish(context.Background(), js, subject, &e); err != nil {
			t.Fatalf("scanner publishes: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // the first may come before the subscription is cached; the same id is one event
	}
	if got.Load() == 0 {
		t.Fatal("the scanner's event was not delivered")
	}
}
