// Package gateway is scanwire's HTTP API: health, readiness and (growing)
// the /v1 endpoints of DESIGN.md.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/natsx"
)

// Gateway is the HTTP API.
type Gateway struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
	mux *http.ServeMux
}

// New returns the gateway's handler.
func New(nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) *Gateway {
	g := &Gateway{nc: nc, js: js, log: log.With("service", "gateway"), mux: http.NewServeMux()}
	g.mux.HandleFunc("GET /healthz", g.healthz)
	g.mux.HandleFunc("GET /readyz", g.readyz)
	return g
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.mux.ServeHTTP(w, r) }

// Serve runs srv on ln until it is shut down; a clean shutdown is not an
// error.
func Serve(srv *http.Server, ln net.Listener, log *slog.Logger) error {
	log.Info("gateway listening", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// healthz says the process is up, nothing more.
func (g *Gateway) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz says the process can do its work: NATS connected and every
// stream of DESIGN.md reachable.
func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if !g.nc.IsConnected() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "nats not connected"})
		return
	}
	for _, name := range []string{natsx.StreamScanEvents, natsx.StreamDeliveries, natsx.StreamDLQ, natsx.StreamRejected} {
		if _, err := g.js.Stream(ctx, name); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "stream " + name + ": " + err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
