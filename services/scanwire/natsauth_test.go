package main

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/secrets"
	"github.com/scanwire/scanwire/services/gateway"
)

// Issue 13.3: against a pipeline with keys, the client commands connect as
// the operator with SCANWIRE_ADMIN_KEY; without it they are refused, and
// say so. `secrets rekey` seals what the pipeline stored under a new key.
func TestCLIUsesTheOperatorCredential(t *testing.T) {
	const adminKey = "cli-admin-key-0123456789"
	oldKey, newKey := secrets.NewKey(), secrets.NewKey()
	keyring, err := secrets.ParseKeyring(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	a := startApp(t, app.Config{Services: []string{app.ServiceFanout}, Secrets: keyring,
		Gateway: gateway.Config{Keys: gateway.Keys{Admin: adminKey}}, AllowPrivateTargets: true})
	ctx := context.Background()
	url := a.ClientURL()

	t.Setenv("SCANWIRE_ADMIN_KEY", "")
	if out, err := runCLI(t, ctx, "subs", "list", "--nats", url); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Errorf("without the admin key: %v %s", err, out)
	}
	t.Setenv("SCANWIRE_ADMIN_KEY", adminKey)
	t.Setenv(secrets.EnvKey, oldKey)
	id := createSub(t, ctx, "--nats", url, "--tenant", "acme", "--url", "http://127.0.0.1:9/hook", "--events", "scan.started")
	if out, err := runCLI(t, ctx, "subs", "list", "--nats", url); err != nil || !strings.Contains(out, id) {
		t.Errorf("with the admin key: %v %s", err, out)
	}

	t.Setenv(secrets.EnvKey, newKey+","+oldKey)
	out, err := runCLI(t, ctx, "secrets", "rekey", "--nats", url)
	if err != nil || !strings.Contains(out, "subscriptions: 1 of 1 documents sealed again") {
		t.Fatalf("rekey: %v %s", err, out)
	}
	kv, err := a.JS.KeyValue(ctx, natsx.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "acme."+id)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := secrets.ParseKeyring(newKey)
	if !strings.Contains(string(e.Value()), "sealed:v1:"+want.Current()+":") {
		t.Errorf("after rekey: %s", e.Value())
	}
	t.Setenv(secrets.EnvKey, newKey)
	if out, err := runCLI(t, ctx, "subs", "get", id, "--nats", url); err != nil {
		t.Errorf("read under the new key alone: %v %s", err, out)
	}
}

// `scanwire secrets nats` prints a whole set of credentials as an env
// file: read back as scanwire reads its environment it makes up nothing,
// and nats.conf filled from it loads.
func TestSecretsNATSPrintsWholeCredentials(t *testing.T) {
	t.Parallel()
	out, err := runCLI(t, context.Background(), "secrets", "nats")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if name, value, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[name] = value
		}
	}
	creds, err := natsauth.CredentialsFromEnv(func(k string) string { return env[k] })
	if err != nil || !creds.Whole() {
		t.Fatalf("read back: whole %v, %v\n%s", creds.Whole(), err, out)
	}
	if pub, _ := creds.Issuer.PublicKey(); env[natsauth.EnvIssuerPublic] != pub {
		t.Errorf("%s is not the public key of %s", natsauth.EnvIssuerPublic, natsauth.EnvIssuer)
	}
	raw, _ := natsConfWithTLS(t)
	text := fillVars(raw, env)
	if strings.Contains(text, "$SCANWIRE") {
		t.Fatalf("nats.conf names a variable the printed set lacks")
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		t.Fatalf("nats.conf with these credentials: %v", err)
	}
}
