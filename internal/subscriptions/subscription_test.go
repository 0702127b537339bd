package subscriptions

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/natsx"
)

func TestParseNamesTheFieldAndTheFix(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown field", `{"tenant":"acme","url":"https://h.example.com","events":["scan.started"],"colour":"red"}`, "colour"},
		{"unknown event type", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"https://h.example.com","events":["scan.paused"],"profile":"standard-webhooks","secrets":[{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]}`, `subscription.events[0]: unknown event type "scan.paused"`},
		{"bad duration", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"https://h.example.com","events":["scan.started"],"profile":"standard-webhooks","retry":{"schedule":["0s"]},"secrets":[{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]}`, "subscription.retry.schedule[0]"},
		{"negative limit", `{"tenant":"acme","url":"https://h.example.com","events":["scan.started"],"limits":{"findings_per_scan":-1}}`, "limits"},
		{"url with userinfo", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"https://u:p@h.example.com","events":["scan.started"],"profile":"standard-webhooks","secrets":[{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]}`, "subscription.url: must not carry a user"},
		{"not a url", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"ftp://h.example.com","events":["scan.started"],"profile":"standard-webhooks","secrets":[{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]}`, "subscription.url"},
		{"unsigned standard", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"https://h.example.com","events":["scan.started"],"profile":"standard-webhooks","secrets":[]}`, "subscription.secrets: profile standard-webhooks signs every delivery"},
		{"not JSON", `{"tenant":`, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestWants(t *testing.T) {
	tests := []struct {
		patterns []string
		typ      string
		want     bool
	}{
		{[]string{"finding.*"}, "finding.high", true},
		{[]string{"finding.*"}, "finding.medium", true},
		{[]string{"finding.*"}, "scan.started", false},
		{[]string{"*"}, "webhook.test", true},
		{[]string{"scan.finished"}, "scan.finished", true},
		{[]string{"scan.finished"}, "scan.started", false},
		{[]string{"scan.*", "finding.high"}, "finding.high", true},
	}
	for _, tt := range tests {
		s := &Subscription{Events: tt.patterns}
		if got := s.Wants(tt.typ); got != tt.want {
			t.Errorf("%v wants %s = %v, want %v", tt.patterns, tt.typ, got, tt.want)
		}
	}
}

func TestLiveSecretsDropExpired(t *testing.T) {
	now := time.Now()
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	s := &Subscription{Secrets: []Secret{{Secret: "new"}, {Secret: "old", Expires: &future}, {Secret: "gone", Expires: &past}}}
	got := s.LiveSecrets(now)
	if strings.Join(got, ",") != "new,old" {
		t.Errorf("live secrets %v, want [new old]", got)
	}
}

// startKV starts a real in-process nats-server with the bucket.
func startKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, err := natsx.StartServer(natsx.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := natsx.Connect(ns.ClientURL(), "test", ns, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsx.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsx.DefaultTopology().Ensure(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), natsx.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestStoreAndCacheAgree(t *testing.T) {
	ctx := context.Background()
	kv := startKV(t)
	store := NewStore(kv, nil)
	cache := NewCache(kv, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = cache.Run(cctx) }()
	<-cache.Ready()

	s, err := store.Create(ctx, Subscription{Tenant: "acme", URL: "https://h.example.com/x", Events: []string{"finding.*"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.ID, "sub_") || len(s.Secrets) != 1 || !strings.HasPrefix(s.Secrets[0].Secret, "whsec_") {
		t.Fatalf("create did not fill id and secret: %+v", s)
	}
	// An operator's hand-written invalid document is ignored, not fatal.
	if _, err := kv.Put(ctx, "acme.sub_BROKEN", []byte(`{"tenant":"acme","url":"nope"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(cache.Match("acme", "finding.high", Facts{})) == 1 })
	if _, ok := cache.Get("acme", "sub_BROKEN"); ok {
		t.Error("invalid document entered the cache")
	}
	entries, err := store.List(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[1].Err == nil && entries[0].Err == nil {
		t.Errorf("list should show the valid and the invalid document: %+v", entries)
	}
	if tenant, err := store.TenantOf(ctx, s.ID); err != nil || tenant != "acme" {
		t.Errorf("TenantOf = %q, %v", tenant, err)
	}

	// Compare-and-swap: the second writer of the same revision loses.
	got, rev, err := store.Get(ctx, "acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	got.Description = "first"
	if _, err := store.Update(ctx, *got, rev); err != nil {
		t.Fatal(err)
	}
	got.Description = "second"
	if _, err := store.Update(ctx, *got, rev); !errors.Is(err, ErrConflict) {
		t.Errorf("stale update: %v, want ErrConflict", err)
	}

	if err := store.Delete(ctx, "acme", s.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return cache.Len() == 0 })
	if err := store.Delete(ctx, "acme", s.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
