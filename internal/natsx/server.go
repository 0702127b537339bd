// Package natsx holds scanwire's NATS plumbing: the embedded JetStream
// server, client connections, the streams and buckets of docs/design.md,
// the consume loop that settles every message from its handler's Outcome
// (consume.go, outcome.go), and the readers of whole streams (ReadAll)
// and buckets (Watch).
package natsx

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerConfig configures the embedded nats-server.
type ServerConfig struct {
	// DataDir is where JetStream keeps its store; it survives restarts.
	DataDir string
	// Listen is host:port for NATS clients. Port 0 picks a free port.
	Listen string
	// SyncInterval is how often the store is fsynced. Zero means fsync on
	// every write (the default): acknowledged writes survive a power cut.
	// The server's own default of two minutes lost acknowledged writes in
	// Jepsen's NATS 2.12.1 analysis, so it must be asked for explicitly.
	SyncInterval time.Duration
	// Conf is server configuration in the server's own syntax (or JSON),
	// read before the settings above, which win: accounts, users and
	// authorization (natsauth.ServerConf).
	Conf string
	// Account is the account whose JetStream store scanwire uses, when
	// Conf defines accounts: a store that an earlier release kept in the
	// server's global account is moved to it before the server starts
	// (moveGlobalStore).
	Account string
	// Name names this server; in a cluster each server's must differ.
	// Empty: "scanwire".
	Name string
	// ClusterListen is host:port where this server takes routes from the
	// other servers of its JetStream cluster (port 0 picks one); empty:
	// it runs alone.
	ClusterListen string
	// Routes are the other servers' cluster addresses (host:port, or
	// nats://host:port), for ClusterListen.
	Routes []string
	// RouteUser and RoutePassword, when set, are what a server must give
	// to route to this one, and what this one gives to the others.
	RouteUser, RoutePassword string
	// TLSCert and TLSKey, when set, are the PEM files of the certificate
	// the server presents to clients: it then takes TLS connections only
	// (in-process ones, which never leave the process, excepted).
	TLSCert, TLSKey string
	// Lock is DataDir's lock when the caller has taken it (LockDataDir)
	// and releases it itself, after the server has shut down: a process
	// that may start a server on the same directory again must know when
	// the lock is free. Nil: StartServer takes the lock and releases it
	// once the server has shut down.
	Lock *DataDirLock
}

// StartServer starts an embedded nats-server with JetStream and waits until
// it accepts clients. The caller shuts it down with Shutdown and
// WaitForShutdown.
//
// One server per data directory: unless cfg.Lock is given, StartServer
// locks DataDir before anything else (LockDataDir) and fails at once with
// a *DataDirInUseError when another process holds it; the lock is released
// once the server has shut down.
func StartServer(cfg ServerConfig, log *slog.Logger) (*server.Server, error) {
	if cfg.Lock != nil {
		return startServer(cfg, log)
	}
	lock, err := LockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ns, err := startServer(cfg, log)
	if err != nil {
		_ = lock.Unlock()
		return nil, err
	}
	go func() {
		ns.WaitForShutdown()
		_ = lock.Unlock()
	}()
	return ns, nil
}

func startServer(cfg ServerConfig, log *slog.Logger) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w (want host:port, e.g. 127.0.0.1:4222)", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("nats listen address %q: port must be 0-65535", cfg.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{}
	if cfg.Conf != "" {
		if err := opts.ProcessConfigString(cfg.Conf); err != nil {
			return nil, fmt.Errorf("embedded nats configuration: %w", err)
		}
	}
	if cfg.Account != "" {
		if err := moveGlobalStore(cfg.DataDir, cfg.Account); err != nil {
			return nil, err
		}
	}
	opts.ServerName = cmp.Or(cfg.Name, "scanwire")
	opts.Host, opts.Port = host, port
	if err := clusterOptions(opts, cfg); err != nil {
		return nil, err
	}
	opts.JetStream = true
	opts.StoreDir = filepath.Join(cfg.DataDir, "jetstream")
	opts.NoSigs = true
	// Above the streams' 2 MiB cap (MaxMsgSize), so that an event up to
	// that size reaches the stream and fan-out rejects it with a reason,
	// rather than the publish bouncing off the server.
	opts.MaxPayload = 4 << 20
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey})
		if err != nil {
			return nil, fmt.Errorf("--nats-tls-cert/--nats-tls-key: %w", err)
		}
		opts.TLSConfig, opts.TLSTimeout = tc, 2
	}
	if cfg.SyncInterval <= 0 {
		opts.SyncAlways = true
	} else {
		opts.SyncInterval = cfg.SyncInterval
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.SetLoggerV2(&serverLog{log: log.With("component", "nats-server")}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after 15s (is %s already in use?)", cfg.Listen)
	}
	return ns, nil
}

// ClusterName is the name of the JetStream cluster that embedded servers
// form.
const ClusterName = "scanwire"

// clusterOptions sets up the routes of a server that is one of a cluster.
func clusterOptions(opts *server.Options, cfg ServerConfig) error {
	if cfg.ClusterListen == "" {
		if len(cfg.Routes) > 0 {
			return errors.New("--routes: give --cluster-listen too, the address where this server takes routes")
		}
		return nil
	}
	if cfg.Name == "" {
		return errors.New("--cluster-listen: give --server-name too; each server of a cluster needs a name of its own")
	}
	host, portStr, err := net.SplitHostPort(cfg.ClusterListen)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port < 0 || port > 65535 {
		return fmt.Errorf("--cluster-listen %q: want host:port, e.g. 0.0.0.0:6222", cfg.ClusterListen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts.Cluster = server.ClusterOpts{Name: ClusterName, Host: host, Port: port, Username: cfg.RouteUser, Password: cfg.RoutePassword}
	opts.Routes = nil
	for _, r := range cfg.Routes {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if !strings.Contains(r, "://") {
			r = "nats://" + r
		}
		// Each parsed here: the server's own RoutesFromStr keeps a route
		// it cannot parse as nil, for the server to trip on later.
		u, err := url.Parse(r)
		if err != nil || u.Hostname() == "" || u.Port() == "" {
			return fmt.Errorf("--routes %q: want host:port of each other server, separated by commas", RedactURL(r))
		}
		if cfg.RouteUser != "" {
			u.User = url.UserPassword(cfg.RouteUser, cfg.RoutePassword)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// moveGlobalStore moves the JetStream store of the server's global
// account, where a server without accounts (an earlier release) kept
// scanwire's streams, to account's, so that they are account's once the
// server has accounts. It does nothing when account has a store already,
// or there is none to move. The data directory must be locked.
func moveGlobalStore(dataDir, account string) error {
	base := filepath.Join(dataDir, "jetstream", server.JetStreamStoreDir)
	from, to := filepath.Join(base, server.DEFAULT_GLOBAL_ACCOUNT), filepath.Join(base, account)
	if _, err := os.Stat(to); err == nil {
		return nil
	}
	if _, err := os.Stat(from); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("move the store of the global account to account %s: %w", account, err)
	}
	return nil
}

// serverLog sends the embedded server's notices to slog. Debug and trace
// output stays off: it is the server's, not ours.
type serverLog struct{ log *slog.Logger }

func (l *serverLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLog) Debugf(format string, v ...any)  {}
func (l *serverLog) Tracef(format string, v ...any)  {}
