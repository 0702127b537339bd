package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

func TestHealthAndReadiness(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ns := natsxtest.Server(t)
	js := natsxtest.Connect(t, ns)
	srv := httptest.NewServer(New(js, Deps{}, log, Config{}))
	t.Cleanup(srv.Close)

	get := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/healthz"); c != 200 {
		t.Errorf("/healthz = %d", c)
	}
	if c := get("/readyz"); c != 503 {
		t.Errorf("/readyz before the streams exist = %d, want 503", c)
	}
	if err := natsx.DefaultTopology().Ensure(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	if c := get("/readyz"); c != 200 {
		t.Errorf("/readyz with the streams = %d, want 200", c)
	}
	// A process whose fan-out consumer is not bound is not ready.
	bound := httptest.NewServer(New(js, Deps{}, log, Config{Consumers: map[string]string{"fanout": natsx.StreamScanEvents}}))
	t.Cleanup(bound.Close)
	resp, err := http.Get(bound.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/readyz without its consumer = %d, want 503", resp.StatusCode)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	if c := get("/readyz"); c != 503 {
		t.Errorf("/readyz with NATS gone = %d, want 503", c)
	}
}

func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header, key string
		ok          bool
	}{
		{"Bearer k-123", "k-123", true},
		{"bearer k-123", "k-123", true},
		{"BEARER k-123", "k-123", true},
		{"Bearer  k-123 ", "k-123", true},
		{"Basic k-123", "", false},
		{"Bearerk-123", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearer    ", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		key, ok := bearer(tt.header)
		if key != tt.key || ok != tt.ok {
			t.Errorf("bearer(%q) = %q, %v; want %q, %v", tt.header, key, ok, tt.key, tt.ok)
		}
	}
}

// /readyz fails, saying why, when a consumer of this process takes no new
// message while messages wait for it, and when the store refuses writes;
// it recovers when either is over.
func TestReadinessSeesStallsAndWriteErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	js := natsxtest.JetStream(t)
	cons, err := js.CreateOrUpdateConsumer(ctx, natsx.StreamScanEvents, jetstream.ConsumerConfig{Durable: "fanout", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	var writes natsx.Writes
	srv := httptest.NewServer(New(js, Deps{Writes: &writes}, slog.New(slog.DiscardHandler),
		Config{Consumers: map[string]string{"fanout": natsx.StreamScanEvents}, StallAfter: 300 * time.Millisecond}))
	t.Cleanup(srv.Close)
	ready := func() (int, string) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, body := ready(); c != 200 {
		t.Fatalf("/readyz of an idle consumer = %d %s, want 200", c, body)
	}

	// Work waits and nobody takes it: stalled once StallAfter has passed.
	if _, err := js.Publish(ctx, "scans.acme.s1.started", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if c, body := ready(); c != 200 {
		t.Fatalf("/readyz right after work arrived = %d %s, want 200 (not stalled yet)", c, body)
	}
	natsxtest.Eventually(t, "readyz reports the stall", func() bool {
		c, body := ready()
		return c == 503 && strings.Contains(body, "consumer fanout on SCAN_EVENTS is stalled") && strings.Contains(body, "1 messages wait")
	})
	// It takes the message: progress, ready again.
	batch, err := cons.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		_ = m.Ack()
	}
	if c, body := ready(); c != 200 {
		t.Errorf("/readyz after the consumer took the message = %d %s, want 200", c, body)
	}

	// The answer says what is wrong in our words; NATS's error is logged.
	writes.Observe(errors.New("nats: insufficient resources"))
	if c, body := ready(); c != 503 || !strings.Contains(body, "the store refuses writes") || strings.Contains(body, "insufficient resources") {
		t.Errorf("/readyz with failing writes = %d %s, want 503 saying so without NATS's error", c, body)
	}
	writes.Observe(nil)
	if c, body := ready(); c != 200 {
		t.Errorf("/readyz once a write succeeded again = %d %s, want 200", c, body)
	}
}
