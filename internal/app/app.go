// Package app wires scanwire's parts into one running process: the NATS
// server or connection, the streams, the subscription cache and the
// services. `scanwire run`, `scanwire demo` and the end-to-end tests all
// start the pipeline through it, so what is tested is what runs.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/callbacks"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/secrets"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
	"github.com/scanwire/scanwire/internal/tenants"
	"github.com/scanwire/scanwire/services/delivery"
	"github.com/scanwire/scanwire/services/fanout"
	"github.com/scanwire/scanwire/services/gateway"
)

// Service names for Config.Services.
const (
	ServiceFanout   = "fanout"
	ServiceDelivery = "delivery"
	ServiceGateway  = "gateway"
)

// AllServices is what `scanwire run` starts by default.
var AllServices = []string{ServiceFanout, ServiceDelivery, ServiceGateway}

// Config is everything a process needs. Build it once in main, Validate it,
// and pass it to Start.
type Config struct {
	// NATSURL selects an external NATS; empty starts the embedded server.
	NATSURL string
	// Server configures the embedded server (ignored with NATSURL).
	Server natsx.ServerConfig
	// Topology configures the streams and buckets.
	Topology natsx.Topology
	// HTTPAddr is where the gateway listens.
	HTTPAddr string
	// Services lists the services to run; empty runs none (a client).
	Services []string
	Fanout   fanout.Config
	Delivery delivery.Config
	Gateway  gateway.Config
	Log      *slog.Logger
	// Telemetry, when nil, is built from the OTEL_* environment.
	Telemetry *telemetry.Telemetry
	// AllowPrivateTargets lets subscriptions reach loopback and private
	// addresses over http (local development and tests); link-local and
	// cloud metadata addresses stay blocked.
	AllowPrivateTargets bool
	// Resolver, when set, resolves webhook hosts (tests).
	Resolver egress.Resolver
	// NATSAuth are the NATS credentials of the services and the auth
	// callout that the environment sets (natsauth.CredentialsFromEnv).
	// With API keys (Gateway.Keys) the embedded server is closed
	// (natsauth.ServerConf) with them, made up where not set; with an
	// external NATS this process connects as its services' user when that
	// user's password is set, and answers the server's auth callout when
	// the callout's password and issuer are.
	NATSAuth natsauth.Credentials
	// NATSCA is a PEM file of the certificate authority that NATS's
	// certificate must chain to (--nats-ca), for an external NATS over
	// TLS; empty: the system's.
	NATSCA string
	// HTTPCert and HTTPKey, when set, are the PEM files of the gateway's
	// certificate: it serves HTTPS only.
	HTTPCert, HTTPKey string
	// NATSLifetime is how long a scanner's or the operator's NATS
	// connection lasts before it must connect, and be judged by the keys,
	// again (natsauth.DefaultLifetime when zero).
	NATSLifetime time.Duration
	// Secrets seals the signing secrets of subscriptions and tenants in
	// KV (SCANWIRE_SECRETS_KEY); nil or empty keeps them in plain text.
	Secrets *secrets.Keyring
}

// Validate checks the configuration and names the flag to fix.
func (c *Config) Validate() error {
	for _, s := range c.Services {
		if !slices.Contains(AllServices, s) {
			return fmt.Errorf("--services: unknown service %q; use a comma-separated subset of %s", s, strings.Join(AllServices, ","))
		}
	}
	if c.NATSURL == "" && c.Server.DataDir == "" {
		return errors.New("--data: the embedded NATS server needs a data directory")
	}
	for _, pair := range [][4]string{{"--nats-tls-cert", c.Server.TLSCert, "--nats-tls-key", c.Server.TLSKey}, {"--tls-cert", c.HTTPCert, "--tls-key", c.HTTPKey}} {
		if (pair[1] == "") != (pair[3] == "") {
			return fmt.Errorf("%s and %s: give both, the certificate and its key (PEM files), or neither", pair[0], pair[2])
		}
	}
	if c.NATSURL == "" && !c.Gateway.Keys.Empty() && c.Server.ClusterListen != "" && !c.NATSAuth.Whole() {
		return errors.New("--cluster-listen with API keys: every server of the cluster must close NATS with the same credentials; set the SCANWIRE_NATS_* variables of `scanwire secrets nats` (the same file) on each")
	}
	if c.NATSURL == "" && c.Gateway.Keys.Empty() && c.Server.ClusterListen != "" && !loopback(c.Server.ClusterListen) {
		return fmt.Errorf("--cluster-listen %s: without API keys the routes of the embedded NATS server are open to anyone, so they listen on loopback only; set SCANWIRE_API_KEYS or SCANWIRE_ADMIN_KEY (and the SCANWIRE_NATS_* variables, the same on every server) to serve other hosts", c.Server.ClusterListen)
	}
	if c.NATSURL == "" && c.Gateway.Keys.Empty() && !loopback(c.Server.Listen) {
		return fmt.Errorf("--nats-listen %s: without API keys the embedded NATS server lets in anyone without credentials, so it listens on loopback only (127.0.0.1:4222); set SCANWIRE_API_KEYS or SCANWIRE_ADMIN_KEY to serve other hosts", c.Server.Listen)
	}
	return nil
}

// App is a started process.
type App struct {
	Server   *server.Server // nil with an external NATS
	NC       *nats.Conn
	JS       jetstream.JetStream
	Subs     *subscriptions.Cache
	Store    *subscriptions.Store
	Attempts *attempts.Log
	DLQ      *dlq.Store
	Limits   *limits.Limiter
	Tenants  *tenants.Store
	TenantsC *tenants.Cache
	Tel      *telemetry.Telemetry
	Egress   *egress.Policy

	cfg    Config
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
	ownTel bool
	// callbacks pairs scan.started and scan.finished for fan-out.
	callbacks *callbacks.Registry
	// lanes is the lanes bucket, for delivery.
	lanes jetstream.KeyValue
	// writes is whether this process's writes are stored, for /readyz.
	writes natsx.Writes
	http   *http.Server
	httpLn net.Listener
	// announce answers clients that ask what egress policy this process
	// applies (subscriptions.Announce).
	announce micro.Service
	// lock holds the embedded server's data directory from before the
	// server starts until after it has shut down.
	lock *natsx.DataDirLock
	// callout answers the server's auth callout (natsauth), on its own
	// connection calloutNC; nil when this process does not answer it.
	callout   *natsauth.Callout
	calloutNC *nats.Conn
	// gateway is the gateway service, when this process runs it.
	gateway *gateway.Gateway
	// cut, once cancelled, cuts the webhook requests in flight (see Close);
	// cutter counts them.
	cut    context.Context
	cutNow context.CancelFunc
	cutter *cutTransport
}

// Start brings the process up: NATS, streams, caches, then the services.
// Everything started is stopped by Close, in reverse order.
func Start(ctx context.Context, cfg Config) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	a := &App{cfg: cfg, log: log, errs: make(chan error, 8)}
	a.cut, a.cutNow = context.WithCancel(context.Background())
	if err := a.start(ctx); err != nil {
		a.Close(context.Background())
		return nil, err
	}
	return a, nil
}

// start runs Start's steps in order; the caller closes a on an error.
func (a *App) start(ctx context.Context) error {
	if a.cfg.NATSURL == "" {
		// First of all: a second process on the same directory must fail
		// before it touches anything, the store least of all.
		lock, err := natsx.LockDataDir(a.cfg.Server.DataDir)
		if err != nil {
			var inUse *natsx.DataDirInUseError
			if errors.As(err, &inUse) {
				return fmt.Errorf("%w: stop that process first, or give this one another --data", err)
			}
			return err
		}
		a.lock = lock
	}
	if err := a.startTelemetry(ctx); err != nil {
		return err
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	if err := a.openStores(ctx); err != nil {
		return err
	}
	if err := a.observe(); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if len(a.cfg.Services) > 0 {
		// The CLI writes subscriptions by the policy the pipeline applies,
		// which it learns here.
		svc, err := subscriptions.Announce(a.NC, subscriptions.Announcement{
			AllowPrivateTargets: a.cfg.AllowPrivateTargets, Services: a.cfg.Services}, delivery.Version)
		if err != nil {
			return err
		}
		a.announce = svc
	}
	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.spawn("subscription cache", func() error { return a.Subs.Run(runCtx) })
	a.spawn("tenant cache", func() error { return a.TenantsC.Run(runCtx) })
	a.spawn("attempt log", func() error { return a.Attempts.Run(runCtx) })
	for _, name := range a.cfg.Services {
		if err := a.startService(ctx, runCtx, name); err != nil {
			return err
		}
	}
	if !slices.Contains(a.cfg.Services, ServiceGateway) && len(a.cfg.Services) > 0 && a.cfg.HTTPAddr != "" {
		// No API here, but the probes and the metrics of the services.
		if err := a.startGateway(true); err != nil {
			return err
		}
	}
	for _, ready := range []<-chan struct{}{a.Subs.Ready(), a.TenantsC.Ready()} {
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Loading the caches allocates about twice what they keep (each
	// document read, decoded and checked): the pages of that garbage go
	// back to the system now, not over the next minutes, so that a process
	// holding 100,000 subscriptions does not hold the memory of loading
	// them (BenchmarkMemorySubscriptions). A forced collection stops the
	// process a moment: only worth it for a large cache.
	if a.Subs.Len() >= freeAfterLoad {
		debug.FreeOSMemory()
	}
	return nil
}

// freeAfterLoad is the number of subscriptions from which Start returns
// the memory of loading them to the system at once.
const freeAfterLoad = 10_000

// startTelemetry uses the configured telemetry or builds one from the
// OTEL_* environment (then owned, and shut down, by the App).
func (a *App) startTelemetry(ctx context.Context) error {
	if a.Tel = a.cfg.Telemetry; a.Tel != nil {
		return nil
	}
	t, err := telemetry.New(ctx, telemetry.Options{})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	a.Tel, a.ownTel = t, true
	return nil
}

// openStores opens the buckets and builds the stores and caches over them.
func (a *App) openStores(ctx context.Context) error {
	kv := map[string]jetstream.KeyValue{}
	for _, b := range []string{natsx.BucketSubscriptions, natsx.BucketLimits, natsx.BucketTenants, natsx.BucketCallbacks, natsx.BucketLanes} {
		bucket, err := a.JS.KeyValue(ctx, b)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", b, err)
		}
		kv[b] = bucket
	}
	if !a.cfg.Secrets.Enabled() {
		a.log.Warn("signing secrets are stored in plain text: set " + secrets.EnvKey + " (make one with `scanwire secrets keygen`) to seal them")
	}
	for _, b := range []string{natsx.BucketSubscriptions, natsx.BucketTenants} {
		kv[b] = secrets.Wrap(kv[b], a.cfg.Secrets, secrets.DefaultFields)
	}
	a.Egress = &egress.Policy{AllowPrivate: a.cfg.AllowPrivateTargets, Resolver: a.cfg.Resolver}
	a.Store = subscriptions.NewStore(kv[natsx.BucketSubscriptions], a.Egress)
	a.Subs = subscriptions.NewCache(kv[natsx.BucketSubscriptions], a.Egress, a.log)
	a.Attempts = attempts.NewLog(a.JS, a.log)
	a.DLQ = dlq.New(a.JS, a.Store)
	a.Limits = limits.New(a.JS, kv[natsx.BucketLimits])
	a.Tenants = tenants.NewStore(kv[natsx.BucketTenants])
	a.TenantsC = tenants.NewCache(kv[natsx.BucketTenants], a.log)
	a.callbacks = callbacks.New(kv[natsx.BucketCallbacks], a.JS)
	a.lanes = kv[natsx.BucketLanes]
	return nil
}

// startService starts one service of Config.Services; it runs until runCtx
// ends.
func (a *App) startService(ctx, runCtx context.Context, name string) error {
	switch name {
	case ServiceFanout:
		f := fanout.New(a.JS, fanout.Deps{Subs: a.Subs, Store: a.Store, Tenants: a.TenantsC, Limits: a.Limits,
			Callbacks: a.callbacks, Egress: a.Egress, Writes: &a.writes, Telemetry: a.Tel}, a.log, a.cfg.Fanout)
		a.spawn(name, func() error { return f.Run(runCtx) })
	case ServiceDelivery:
		client := delivery.NewHTTPClient(a.cfg.Delivery.Timeout, a.Egress.DialContext, a.Tel.TracerProvider())
		a.cutter = &cutTransport{base: client.Transport, cut: a.cut}
		client.Transport = a.cutter
		d := delivery.New(a.JS, delivery.Deps{Subs: a.Subs, Store: a.Store, Tenants: a.Tenants, Client: client,
			Attempts: a.Attempts, Telemetry: a.Tel, Writes: &a.writes, Lanes: a.lanes}, a.log, a.cfg.Delivery)
		a.spawn(name, func() error { return d.Run(runCtx) })
	case ServiceGateway:
		return a.startGateway(false)
	}
	return nil
}

// startGateway listens on HTTPAddr and serves the API (healthOnly: only
// /healthz, /readyz and /metrics); its readiness checks the consumers of
// the services this process runs.
func (a *App) startGateway(healthOnly bool) error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http %s: %w", a.cfg.HTTPAddr, err)
	}
	if a.cfg.HTTPCert != "" || a.cfg.HTTPKey != "" {
		cert, err := tls.LoadX509KeyPair(a.cfg.HTTPCert, a.cfg.HTTPKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	a.httpLn = ln
	gcfg := a.cfg.Gateway
	gcfg.HealthOnly = healthOnly
	gcfg.Consumers = map[string]string{}
	for stream, consumer := range a.consumers() {
		gcfg.Consumers[consumer] = stream
	}
	if gcfg.Keys.Empty() && !healthOnly {
		a.log.Warn("no API keys configured: the gateway refuses every /v1 call; set SCANWIRE_ADMIN_KEY or SCANWIRE_API_KEYS")
	}
	g := gateway.New(a.JS, gateway.Deps{Store: a.Store, Attempts: a.Attempts, DLQ: a.DLQ, Limits: a.Limits,
		Tenants: a.Tenants, Telemetry: a.Tel, Writes: &a.writes, Egress: a.Egress}, a.log, gcfg)
	a.gateway = g
	a.http = &http.Server{Handler: g.Handler(), ReadHeaderTimeout: 10 * time.Second}
	a.spawn(ServiceGateway, func() error { return gateway.Serve(a.http, ln, a.log) })
	return nil
}

// consumers maps each stream this process consumes to its consumer's name,
// as configured.
func (a *App) consumers() map[string]string {
	out := map[string]string{}
	if slices.Contains(a.cfg.Services, ServiceFanout) {
		out[natsx.StreamScanEvents] = fanout.ConsumerName(a.cfg.Fanout)
	}
	if slices.Contains(a.cfg.Services, ServiceDelivery) {
		out[natsx.StreamDeliveries] = delivery.ConsumerName(a.cfg.Delivery)
	}
	return out
}

func (a *App) spawn(name string, run func() error) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := run(); err != nil {
			a.log.Error("service failed", "service", name, "err", err)
			a.errs <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

// Err delivers the first service failure. A process that gets one should
// Close and exit non-zero.
func (a *App) Err() <-chan error { return a.errs }

// HTTPAddr is the gateway's address, or "" when it does not run here.
func (a *App) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// ClientURL is the NATS URL clients of this process connect to.
func (a *App) ClientURL() string {
	if a.Server != nil {
		return a.Server.ClientURL()
	}
	return a.cfg.NATSURL
}

// stopReserve is what Close keeps of its deadline, at most, for the steps
// after the services: flushing the attempt log, closing NATS, stopping the
// embedded server and flushing telemetry. A fifth of the time left when it
// is short.
const stopReserve = 2 * time.Second

// Close stops the process under ctx's deadline, in this order: stop
// pulling and serving, let the work in flight finish, flush the attempt
// log, drain the NATS connection, stop the embedded server, release the
// data directory, flush telemetry. Messages that arrive meanwhile are
// handed back to JetStream.
//
// The work in flight gets the deadline less the reserve (stopReserve).
// What is still in flight then is cut: the NATS connection is closed
// first, so that nothing more is settled, then the webhook requests in
// flight are cancelled. Their jobs stay unacknowledged in JetStream and
// come back after their AckWait, to the next start or another replica,
// with no attempt spent. That loses nothing and charges the job nothing
// for our stop; settling a cut request as a failed attempt would spend
// one of its attempts, and dead-letter a job on its last. A receiver that
// got the cut request gets it again with the same webhook-id.
//
// Without a deadline on ctx, Close waits for the work in flight, which
// the attempt timeout bounds. It returns an error only when the services
// did not stop even once cut.
func (a *App) Close(ctx context.Context) error {
	defer a.cutNow()
	if a.announce != nil {
		_ = a.announce.Stop()
	}
	if a.cancel != nil {
		a.cancel()
	}
	work, cancelWork := workDeadline(ctx)
	defer cancelWork()
	if a.http != nil && a.http.Shutdown(work) != nil {
		_ = a.http.Close() // requests still open are cut with the rest
	}
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
		if a.Attempts != nil {
			a.Attempts.Flush(ctx) // what in-flight work recorded after the log stopped
		}
		a.drain(ctx)
	case <-work.Done():
		a.cutWork(ctx)
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("services did not stop in time, even with their work cut: %w", ctx.Err())
		}
	}
	if a.calloutNC != nil {
		a.calloutNC.Close()
	}
	if a.Server != nil {
		a.Server.Shutdown()
		a.Server.WaitForShutdown()
	}
	if uerr := a.lock.Unlock(); uerr != nil {
		a.log.Warn("could not release the data directory", "dir", a.lock.Dir(), "err", uerr)
	}
	if a.ownTel {
		_ = a.Tel.Shutdown(ctx)
	}
	return err
}

// workDeadline is ctx with its deadline brought forward by the reserve.
func workDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, d.Add(-min(stopReserve, time.Until(d)/5)))
}

// drain drains the NATS connection: what was published is sent, replies
// awaited, then it closes.
func (a *App) drain(ctx context.Context) {
	if a.NC == nil {
		return
	}
	_ = a.NC.Drain()
	for a.NC.IsDraining() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	a.NC.Close()
}

// cutWork ends the work still in flight at the stop's deadline (see
// Close): the attempt log is flushed of what finished, the connection
// closed, so that no message is settled from here on, and the webhook
// requests in flight cancelled.
func (a *App) cutWork(ctx context.Context) {
	requests := int64(0)
	if a.cutter != nil {
		requests = a.cutter.inFlight.Load()
	}
	a.log.Warn("stop deadline reached: cutting the work in flight; its messages stay unacknowledged and come back after their AckWait, with no attempt spent",
		"webhook_requests", requests)
	if a.Attempts != nil {
		fctx, cancel := context.WithTimeout(ctx, stopReserve/4)
		a.Attempts.Flush(fctx)
		cancel()
	}
	if a.NC != nil {
		a.NC.Close()
	}
	a.cutNow()
}

// cutTransport lets Close cut the webhook requests in flight. A stop does
// not cancel the delivery handlers' contexts (natsx.Consume), so that the
// work in flight finishes and is settled; a receiver that never answers
// would then hold the stop for the whole attempt timeout, past the stop's
// deadline.
type cutTransport struct {
	base     http.RoundTripper
	cut      context.Context
	inFlight atomic.Int64
}

func (t *cutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(t.cut, cancel)
	t.inFlight.Add(1)
	done := sync.OnceFunc(func() {
		stop()
		cancel()
		t.inFlight.Add(-1)
	})
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		done()
		return nil, err
	}
	// The answer is read after RoundTrip returns: a body that never ends
	// is cut too.
	resp.Body = &cutBody{ReadCloser: resp.Body, done: done}
	return resp, nil
}

// cutBody ends its request's hold on the cut when closed.
type cutBody struct {
	io.ReadCloser
	done func()
}

func (b *cutBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

// observe registers the gauges read at each scrape: the consumers' pending
// and ack-pending counts, and the subscription cache's size.
func (a *App) observe() error {
	m := a.Tel.Meter()
	pending, err := m.Int64ObservableGauge("scanwire.consumer.pending", metric.WithDescription("messages not yet delivered to the consumer"))
	if err != nil {
		return err
	}
	ackPending, err := m.Int64ObservableGauge("scanwire.consumer.ack_pending", metric.WithDescription("messages delivered and not yet acked (deferred jobs included)"))
	if err != nil {
		return err
	}
	cacheSize, err := m.Int64ObservableGauge("scanwire.subscriptions.cached", metric.WithDescription("valid subscriptions in the cache"))
	if err != nil {
		return err
	}
	lanes, err := m.Int64ObservableGauge("scanwire.delivery.lanes", metric.WithDescription("subscriptions whose jobs have a consumer of their own (a lane)"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		o.ObserveInt64(cacheSize, int64(a.Subs.Len()))
		observe := func(stream, consumer string, attrs ...attribute.KeyValue) {
			c, err := a.JS.Consumer(ctx, stream, consumer)
			if err != nil {
				return // not created (yet) by any replica
			}
			info, err := c.Info(ctx)
			if err != nil {
				return
			}
			set := metric.WithAttributes(append(attrs, attribute.String("stream", stream), attribute.String("consumer", consumer))...)
			o.ObserveInt64(pending, int64(info.NumPending), set)
			o.ObserveInt64(ackPending, int64(info.NumAckPending), set)
		}
		observe(natsx.StreamScanEvents, fanout.ConsumerName(a.cfg.Fanout))
		observe(natsx.StreamDeliveries, delivery.ConsumerName(a.cfg.Delivery))
		// Each lane's backlog, named by its subscription.
		if keys, err := a.lanes.ListKeys(ctx); err == nil {
			n := 0
			for key := range keys.Keys() {
				n++
				observe(natsx.StreamDeliveries, delivery.LaneConsumer(key), attribute.String("lane", key))
			}
			o.ObserveInt64(lanes, int64(n))
		}
		return nil
	}, pending, ackPending, cacheSize, lanes)
	return err
}
