// Package app wires scanwire's parts into one running process: the NATS
// server or connection, the streams, the subscription cache and the
// services. `scanwire run`, `scanwire demo` and the end-to-end tests all
// start the pipeline through it, so what is tested is what runs.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
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
	"github.com/scanwire/scanwire/internal/natsx"
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
	// writes is whether this process's writes are stored, for /readyz.
	writes natsx.Writes
	http   *http.Server
	httpLn net.Listener
	// announce answers clients that ask what egress policy this process
	// applies (subscriptions.Announce).
	announce micro.Service
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
	if err := a.start(ctx); err != nil {
		a.Close(context.Background())
		return nil, err
	}
	return a, nil
}

// start runs Start's steps in order; the caller closes a on an error.
func (a *App) start(ctx context.Context) error {
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
	for _, ready := range []<-chan struct{}{a.Subs.Ready(), a.TenantsC.Ready()} {
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

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

// connect starts the embedded server (unless NATSURL names an external
// one), connects, and creates the streams and buckets.
func (a *App) connect(ctx context.Context) error {
	url := a.cfg.NATSURL
	if url == "" {
		ns, err := natsx.StartServer(a.cfg.Server, a.log)
		if err != nil {
			return err
		}
		a.Server = ns
		url = ns.ClientURL()
		a.log.Info("embedded NATS started", "url", url, "data", a.cfg.Server.DataDir)
	}
	nc, err := natsx.Connect(url, "scanwire", a.Server, a.log)
	if err != nil {
		return err
	}
	a.NC = nc
	if a.JS, err = natsx.JetStream(nc); err != nil {
		return err
	}
	if err := a.cfg.Topology.Ensure(ctx, a.JS); err != nil {
		return fmt.Errorf("create streams: %w", err)
	}
	return nil
}

// openStores opens the buckets and builds the stores and caches over them.
func (a *App) openStores(ctx context.Context) error {
	kv := map[string]jetstream.KeyValue{}
	for _, b := range []string{natsx.BucketSubscriptions, natsx.BucketLimits, natsx.BucketTenants, natsx.BucketCallbacks} {
		bucket, err := a.JS.KeyValue(ctx, b)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", b, err)
		}
		kv[b] = bucket
	}
	a.Egress = &egress.Policy{AllowPrivate: a.cfg.AllowPrivateTargets, Resolver: a.cfg.Resolver}
	a.Store = subscriptions.NewStore(kv[natsx.BucketSubscriptions], a.Egress)
	a.Subs = subscriptions.NewCache(kv[natsx.BucketSubscriptions], a.Egress, a.log)
	a.Attempts = attempts.NewLog(a.JS, a.log)
	a.DLQ = dlq.New(a.JS, a.Store)
	a.Limits = limits.New(kv[natsx.BucketLimits])
	a.Tenants = tenants.NewStore(kv[natsx.BucketTenants])
	a.TenantsC = tenants.NewCache(kv[natsx.BucketTenants], a.log)
	a.callbacks = callbacks.New(kv[natsx.BucketCallbacks], a.JS)
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
		d := delivery.New(a.JS, delivery.Deps{Subs: a.Subs, Store: a.Store, Tenants: a.Tenants, Client: client,
			Attempts: a.Attempts, Telemetry: a.Tel, Writes: &a.writes}, a.log, a.cfg.Delivery)
		a.spawn(name, func() error { return d.Run(runCtx) })
	case ServiceGateway:
		return a.startGateway()
	}
	return nil
}

// startGateway listens on HTTPAddr and serves the API; its readiness
// checks the consumers of the services this process runs.
func (a *App) startGateway() error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http %s: %w", a.cfg.HTTPAddr, err)
	}
	a.httpLn = ln
	gcfg := a.cfg.Gateway
	gcfg.Consumers = map[string]string{}
	for stream, consumer := range a.consumers() {
		gcfg.Consumers[consumer] = stream
	}
	if gcfg.Keys.Empty() {
		a.log.Warn("no API keys configured: the gateway refuses every /v1 call; set SCANWIRE_ADMIN_KEY or SCANWIRE_API_KEYS")
	}
	g := gateway.New(a.JS, gateway.Deps{Store: a.Store, Attempts: a.Attempts, DLQ: a.DLQ, Limits: a.Limits,
		Tenants: a.Tenants, Telemetry: a.Tel, Writes: &a.writes, Egress: a.Egress}, a.log, gcfg)
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

// Close stops the services (in-flight work finishes, buffered work is
// handed back to JetStream), drains the NATS connection and stops the
// embedded server. It gives up waiting when ctx ends: whatever was not
// acked by then is redelivered at the next start.
func (a *App) Close(ctx context.Context) error {
	if a.announce != nil {
		_ = a.announce.Stop()
	}
	if a.cancel != nil {
		a.cancel()
	}
	if a.http != nil {
		_ = a.http.Shutdown(ctx)
	}
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("services did not stop in time: %w", ctx.Err())
	}
	if a.Attempts != nil {
		a.Attempts.Flush(ctx) // what in-flight work recorded after the log stopped
	}
	if a.NC != nil {
		_ = a.NC.Drain()
		for a.NC.IsDraining() && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		a.NC.Close()
	}
	if a.Server != nil {
		a.Server.Shutdown()
		a.Server.WaitForShutdown()
	}
	if a.ownTel {
		_ = a.Tel.Shutdown(ctx)
	}
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
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		o.ObserveInt64(cacheSize, int64(a.Subs.Len()))
		for stream, consumer := range map[string]string{
			natsx.StreamScanEvents: fanout.ConsumerName(a.cfg.Fanout), natsx.StreamDeliveries: delivery.ConsumerName(a.cfg.Delivery),
		} {
			c, err := a.JS.Consumer(ctx, stream, consumer)
			if err != nil {
				continue // not created (yet) by any replica
			}
			info, err := c.Info(ctx)
			if err != nil {
				continue
			}
			attrs := metric.WithAttributes(attribute.String("stream", stream), attribute.String("consumer", consumer))
			o.ObserveInt64(pending, int64(info.NumPending), attrs)
			o.ObserveInt64(ackPending, int64(info.NumAckPending), attrs)
		}
		return nil
	}, pending, ackPending, cacheSize)
	return err
}
