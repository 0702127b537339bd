package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/natsx"
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

// connect opens a client connection named name for one command.
func (g *globals) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	log, err := g.logger(io.Discard)
	if err != nil {
		return nil, nil, err
	}
	nc, err := natsx.Connect(g.clientURL(), name, nil, log)
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

// subsStore connects to NATS and returns the subscription store.
func (g *globals) subsStore(ctx context.Context) (*subscriptions.Store, *nats.Conn, error) {
	nc, js, err := g.connect(cliConnName)
	if err != nil {
		return nil, nil, err
	}
	kv, err := js.KeyValue(ctx, natsx.BucketSubscriptions)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		nc.Close()
		return nil, nil, fmt.Errorf("bucket %q not found at %s: start 'scanwire run' once to create it", natsx.BucketSubscriptions, g.clientURL())
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return subscriptions.NewWritingStore(kv, &egress.Policy{AllowPrivate: g.allowPrivate}), nc, nil
}

// subscription connects and finds the tenant of a subscription id, for
// the commands that take only the id. done closes the connection.
func (g *globals) subscription(ctx context.Context, id string) (*subscriptions.Store, jetstream.JetStream, string, func(), error) {
	store, nc, err := g.subsStore(ctx)
	if err != nil {
		return nil, nil, "", nil, err
	}
	tenant, err := store.TenantOf(ctx, id)
	if err != nil {
		nc.Close()
		return nil, nil, "", nil, err
	}
	js, err := natsx.JetStream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, "", nil, err
	}
	return store, js, tenant, nc.Close, nil
}

// deadLetters connects and returns the dead-letter queue.
func (g *globals) deadLetters() (*dlq.Store, *nats.Conn, error) {
	nc, js, err := g.connect(cliConnName)
	if err != nil {
		return nil, nil, err
	}
	return dlq.New(js), nc, nil
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
	return tenants.NewStore(kv), nc, nil
}
