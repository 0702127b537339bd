package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/services/gateway"
)

// connect starts the embedded server (unless NATSURL names an external
// one), connects, and creates the streams and buckets.
//
// With API keys, NATS is closed (natsauth): the embedded server with the
// service users and the auth callout, this process answering the callout
// and connecting as the pipeline's user. With an external NATS this
// process connects as its services' user (natsauth.ForServices) when its
// password is set, and answers the callout when it can; a user that may
// not create the streams finds them made (Topology.Check).
func (a *App) connect(ctx context.Context) error {
	url := a.cfg.NATSURL
	secured := !a.cfg.Gateway.Keys.Empty()
	creds := a.cfg.NATSAuth
	user := natsauth.ForServices(a.cfg.Services)
	if url == "" {
		scfg := a.cfg.Server
		scfg.Lock = a.lock // released by Close, once the server is down
		scfg.Account = natsauth.Account
		if secured && !loopback(scfg.Listen) && scfg.TLSCert == "" {
			a.log.Warn("the embedded NATS server listens beyond loopback without TLS: API keys and events cross the network in clear text; give it --nats-tls-cert and --nats-tls-key",
				"listen", scfg.Listen)
		}
		if secured {
			creds = creds.Complete()
			scfg.Conf = natsauth.ServerConf(creds)
			scfg.RouteUser, scfg.RoutePassword = natsauth.RouteUser, creds.Route
			// The process holds every credential of its own server: it
			// connects as the whole pipeline.
			user = natsauth.UserPipeline
		} else {
			scfg.Conf = natsauth.OpenServerConf()
			a.log.Warn("no API keys: the embedded NATS server lets in anyone who connects, and listens on loopback only; set SCANWIRE_API_KEYS or SCANWIRE_ADMIN_KEY to close it",
				"listen", scfg.Listen)
		}
		ns, err := natsx.StartServer(scfg, a.log)
		if err != nil {
			return err
		}
		a.Server = ns
		url = ns.ClientURL()
		a.log.Info("embedded NATS started", "url", url, "data", a.cfg.Server.DataDir, "closed", secured)
	}
	if secured && creds.Passwords[natsauth.UserAuth] != "" && creds.Issuer != nil {
		if err := a.answerCallout(url, creds); err != nil {
			return err
		}
	}
	opts := a.tlsOptions()
	if pw := creds.Passwords[user]; pw != "" {
		opts = append(opts, nats.UserInfo(user, pw), nats.CustomInboxPrefix(natsauth.InboxPrefix(user)))
	} else {
		user = "" // as the URL says
	}
	nc, err := natsx.Connect(url, "scanwire", a.Server, a.log, opts...)
	if errors.Is(err, nats.ErrAuthorization) {
		want := natsauth.ForServices(a.cfg.Services)
		return fmt.Errorf("%w: this NATS is closed; this process connects as %s with the password in %s (`scanwire secrets nats` makes a set; the server's nats.conf must have the same)",
			err, want, natsauth.EnvPassword(want))
	}
	if err != nil {
		return err
	}
	a.NC = nc
	if a.JS, err = natsx.JetStream(nc); err != nil {
		return err
	}
	return a.setUp(ctx, user == "" || natsauth.CanSetUp(user))
}

// clusterWait is how long a start waits for a JetStream cluster to elect
// its leader and gather the servers its replicas need.
const clusterWait = time.Minute

// setUp creates or updates the streams and buckets (create), or finds them
// made. A cluster that is still forming (no leader yet, or fewer servers
// than the replicas, as when its servers start one by one), or streams
// that the gateway has not made yet, are waited for, up to clusterWait;
// then too few servers is an error naming both numbers.
func (a *App) setUp(ctx context.Context, create bool) error {
	deadline := time.Now().Add(clusterWait)
	for waited := false; ; waited = true {
		// Each attempt has a deadline of its own: a request sent before
		// the cluster has a leader is never answered.
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		if create {
			err = a.cfg.Topology.Ensure(actx, a.JS)
		} else {
			err = a.cfg.Topology.Check(actx, a.JS)
		}
		cancel()
		switch {
		case err == nil:
			if waited {
				a.log.Info("JetStream cluster ready", "servers", a.jetStreamServers(), "replicas", a.cfg.Topology.Replicas)
			}
			return nil
		case !natsx.TooFewServers(err) && !natsx.NotReady(err) && !errors.Is(err, natsx.ErrNotSetUp), time.Now().After(deadline), ctx.Err() != nil,
			natsx.NotClustered(err):
			if natsx.TooFewServers(err) {
				return fmt.Errorf("--replicas %d: the NATS cluster has %d server(s) with JetStream, fewer than the replicas (start more servers, or lower --replicas): %w",
					a.cfg.Topology.Replicas, a.jetStreamServers(), err)
			}
			if create {
				return fmt.Errorf("create streams: %w", err)
			}
			return err
		case !waited:
			a.log.Info("waiting for the JetStream cluster", "replicas", a.cfg.Topology.Replicas, "servers", a.jetStreamServers(), "err", err)
		default:
			a.log.Debug("still waiting for the JetStream cluster", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// jetStreamServers is how many servers this process sees in its JetStream
// cluster: its embedded server's peers, or the servers its connection has
// learned of.
func (a *App) jetStreamServers() int {
	if a.Server != nil {
		if !a.Server.JetStreamIsClustered() {
			return 1
		}
		return max(len(a.Server.JetStreamClusterPeers()), 1)
	}
	return len(a.NC.DiscoveredServers()) + 1
}

// answerCallout connects as the callout's user and answers the server's
// auth callout from the API keys.
func (a *App) answerCallout(url string, creds natsauth.Credentials) error {
	nc, err := natsx.Connect(url, "scanwire-auth", a.Server, a.log,
		append(a.tlsOptions(), nats.UserInfo(natsauth.UserAuth, creds.Passwords[natsauth.UserAuth]))...)
	if err != nil {
		return fmt.Errorf("auth callout: %w", err)
	}
	a.calloutNC = nc
	a.callout, err = natsauth.StartCallout(nc, creds.Issuer, a.cfg.Gateway.Keys, a.cfg.NATSLifetime, a.log)
	return err
}

// tlsOptions verifies an external NATS's certificate with NATSCA.
func (a *App) tlsOptions() []nats.Option {
	if a.cfg.NATSCA == "" || a.Server != nil {
		return nil
	}
	return []nats.Option{nats.RootCAs(a.cfg.NATSCA)}
}

// SetKeys replaces the API keys that the gateway's requests and the NATS
// connections are judged by: a key removed is refused at its next request
// or connection. A process started without keys stays open: keys close
// its NATS only from the start.
func (a *App) SetKeys(k gateway.Keys) {
	if a.callout != nil {
		a.callout.SetKeys(k)
	}
	if a.gateway != nil {
		a.gateway.SetKeys(k)
	}
}

// loopback reports whether host:port names a loopback address only.
func loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
