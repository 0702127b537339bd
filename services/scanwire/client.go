package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/secrets"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/tenants"
)

// The client commands' connection names, as the NATS server lists them.
const (
	cliConnName     = "scanwire-cli"
	publishConnName = "scanwire-publish"
)

// clientURL is where the client commands (all but run and demo) find NATS.
func (g *globals) clientURL() string {
	if g.natsURL != "" {
		return g.natsURL
	}
	return "nats://127.0.0.1:4222"
}

// operator is how the client commands connect: as the operator, with the
// admin key (SCANWIRE_ADMIN_KEY) as user admin, which a pipeline with keys
// lets do everything (natsauth), and over TLS verified with --nats-ca when
// it is given. Credentials in the --nats URL win; without either, the
// commands connect without credentials, as a pipeline without keys takes
// them.
func (g *globals) operator() []nats.Option {
	var opts []nats.Option
	if g.natsCA != "" {
		opts = append(opts, nats.RootCAs(g.natsCA))
	}
	if key := os.Getenv("SCANWIRE_ADMIN_KEY"); key != "" && !strings.Contains(g.clientURL(), "@") {
		opts = append(opts, nats.UserInfo(natsauth.UserOperator, key))
	}
	return opts
}

// connect opens a client connection named name for one command.
func (g *globals) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	log, err := g.logger(io.Discard)
	if err != nil {
		return nil, nil, err
	}
	nc, err := natsx.Connect(g.clientURL(), name, nil, log, g.operator()...)
	if errors.Is(err, nats.ErrAuthorization) {
		return nil, nil, fmt.Errorf("%w: this pipeline's NATS is closed with API keys; set SCANWIRE_ADMIN_KEY to its admin key (or give the credentials in --nats nats://admin:<key>@host:4222)", err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w (is 'scanwire run' running? set --nats)", err)
	}
	js, err := natsx.JetStream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// pipelineWait is how long a client command waits for the running
// pipeline to say what egress policy it applies.
const pipelineWait = 2 * time.Second

// policyNeed says what a command needs of the running pipeline's egress
// policy.
type policyNeed int

const (
	// policyNone: the command judges no URL (delete, attempts).
	policyNone policyNeed = iota
	// policyIfRunning: the command reads documents; with the policy they
	// are judged as the pipeline judges them, without it (no pipeline
	// answered) by schema and meaning alone, with a warning.
	policyIfRunning
	// policyRequired: the command writes a document, which must be what
	// the pipeline serves: no pipeline, no write.
	policyRequired
)

// subsClient is a connection to NATS with the subscription store, judged
// by the running pipeline's egress policy as the command needs.
type subsClient struct {
	store *subscriptions.Store
	nc    *nats.Conn
	js    jetstream.JetStream
	// pipeline is what the running pipeline said; nil when it was not
	// asked (policyNone) or did not answer (policyIfRunning).
	pipeline *subscriptions.Pipeline
}

// Close closes the connection.
func (c *subsClient) Close() { c.nc.Close() }

// refusePolicyFlag refuses --allow-private-targets on a client command:
// where webhooks may go is the running pipeline's decision, and a client
// that decided otherwise wrote subscriptions the pipeline ignores, or
// refused ones it serves.
func (g *globals) refusePolicyFlag() error {
	if !g.allowPrivate {
		return nil
	}
	return errors.New("--allow-private-targets is a flag of 'scanwire run': the running pipeline decides where webhooks may go, " +
		"and the client commands follow it; drop the flag here (restart 'scanwire run' with or without it to change the policy)")
}

// pipeline asks the processes of the running pipeline what they apply.
func (g *globals) pipeline(ctx context.Context, nc *nats.Conn) (*subscriptions.Pipeline, error) {
	p, err := subscriptions.AskPipeline(ctx, nc, pipelineWait)
	if errors.Is(err, subscriptions.ErrNoPipeline) {
		return nil, fmt.Errorf("%w at %s: the running pipeline decides where webhooks may go ('scanwire run', with "+
			"--allow-private-targets for local targets) and this command needs to know; start it, or point --nats at its NATS", err, natsx.RedactURL(g.clientURL()))
	}
	return p, err
}

// subsClient connects to NATS and returns the subscription store, judged
// by the running pipeline's egress policy as need says; warnings go to
// warn.
func (g *globals) subsClient(ctx context.Context, need policyNeed, warn io.Writer) (*subsClient, error) {
	if err := g.refusePolicyFlag(); err != nil {
		return nil, err
	}
	nc, js, err := g.connect(cliConnName)
	if err != nil {
		return nil, err
	}
	c := &subsClient{nc: nc, js: js}
	kv, err := js.KeyValue(ctx, natsx.BucketSubscriptions)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		nc.Close()
		return nil, fmt.Errorf("bucket %q not found at %s: start 'scanwire run' once to create it", natsx.BucketSubscriptions, natsx.RedactURL(g.clientURL()))
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	var policy subscriptions.URLPolicy // nil: schema and meaning alone
	if need != policyNone {
		c.pipeline, err = g.pipeline(ctx, nc)
		switch {
		case err == nil:
			policy = &egress.Policy{AllowPrivate: c.pipeline.AllowPrivateTargets}
		case need == policyIfRunning && errors.Is(err, subscriptions.ErrNoPipeline):
			fmt.Fprintf(warn, "warning: %v\nwarning: URLs are judged by schema alone here, not by the pipeline's egress policy\n", err)
		default:
			nc.Close()
			return nil, err
		}
	}
	if kv, err = sealed(kv); err != nil {
		nc.Close()
		return nil, err
	}
	c.store = subscriptions.NewStore(kv, policy)
	return c, nil
}

// subscription connects and finds the tenant of a subscription id, for
// the commands that take only the id and judge no URL. done closes the
// connection.
func (g *globals) subscription(ctx context.Context, id string) (*subscriptions.Store, jetstream.JetStream, string, func(), error) {
	c, tenant, err := g.subscriptionFor(ctx, id, policyNone, io.Discard)
	if err != nil {
		return nil, nil, "", nil, err
	}
	return c.store, c.js, tenant, c.Close, nil
}

// subscriptionFor connects as subsClient does and finds the tenant of a
// subscription id.
func (g *globals) subscriptionFor(ctx context.Context, id string, need policyNeed, warn io.Writer) (*subsClient, string, error) {
	c, err := g.subsClient(ctx, need, warn)
	if err != nil {
		return nil, "", err
	}
	tenant, err := c.store.TenantOf(ctx, id)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return c, tenant, nil
}

// deadLetters connects and returns the dead-letter queue. Its replays ask
// the subscription store, judged by the running pipeline's egress policy
// if one answers, whether a dead letter's subscription takes deliveries.
func (g *globals) deadLetters() (*dlq.Store, *nats.Conn, error) {
	// Replay judges no URL itself: a subscription the pipeline does not
	// serve is named whatever the warning would say.
	c, err := g.subsClient(context.Background(), policyIfRunning, io.Discard)
	if err != nil {
		return nil, nil, err
	}
	return dlq.New(c.js, c.store), c.nc, nil
}

// tenantStore connects and returns the store of tenant records.
func (g *globals) tenantStore(ctx context.Context) (*tenants.Store, *nats.Conn, error) {
	nc, js, err := g.connect(cliConnName)
	if err != nil {
		return nil, nil, err
	}
	kv, err := js.KeyValue(ctx, natsx.BucketTenants)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bucket %s: %w (start 'scanwire run' once to create it)", natsx.BucketTenants, err)
	}
	if kv, err = sealed(kv); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return tenants.NewStore(kv), nc, nil
}

// sealed is a bucket of documents with secrets as the client commands use
// it: sealed and opened with the keyring of SCANWIRE_SECRETS_KEY, as the
// pipeline does (secrets.Wrap).
func sealed(kv jetstream.KeyValue) (jetstream.KeyValue, error) {
	keyring, err := secrets.ParseKeyring(os.Getenv(secrets.EnvKey))
	if err != nil {
		return nil, err
	}
	return secrets.Wrap(kv, keyring, secrets.DefaultFields), nil
}
