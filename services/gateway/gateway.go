// Package gateway is scanwire's HTTP API: events in, subscriptions and
// their test deliveries, the attempt log, the DLQ, rejected events,
// per-scan stats, tenant records and signing secrets, health, readiness
// and /metrics. Every /v1 call is authenticated and confined to the
// caller's tenant, and every id it names is checked before it reaches
// NATS (ids.go).
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/rejected"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
	"github.com/scanwire/scanwire/internal/tenants"
)

// MaxBody caps every request body; larger requests get 413.
const MaxBody = 1 << 20

// Config tunes the gateway.
type Config struct {
	Keys Keys
	// Consumers are the durable consumers this process runs, which
	// /readyz checks are bound.
	Consumers map[string]string // consumer -> stream
	// TestWait bounds how long POST /v1/subscriptions/{id}/test waits for
	// the first attempt (default 30s).
	TestWait time.Duration
	// StallAfter is how long a consumer may take no new message while
	// messages wait for it before /readyz fails (default 1m): pinned at its
	// ack-pending limit, or its workers stuck.
	StallAfter time.Duration
	// HealthOnly serves /healthz, /readyz and /metrics and no API: the
	// HTTP port of a process that runs fan-out or delivery alone, for its
	// probes and its metrics.
	HealthOnly bool
}

// Gateway is the HTTP API.
type Gateway struct {
	js       jetstream.JetStream
	store    *subscriptions.Store
	attempts *attempts.Log
	dlq      *dlq.Store
	rejected *rejected.Store
	limits   *limits.Limiter
	tenants  *tenants.Store
	egress   *egress.Policy
	tel      *telemetry.Telemetry
	log      *slog.Logger
	writes   *natsx.Writes
	cfg      Config
	mux      *http.ServeMux
	progress progress
	// keys are cfg.Keys until SetKeys replaces them.
	keys atomic.Pointer[Keys]
}

// Deps are what the gateway serves from.
type Deps struct {
	Store     *subscriptions.Store
	Attempts  *attempts.Log
	DLQ       *dlq.Store
	Limits    *limits.Limiter
	Tenants   *tenants.Store
	Telemetry *telemetry.Telemetry
	// Egress is the pipeline's egress policy: it judges the callback_url
	// of a scan.started event as fan-out will (nil: left to fan-out).
	Egress *egress.Policy
	// Writes says whether this process's writes are being stored; /readyz
	// fails while they are not. The gateway reports its own publishes.
	Writes *natsx.Writes
}

// New returns the gateway's handler.
func New(js jetstream.JetStream, d Deps, logger *slog.Logger, cfg Config) *Gateway {
	if cfg.TestWait <= 0 {
		cfg.TestWait = 30 * time.Second
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = time.Minute
	}
	g := &Gateway{js: js, store: d.Store, attempts: d.Attempts, dlq: d.DLQ, rejected: rejected.New(js), limits: d.Limits, tenants: d.Tenants, egress: d.Egress, tel: d.Telemetry, writes: d.Writes,
		log: logger.With("service", "gateway"), cfg: cfg, mux: http.NewServeMux()}
	g.keys.Store(&cfg.Keys)
	if g.tel != nil {
		g.mux.Handle("GET /metrics", g.tel.Handler)
	}
	g.mux.HandleFunc("GET /healthz", g.healthz)
	g.mux.HandleFunc("GET /readyz", g.readyz)
	if cfg.HealthOnly {
		return g
	}
	g.mux.HandleFunc("POST /v1/events", g.authed(g.publishEvent))
	g.mux.HandleFunc("GET /v1/subscriptions", g.authed(g.listSubscriptions))
	g.mux.HandleFunc("POST /v1/subscriptions", g.authed(g.createSubscription))
	g.mux.HandleFunc("GET /v1/subscriptions/{id}", g.authed(g.getSubscription))
	g.mux.HandleFunc("PATCH /v1/subscriptions/{id}", g.authed(g.patchSubscription))
	g.mux.HandleFunc("DELETE /v1/subscriptions/{id}", g.authed(g.deleteSubscription))
	g.mux.HandleFunc("POST /v1/subscriptions/{id}/rotate-secret", g.authed(g.rotateSecret))
	g.mux.HandleFunc("POST /v1/subscriptions/{id}/test", g.authed(g.testSubscription))
	g.mux.HandleFunc("GET /v1/subscriptions/{id}/attempts", g.authed(g.listAttempts))
	g.mux.HandleFunc("GET /v1/scans/{scan_id}/stats", g.authed(g.scanStats))
	g.mux.HandleFunc("GET /v1/dlq", g.authed(g.listDLQ))
	g.mux.HandleFunc("PUT /v1/tenants/{tenant}", g.authed(g.putTenant))
	g.mux.HandleFunc("GET /v1/tenants/{tenant}", g.authed(g.getTenant))
	g.mux.HandleFunc("DELETE /v1/tenants/{tenant}", g.authed(g.deleteTenant))
	g.mux.HandleFunc("GET /v1/signing-secret", g.authed(g.signingSecret))
	g.mux.HandleFunc("POST /v1/signing-secret/rotate", g.authed(g.rotateSigningSecret))
	g.mux.HandleFunc("POST /v1/dlq/{id}/replay", g.authed(g.replayDLQ))
	g.mux.HandleFunc("GET /v1/rejected", g.authed(g.listRejected))
	g.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return g
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	g.mux.ServeHTTP(w, r)
}

// Handler wraps the gateway in an HTTP server span per request (continuing
// a caller's traceparent), named by route.
func (g *Gateway) Handler() http.Handler {
	if g.tel == nil {
		return g
	}
	return otelhttp.NewHandler(g, "gateway", otelhttp.WithTracerProvider(g.tel.TracerProvider()),
		otelhttp.WithPropagators(telemetry.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }),
		otelhttp.WithFilter(func(r *http.Request) bool {
			return r.URL.Path != "/metrics" && r.URL.Path != "/healthz" && r.URL.Path != "/readyz"
		}))
}

// SetKeys replaces the API keys: a key removed is refused at its next
// request, one added is taken.
func (g *Gateway) SetKeys(k Keys) { g.keys.Store(&k) }

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

// readyz says the process can do its work: NATS connected, every stream
// reachable, the store taking writes, and the consumers of this process's
// services bound and making progress. The body names what is wrong.
func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if !g.js.Conn().IsConnected() {
		writeError(w, http.StatusServiceUnavailable, "", "nats not connected")
		return
	}
	// The answers name what is wrong in our words; NATS's own error text
	// goes to the log only.
	for _, name := range []string{natsx.StreamScanEvents, natsx.StreamDeliveries, natsx.StreamDLQ, natsx.StreamRejected, natsx.StreamAttempts} {
		s, err := g.js.Stream(ctx, name)
		if err != nil {
			g.log.Warn("readyz: stream unreachable", "stream", name, "err", err)
			msg := "stream " + name + " unreachable"
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound):
				msg = "stream " + name + " does not exist"
			case natsx.NotReady(err):
				msg = "stream " + name + " unreachable: the JetStream cluster has no leader or has lost quorum (too few of its servers are up)"
			}
			writeError(w, http.StatusServiceUnavailable, "", msg)
			return
		}
		if msg := quorum(s.CachedInfo()); msg != "" {
			writeError(w, http.StatusServiceUnavailable, "", msg)
			return
		}
	}
	if err := g.writes.Failing(g.cfg.StallAfter); err != nil {
		g.log.Warn("readyz: writes failing", "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "the store refuses writes (NATS's error is in the log)")
		return
	}
	for consumer, stream := range g.cfg.Consumers {
		c, err := g.js.Consumer(ctx, stream, consumer)
		if err != nil {
			g.log.Warn("readyz: consumer unreachable", "consumer", consumer, "stream", stream, "err", err)
			msg := "consumer " + consumer + " on " + stream + " unreachable"
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				msg = "consumer " + consumer + " on " + stream + " is not bound"
			}
			writeError(w, http.StatusServiceUnavailable, "", msg)
			return
		}
		if stalled := g.progress.check(stream+"/"+consumer, c.CachedInfo(), g.cfg.StallAfter); stalled != "" {
			writeError(w, http.StatusServiceUnavailable, "", stalled)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// quorum says why a replicated stream cannot take writes, or "": it has
// no leader, or fewer of its replicas answer than a majority.
func quorum(info *jetstream.StreamInfo) string {
	if info == nil || info.Cluster == nil || info.Config.Replicas <= 1 {
		return ""
	}
	up := 0
	if info.Cluster.Leader != "" {
		up = 1
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Offline && r.Active < 30*time.Second {
			up++
		}
	}
	if info.Cluster.Leader == "" || up <= info.Config.Replicas/2 {
		return fmt.Sprintf("stream %s has lost quorum: %d of its %d replicas answer, a majority is %d (start the servers that are down)",
			info.Config.Name, up, info.Config.Replicas, info.Config.Replicas/2+1)
	}
	return ""
}

// progress remembers, per consumer, the last stream sequence it handed out
// and when that last moved, across /readyz calls.
type progress struct {
	mu   sync.Mutex
	seen map[string]progressMark
}

type progressMark struct {
	delivered uint64
	at        time.Time
}

// check says why a consumer is stalled, or "": messages wait for it
// (NumPending > 0) and it has handed out no new one for stallAfter. A
// consumer at its ack-pending limit whose messages never finish (every
// slot held by work that cannot end) looks exactly like this.
func (p *progress) check(key string, info *jetstream.ConsumerInfo, stallAfter time.Duration) string {
	if info == nil {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string]progressMark{}
	}
	now := time.Now()
	last, ok := p.seen[key]
	if !ok || info.Delivered.Stream != last.delivered || info.NumPending == 0 {
		p.seen[key] = progressMark{delivered: info.Delivered.Stream, at: now}
		return ""
	}
	if idle := now.Sub(last.at); idle >= stallAfter {
		return fmt.Sprintf("consumer %s on %s is stalled: %d messages wait and it has taken none for %s (%d in flight, ack-pending limit %d)",
			info.Name, info.Stream, info.NumPending, idle.Round(time.Second), info.NumAckPending, info.Config.MaxAckPending)
	}
	return ""
}

// apiError is the body of every error answer.
type apiError struct {
	Error    string `json:"error"`
	Field    string `json:"field,omitempty"`
	Problems any    `json:"problems,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, field, msg string) {
	writeJSON(w, status, apiError{Error: msg, Field: field})
}

// readBody reads a request body, answering 413 when it is over MaxBody.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := readAll(r)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "", "request body over 1 MiB")
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, "", "read body: "+err.Error())
		return nil, false
	}
	return b, true
}

// scanStats is GET /v1/scans/{scan_id}/stats: per subscription, how many
// findings of the scan the limits admitted and suppressed, by type.
func (g *Gateway) scanStats(w http.ResponseWriter, r *http.Request, c caller) {
	scanID, ok := pathToken(w, r, "scan_id", "scan")
	if !ok {
		return
	}
	if c.tenant == "" {
		writeError(w, http.StatusUnprocessableEntity, "tenant", "the admin key names the tenant with ?tenant=")
		return
	}
	stats, err := g.limits.ScanStats(r.Context(), c.tenant, scanID)
	if errors.Is(err, limits.ErrBadID) { // checked above; kept should the rules part
		writeError(w, http.StatusNotFound, "", "scan not found")
		return
	}
	if err != nil {
		g.log.Error("scan stats", "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "limit records unavailable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"scan_id": scanID, "subscriptions": stats})
}
