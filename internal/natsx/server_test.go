package natsx

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// A store an earlier release kept in the server's global account is the
// scanwire account's once the server has accounts: its streams and
// messages are there, and a second start leaves them.
func TestGlobalStoreMovesToTheAccount(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	const conf = `accounts { SCANWIRE { jetstream: enabled, users: [ {user: open, password: "pw-0123456789abcdef"} ] } }
no_auth_user: open`

	run := func(cfg ServerConfig, use func(jetstream.JetStream)) {
		t.Helper()
		cfg.DataDir, cfg.Listen = dir, "127.0.0.1:0"
		lock, err := LockDataDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Unlock()
		cfg.Lock = lock
		ns, err := StartServer(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := Connect(ns.ClientURL(), t.Name(), ns, log)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := JetStream(nc)
		use(js)
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	ctx := context.Background()
	run(ServerConfig{}, func(js jetstream.JetStream) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OLD", Subjects: []string{"old.>"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "old.a", []byte("kept")); err != nil {
			t.Fatal(err)
		}
	})
	for range 2 {
		run(ServerConfig{Conf: conf, Account: "SCANWIRE"}, func(js jetstream.JetStream) {
			s, err := js.Stream(ctx, "OLD")
			if err != nil {
				t.Fatalf("the stream of the global account: %v", err)
			}
			m, err := s.GetMsg(ctx, 1)
			if err != nil {
				t.Fatalf("its message: %v", err)
			}
			if string(m.Data) != "kept" {
				t.Errorf("its message holds %q", m.Data)
			}
		})
	}
}

// The cluster flags name what is missing; with a route user the routes
// carry its credentials.
func TestClusterOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  ServerConfig
		want string
	}{
		{ServerConfig{Routes: []string{"n2:6222"}}, "--routes: give --cluster-listen too"},
		{ServerConfig{ClusterListen: "0.0.0.0:6222"}, "give --server-name too"},
		{ServerConfig{Name: "n1", ClusterListen: "6222"}, `--cluster-listen "6222": want host:port`},
		{ServerConfig{Name: "n1", ClusterListen: "0.0.0.0:6222", Routes: []string{"n2:notaport"}}, "--routes"},
	} {
		err := clusterOptions(&server.Options{}, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	opts := &server.Options{}
	err := clusterOptions(opts, ServerConfig{Name: "n1", ClusterListen: "0.0.0.0:6222", Routes: []string{"n2:6222", "nats://n3:6222"},
		RouteUser: "scanwire-route", RoutePassword: "route-password-0123"})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Cluster.Name != ClusterName || opts.Cluster.Port != 6222 || opts.Cluster.Username != "scanwire-route" || len(opts.Routes) != 2 {
		t.Fatalf("cluster %+v, routes %v", opts.Cluster, opts.Routes)
	}
	for _, r := range opts.Routes {
		if pw, _ := r.User.Password(); r.User.Username() != "scanwire-route" || pw != "route-password-0123" {
			t.Errorf("route %s does not carry the route credentials", r.Host)
		}
	}
}
