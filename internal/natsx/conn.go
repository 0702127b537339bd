package natsx

import (
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/egress"
)

// Connect opens a client connection that reconnects forever: a NATS restart
// must pause scanwire, not end it. With ns set, the connection is in-process
// and url is ignored. extra options follow scanwire's (credentials, an
// inbox prefix).
func Connect(url, name string, ns *server.Server, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			// Not ConnectedUrlRedacted: it keeps a user, which is all a token is.
			log.Info("nats reconnected", "url", RedactURL(c.ConnectedUrl()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	if ns != nil {
		opts = append(opts, nats.InProcessServer(ns))
		// In process there is no wire to protect, and the server asks no
		// TLS of such a connection; a tls:// URL would make the client
		// insist on it.
		url = strings.Replace(url, "tls://", "nats://", 1)
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, connectError(url, err)
	}
	return nc, nil
}

// RedactURL returns a NATS URL, or a comma-separated list of them as
// --nats takes, with each one's user, password or token replaced by
// REDACTED (egress.RedactURL): "nats://u:pw@h:4222" becomes
// "nats://REDACTED@h:4222". Every NATS URL that scanwire prints, in an
// error or a log, goes through it.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = egress.RedactURL(p)
	}
	return strings.Join(parts, ",")
}

// connectError names the URL that could not be reached, without its
// credentials. nats.Connect's own parse errors quote the URL whole, and
// their detail may quote a piece of the password (`invalid port ":pw"`),
// so for a URL with credentials the detail is dropped.
func connectError(url string, err error) error {
	shown := RedactURL(url)
	var ue *neturl.Error
	if errors.As(err, &ue) {
		err = ue.Err
		if shown != url {
			err = errors.New("not a valid URL (the parser's words are not shown, as they may quote the password)")
		}
	}
	return fmt.Errorf("connect to nats %s: %w", shown, err)
}

// JetStream wraps nc. Async publishes that find the window full wait up to
// a second for room instead of failing at once.
func JetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}
