package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/secrets"
)

// runFlags are the flags of `run` (and `demo`, which runs the same pipeline).
type runFlags struct {
	data          string
	natsListen    string
	httpAddr      string
	services      string
	syncInterval  time.Duration
	fanoutWork    int
	deliveryWork  int
	timeout       time.Duration
	autoDisable   time.Duration
	replicas      int
	serverName    string
	clusterListen string
	routes        []string
	natsTLSCert   string
	natsTLSKey    string
	tlsCert       string
	tlsKey        string
}

// maxTimeout bounds --timeout: a job's AckWait is its attempt's timeout
// and some seconds, and a copy of it stored twice must fall within
// natsx.CopyDedupeWindow.
const maxTimeout = 2 * time.Minute

func (f *runFlags) register(cmd *cobra.Command, defaultData, defaultListen, defaultHTTP string) {
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", defaultData, "directory of the embedded NATS server's JetStream store")
	fl.StringVar(&f.natsListen, "nats-listen", defaultListen, "host:port where the embedded NATS server accepts clients (port 0 picks one)")
	fl.StringVar(&f.httpAddr, "http", defaultHTTP, "host:port of the HTTP gateway; a process that runs fan-out or delivery without the gateway serves /healthz, /readyz and /metrics there when it is given")
	fl.StringVar(&f.services, "services", strings.Join(app.AllServices, ","), "services to run in this process (a replica of a scaled deployment runs a subset)")
	fl.DurationVar(&f.syncInterval, "sync-interval", 0, "fsync interval of the embedded server; 0 fsyncs every write (no acknowledged event is lost on power failure)")
	fl.IntVar(&f.fanoutWork, "fanout-workers", 256, "events fanned out at once")
	fl.IntVar(&f.deliveryWork, "delivery-workers", 256, "webhook requests in flight at once (each endpoint gets at most a quarter)")
	fl.DurationVar(&f.timeout, "timeout", 15*time.Second, "timeout of one webhook attempt")
	fl.IntVar(&f.replicas, "replicas", 0, "replicas of every stream and bucket (env SCANWIRE_REPLICAS): 3 on a three-node cluster; existing ones are changed to it at start; 0 keeps theirs and makes new ones with 1")
	fl.StringVar(&f.serverName, "server-name", "", "name of the embedded NATS server, unique in its cluster (with --cluster-listen)")
	fl.StringVar(&f.clusterListen, "cluster-listen", "", "host:port where the embedded NATS server takes routes from the other servers of its JetStream cluster, e.g. 0.0.0.0:6222")
	fl.StringSliceVar(&f.routes, "routes", nil, "cluster addresses (host:port) of the other embedded servers, e.g. node2:6222,node3:6222")
	fl.StringVar(&f.natsTLSCert, "nats-tls-cert", "", "PEM certificate of the embedded NATS server: it then takes TLS clients only (with --nats-tls-key)")
	fl.StringVar(&f.natsTLSKey, "nats-tls-key", "", "PEM private key of --nats-tls-cert")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate of the HTTP gateway: it then serves HTTPS only (with --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fl.DurationVar(&f.autoDisable, "auto-disable-after", 5*24*time.Hour, "disable a subscription whose deliveries have kept failing this long")
}

func (f *runFlags) config(cmd *cobra.Command, g *globals) (app.Config, error) {
	log, err := g.logger(os.Stderr)
	if err != nil {
		return app.Config{}, err
	}
	var services []string
	for _, s := range strings.Split(f.services, ",") {
		if s = strings.TrimSpace(s); s != "" {
			services = append(services, s)
		}
	}
	if f.timeout <= 0 || f.timeout > maxTimeout {
		return app.Config{}, fmt.Errorf("--timeout: must be positive and at most %s, got %s", maxTimeout, f.timeout)
	}
	if f.autoDisable <= 0 {
		return app.Config{}, fmt.Errorf("--auto-disable-after: must be positive, got %s", f.autoDisable)
	}
	if v := os.Getenv("SCANWIRE_REPLICAS"); v != "" && !cmd.Flags().Changed("replicas") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return app.Config{}, fmt.Errorf("SCANWIRE_REPLICAS: %q is not a number of replicas (1, or 3 on a three-node cluster; 0 keeps what the streams have)", v)
		}
		f.replicas = n
	}
	for _, w := range []struct {
		flag string
		n    int
	}{{"--fanout-workers", f.fanoutWork}, {"--delivery-workers", f.deliveryWork}} {
		if w.n < 1 {
			return app.Config{}, fmt.Errorf("%s: must be at least 1, got %d", w.flag, w.n)
		}
	}
	cfg := app.Config{
		NATSURL: pipelineNATS(cmd, g, log),
		Server: natsx.ServerConfig{DataDir: f.data, Listen: f.natsListen, SyncInterval: f.syncInterval,
			Name: f.serverName, ClusterListen: f.clusterListen, Routes: f.routes,
			TLSCert: f.natsTLSCert, TLSKey: f.natsTLSKey},
		NATSCA:   g.natsCA,
		HTTPCert: f.tlsCert,
		HTTPKey:  f.tlsKey,
		Topology: natsx.DefaultTopology(),
		HTTPAddr: f.httpAddr,
		Services: services,
		Log:      log,

		AllowPrivateTargets: g.allowPrivate,
	}
	if cfg.Gateway.Keys, err = loadKeys(); err != nil {
		return app.Config{}, err
	}
	if cfg.NATSAuth, err = natsauth.CredentialsFromEnv(os.Getenv); err != nil {
		return app.Config{}, err
	}
	if cfg.Secrets, err = secrets.ParseKeyring(os.Getenv(secrets.EnvKey)); err != nil {
		return app.Config{}, err
	}
	cfg.Topology.Replicas = f.replicas
	if !slices.Contains(services, app.ServiceGateway) && !cmd.Flags().Changed("http") {
		cfg.HTTPAddr = "" // its default is the gateway's: no probes port unless asked for
	}
	cfg.Fanout.Workers = f.fanoutWork
	cfg.Delivery.Workers = f.deliveryWork
	cfg.Delivery.Timeout = f.timeout
	cfg.Delivery.AutoDisableAfter = f.autoDisable
	return cfg, cfg.Validate()
}

func newRunCmd(g *globals) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the pipeline: embedded NATS, fan-out, delivery and the HTTP gateway",
		Long: `Run starts the whole pipeline in one process. Without --nats it starts an
embedded NATS JetStream server that keeps its data under --data and accepts
clients (scanners, 'scanwire publish', 'scanwire subs') at --nats-listen.

With --nats it joins an external NATS instead; --services then picks the
services of this replica, e.g. two processes with --services fanout share the
fan-out work. SCANWIRE_NATS, which points the client commands at a pipeline,
does not count here: only --nats given on the command line does.

One process per --data: a second one on the same directory fails at once.
Ctrl-C stops it cleanly within 10 s: work in flight finishes, the rest is
handed back to JetStream and resumes at the next start; a webhook request
still unanswered at the deadline is cut, and its job comes back without
having spent an attempt.`,
		Example: `  scanwire run
  scanwire run --data /var/lib/scanwire --http :8080
  scanwire run --nats nats://nats:4222 --services fanout`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(cmd, g)
			if err != nil {
				return err
			}
			if os.Getenv(envKeysFile) != "" {
				return runUntilDone(cmd.Context(), cfg, reloadKeysOnHUP(cfg.Log))
			}
			return runUntilDone(cmd.Context(), cfg, nil)
		},
	}
	f.register(cmd, defaultDataDir(), "127.0.0.1:4222", "127.0.0.1:8080")
	return cmd
}

// pipelineNATS is the external NATS that run and demo join: only one given
// with --nats. SCANWIRE_NATS is exported for the client commands; were run
// to obey it too, a shell set up for them would make run skip its embedded
// server and fail to connect, without saying why.
func pipelineNATS(cmd *cobra.Command, g *globals, log *slog.Logger) string {
	if cmd.Flags().Changed("nats") {
		return g.natsURL
	}
	if v := os.Getenv("SCANWIRE_NATS"); v != "" {
		log.Info("SCANWIRE_NATS is for the client commands; starting the embedded NATS server (give --nats to join an external one)",
			"SCANWIRE_NATS", natsx.RedactURL(v))
	}
	return ""
}

// runUntilDone starts the pipeline and runs until ctx ends or a service
// fails; then it shuts down under one deadline. With started set, the
// pipeline runs while started does instead.
func runUntilDone(ctx context.Context, cfg app.Config, started func(context.Context, *app.App) error) error {
	a, err := app.Start(ctx, cfg)
	if err != nil {
		return err
	}
	cfg.Log.Info("scanwire running", "nats", natsx.RedactURL(a.ClientURL()), "services", cfg.Services)
	var runErr error
	if started != nil {
		runErr = started(ctx, a)
	} else {
		select {
		case <-ctx.Done():
		case runErr = <-a.Err():
		}
	}
	cfg.Log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Close(sctx); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}
