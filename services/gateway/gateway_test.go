package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

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
