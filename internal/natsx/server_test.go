package natsx

import (
	"context"
	"log/slog"
	"testing"

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
