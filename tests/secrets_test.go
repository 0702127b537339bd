package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/secrets"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// secretBody is what a secret's text has that a store must not show: the
// key after "whsec_", or the whole secret of another form.
func secretBody(secret string) string { return strings.TrimPrefix(secret, "whsec_") }

// rawValue is what `nats kv get` shows of key: the bucket's own value,
// not scanwire's opened view.
func rawValue(t *testing.T, p *pipeline, bucket, key string) []byte {
	t.Helper()
	kv, err := p.JS.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("%s %s: %v", bucket, key, err)
	}
	return e.Value()
}

// filesHolding lists the files under dir that hold text.
func filesHolding(t *testing.T, dir, text string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte(text)) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// withSecretsKey seals with keys (SCANWIRE_SECRETS_KEY's form).
func withSecretsKey(t *testing.T, keys string) pipelineOpt {
	k, err := secrets.ParseKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *app.Config) { c.Secrets = k }
}

// Issue 13.4: a subscription's signing secret and a tenant's callback
// secret are sealed in KV: the bucket's values and the store's files hold
// neither, while deliveries still verify.
func TestSecretsSealedAtRest(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	acme := p.api(t, acmeKey)
	r := newReceiver(t, nil)
	sub := acme.createSub(map[string]any{"url": r.URL, "events": []string{"scan.started"}})
	eventually(t, 5*time.Second, func() bool { _, ok := p.Subs.Get("acme", sub.ID); return ok })
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() == 1 })
	if err := verifyStandardWebhook(sub.Secrets[0].Secret, r.requests()[0].Header, r.requests()[0].Body); err != nil {
		t.Errorf("delivery does not verify with the secret: %v", err)
	}
	var tenant struct {
		Secret string `json:"signing_secret"`
	}
	if code := acme.do("GET", "/v1/signing-secret", nil, &tenant); code != 200 || tenant.Secret == "" {
		t.Fatalf("signing secret: %d %+v", code, tenant)
	}

	for _, c := range []struct{ bucket, key, secret string }{
		{natsx.BucketSubscriptions, subscriptions.Key("acme", sub.ID), sub.Secrets[0].Secret},
		{natsx.BucketTenants, "acme", tenant.Secret},
	} {
		raw := rawValue(t, p, c.bucket, c.key)
		if bytes.Contains(raw, []byte(secretBody(c.secret))) || !bytes.Contains(raw, []byte("sealed:v1:")) {
			t.Errorf("%s %s as stored: %s", c.bucket, c.key, raw)
		}
		if files := filesHolding(t, p.dataDir, secretBody(c.secret)); len(files) > 0 {
			t.Errorf("the secret of %s %s is in %v", c.bucket, c.key, files)
		}
	}
}

// Issue 13.4: a document written by hand with its secret in plain text is
// served, and sealed at its next write.
func TestSecretsPlainDocumentSealedAtNextWrite(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	r := newReceiver(t, nil)
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	s := subscriptions.Subscription{ID: subscriptions.NewID(), Tenant: "acme", URL: r.URL, Events: []string{"scan.started"},
		Profile: "standard-webhooks", Secrets: []subscriptions.Secret{{Secret: secret}}}
	kv, err := p.JS.KeyValue(context.Background(), natsx.BucketSubscriptions) // the bucket itself, as `nats kv put`
	if err != nil {
		t.Fatal(err)
	}
	natsxtest.PutJSON(t, kv, subscriptions.Key("acme", s.ID), s)
	eventually(t, 5*time.Second, func() bool { _, ok := p.Subs.Get("acme", s.ID); return ok })
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() == 1 })
	if err := verifyStandardWebhook(secret, r.requests()[0].Header, r.requests()[0].Body); err != nil {
		t.Errorf("the hand-written secret does not verify: %v", err)
	}
	if code := p.api(t, acmeKey).do("PATCH", "/v1/subscriptions/"+s.ID, map[string]any{"description": "touched"}, nil); code != 200 {
		t.Fatalf("patch: %d", code)
	}
	if raw := rawValue(t, p, natsx.BucketSubscriptions, subscriptions.Key("acme", s.ID)); bytes.Contains(raw, []byte(secretBody(secret))) {
		t.Errorf("after a write the secret is still in plain text: %s", raw)
	}
}

// Issue 13.4: the key rotates. Under "new,old" what the old key sealed
// still opens; rekey seals it all under the new key and purges the
// revisions that held it under the old one, after which the old key can
// go; a key that opens nothing makes the document invalid, with the
// reason, and delivers nothing.
func TestSecretsRekey(t *testing.T) {
	t.Parallel()
	oldKey, newKey, strangerKey := secrets.NewKey(), secrets.NewKey(), secrets.NewKey()
	dir := t.TempDir()
	r := newReceiver(t, nil)
	p := startPipeline(t, dir, withSecretsKey(t, oldKey))
	sub := p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"}})
	key := subscriptions.Key("acme", sub.ID)
	oldID, _ := secrets.IsSealed(sealedSecret(t, rawValue(t, p, natsx.BucketSubscriptions, key)))
	p.stop(t)

	both, err := secrets.ParseKeyring(newKey + "," + oldKey)
	if err != nil {
		t.Fatal(err)
	}
	p = startPipeline(t, dir, withSecretsKey(t, newKey+","+oldKey))
	deliverAndVerify(t, p, r, sub.Secrets[0].Secret, "s1")
	rewritten, read, err := secrets.Rekey(context.Background(), p.JS, natsx.BucketSubscriptions, both, secrets.DefaultFields)
	if err != nil || rewritten != 1 || read != 1 {
		t.Fatalf("rekey: %d of %d, %v", rewritten, read, err)
	}
	if id, _ := secrets.IsSealed(sealedSecret(t, rawValue(t, p, natsx.BucketSubscriptions, key))); id != both.Current() || id == oldID {
		t.Errorf("after rekey the secret is sealed under %s, want %s", id, both.Current())
	}
	kv, _ := p.JS.KeyValue(context.Background(), natsx.BucketSubscriptions)
	if hist, err := kv.History(context.Background(), key); err != nil || len(hist) != 1 {
		t.Errorf("history after rekey: %d revisions, %v; want the latest only", len(hist), err)
	}
	if again, _, err := secrets.Rekey(context.Background(), p.JS, natsx.BucketSubscriptions, both, secrets.DefaultFields); err != nil || again != 0 {
		t.Errorf("a second rekey rewrote %d, %v", again, err)
	}
	p.stop(t)

	p = startPipeline(t, dir, withSecretsKey(t, newKey))
	deliverAndVerify(t, p, r, sub.Secrets[0].Secret, "s2")
	p.stop(t)

	p = startPipeline(t, dir, withSecretsKey(t, strangerKey))
	if _, _, err := p.Store.Get(context.Background(), "acme", sub.ID); err == nil || !strings.Contains(err.Error(), secrets.EnvKey+" does not hold") {
		t.Errorf("under a key that opens nothing: %v", err)
	}
	if _, ok := p.Subs.Get("acme", sub.ID); ok {
		t.Error("the cache serves a subscription whose secret does not open")
	}
}

// sealedSecret is the first secret of a stored subscription document.
func sealedSecret(t *testing.T, doc []byte) string {
	t.Helper()
	var d struct {
		Secrets []struct {
			Secret string `json:"secret"`
		} `json:"secrets"`
	}
	if err := json.Unmarshal(doc, &d); err != nil || len(d.Secrets) == 0 {
		t.Fatalf("stored document %s: %v", doc, err)
	}
	return d.Secrets[0].Secret
}

// deliverAndVerify publishes a scan.started of scan and checks that its
// webhook verifies with secret.
func deliverAndVerify(t *testing.T, p *pipeline, r *receiver, secret, scan string) {
	t.Helper()
	before := r.count()
	p.publish(t, "acme", events.TypeScanStarted, scan, map[string]any{"scan_id": scan, "target": "t"})
	eventually(t, 10*time.Second, func() bool { return r.count() == before+1 })
	got := r.requests()[before]
	if err := verifyStandardWebhook(secret, got.Header, got.Body); err != nil {
		t.Errorf("scan %s: %v", scan, err)
	}
}
