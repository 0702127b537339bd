// Package tests holds scanwire's end-to-end tests: the real services
// in-process on an embedded nats-server, real HTTP receivers, and checks
// written from the wire contract, not from the implementation.
package tests

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/secrets"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
	"github.com/scanwire/scanwire/services/delivery"
	"github.com/scanwire/scanwire/services/fanout"
)

// defaultParallel is how many tests run at once when -parallel is not
// given. The tests mostly wait (retry schedules, pull waits, slow or hung
// receivers: 8 s of CPU in 90 s of wall time when run one by one), so the
// testing package's default of GOMAXPROCS (2 on a small CI machine) would
// leave the CPU idle.
const defaultParallel = 8

func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		_ = flag.Set("test.parallel", strconv.Itoa(max(defaultParallel, runtime.GOMAXPROCS(0))))
	}
	os.Exit(m.Run())
}

// pipeline is a running scanwire: embedded NATS, fan-out and delivery.
type pipeline struct {
	*app.App
	dataDir  string
	services []string
	// auth is the NATS credentials of a pipeline with keys, which its
	// replicas are given as an operator gives them to every process.
	auth natsauth.Credentials
}

type pipelineOpt func(*app.Config)

func withSyncInterval(d time.Duration) pipelineOpt {
	return func(c *app.Config) { c.Server.SyncInterval = d }
}

func withDeliveryWorkers(n int) pipelineOpt {
	return func(c *app.Config) { c.Delivery.Workers = n }
}

// testLogger shows the services' logs only with -v, so failures can be
// read without drowning passing runs. Each line names its test: tests run
// in parallel and their lines interleave.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(telemetry.LogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))).With("test", t.Name())
}

// baseConfig is the configuration every process of a test starts from:
// fan-out and delivery, loopback receivers allowed, the test resolver.
func baseConfig(t testing.TB) app.Config {
	cfg := app.Config{
		Topology: natsx.DefaultTopology(),
		Services: []string{app.ServiceFanout, app.ServiceDelivery},
		Log:      testLogger(t),
		// Receivers are httptest servers on loopback.
		AllowPrivateTargets: true,
		Resolver:            testResolver{},
	}
	cfg.Delivery.Timeout = 5 * time.Second
	// Every test's signing secrets are sealed at rest, as in production.
	cfg.Secrets = testKeyring(t)
	return cfg
}

// testSecretsKey seals the tests' signing secrets.
const testSecretsKey = "q2Lh7+Zt0S1n4G8hQ3Yd9mW6pR5vB2xK1cT0eJ7uA4I="

func testKeyring(t testing.TB) *secrets.Keyring {
	k, err := secrets.ParseKeyring(testSecretsKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startPipeline starts the services on a fresh data dir (or dataDir, to
// resume one) and stops them when the test ends.
//
// Nothing here is process-global: each pipeline has its own embedded
// server on a free port, its own data dir, and its own telemetry (tracer
// and meter providers, Prometheus registry; no otel global is set), so
// tests that use it can run in parallel.
func startPipeline(t testing.TB, dataDir string, opts ...pipelineOpt) *pipeline {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	cfg := baseConfig(t)
	cfg.Server = natsx.ServerConfig{DataDir: dataDir, Listen: "127.0.0.1:0"}
	return start(t, cfg, dataDir, opts)
}

// startReplica starts a second scanwire process joined to p's NATS server,
// as `scanwire run --nats URL` does: it shares p's streams, buckets and
// durable consumers, so the two split the work. It stops when the test
// ends, before p (cleanups run last-registered first).
func startReplica(t testing.TB, p *pipeline, opts ...pipelineOpt) *pipeline {
	t.Helper()
	awaitConsumers(t, p.JS, p.services)
	cfg := baseConfig(t)
	cfg.NATSURL = p.ClientURL()
	cfg.NATSAuth = p.auth
	return start(t, cfg, "", opts)
}

func start(t testing.TB, cfg app.Config, dataDir string, opts []pipelineOpt) *pipeline {
	t.Helper()
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.Gateway.Keys.Empty() && cfg.NATSAuth.Issuer == nil {
		cfg.NATSAuth = cfg.NATSAuth.Complete()
	}
	// What scanwire's own connections (named "scanwire") are refused by
	// a closed NATS is a permission its user lacks: a failure of any test.
	v := &violations{}
	cfg.Log = v.log(cfg.Log.Handler())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start pipeline: %v", err)
	}
	p := &pipeline{App: a, dataDir: dataDir, services: cfg.Services, auth: cfg.NATSAuth}
	t.Cleanup(func() {
		p.stop(t)
		for _, m := range v.all() {
			if strings.Contains(m, `:go:scanwire"`) {
				t.Errorf("scanwire's NATS user lacks a permission it uses: %s", m)
			}
		}
	})
	return p
}

// awaitConsumers waits until the durable consumers of a process running
// services exist; their services create them after app.Start returns.
//
// A second process must not start before: its app.Start updates the
// streams (Topology.Ensure) and nats-server v2.15.2 has a data race
// between a stream update and a consumer creation on that stream
// (fileStore.UpdateConfig, filestore.go:757, against
// fileStore.ConsumerStore, filestore.go:13552), which -race reports as a
// failure of whichever test is running.
func awaitConsumers(t testing.TB, js jetstream.JetStream, services []string) {
	t.Helper()
	want := map[string]string{app.ServiceFanout: natsx.StreamScanEvents, app.ServiceDelivery: natsx.StreamDeliveries}
	eventually(t, 10*time.Second, func() bool {
		for _, s := range services {
			if stream, ok := want[s]; ok {
				if _, err := js.Consumer(context.Background(), stream, s); err != nil {
					return false
				}
			}
		}
		return true
	})
}

// stop shuts the pipeline down; calling it twice is harmless.
func (p *pipeline) stop(t testing.TB) {
	if p.App == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Errorf("stop pipeline: %v", err)
	}
	p.App = nil
}

// subscribe stores a subscription and waits until the cache has it.
func (p *pipeline) subscribe(t testing.TB, s subscriptions.Subscription) *subscriptions.Subscription {
	t.Helper()
	created, err := p.Store.Create(context.Background(), s)
	if err != nil {
		t.Fatalf("create subscription: %v", err)
	}
	eventually(t, 5*time.Second, func() bool {
		_, ok := p.Subs.Get(created.Tenant, created.ID)
		return ok
	})
	return created
}

// publish sends a valid event through NATS, as a scanner does.
func (p *pipeline) publish(t testing.TB, tenant, typ, scan string, data map[string]any) string {
	t.Helper()
	e, subject := newEvent(t, tenant, typ, scan, data)
	if _, err := events.Publish(context.Background(), p.JS, subject, &e); err != nil {
		t.Fatalf("publish: %v", err)
	}
	return e.ID()
}

// eventMsg is a valid event as a NATS message with its dedupe id, for
// publishBurst.
func eventMsg(t testing.TB, tenant, typ, scan string, data map[string]any) *nats.Msg {
	t.Helper()
	e, subject := newEvent(t, tenant, typ, scan, data)
	m, err := events.ToMsg(context.Background(), subject, &e)
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Set(nats.MsgIdHdr, events.KeyOf(&e))
	return m
}

// testSource is the source of every event the tests' scanners publish.
const testSource = "//scanners/test"

// webhookID is the webhook-id of tenant's test event eventID for a
// subscription.
func webhookID(tenant, eventID, subscriptionID string) string {
	return jobs.WebhookID(events.Key(tenant, testSource, eventID), subscriptionID)
}

// newEvent is a scanner's event of typ with data, and its subject.
func newEvent(t testing.TB, tenant, typ, scan string, data map[string]any) (event.Event, string) {
	t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	subject, err := events.Subject(tenant, scan, typ)
	if err != nil {
		t.Fatal(err)
	}
	return events.New(tenant, testSource, typ, scan, b), subject
}

// publishBurst publishes msgs (which carry their dedupe ids) back to back,
// in order, without waiting for each acknowledgement, as a busy scanner
// fleet does, and returns once the server has stored them all. One whose
// acknowledgement does not come in time (a loaded machine) is published
// again and waited for, as a scanner retries: its dedupe id makes that
// safe.
func publishBurst(t testing.TB, js jetstream.JetStream, msgs []*nats.Msg) {
	t.Helper()
	acks := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		var err error
		if acks[i], err = js.PublishMsgAsync(m, jetstream.WithStallWait(10*time.Second)); err != nil {
			t.Fatalf("publish %s: %v", m.Subject, err)
		}
	}
	for i, a := range acks {
		select {
		case <-a.Ok():
		case <-a.Err():
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := js.PublishMsg(ctx, a.Msg())
			cancel()
			if err != nil {
				t.Fatalf("publish %s: %v", msgs[i].Subject, err)
			}
		}
	}
}

func finding(scan, typ string, cvss float64, title string) map[string]any {
	return map[string]any{"scan_id": scan, "target": "app.example.com", "finding_id": "f-" + typ + strconv.FormatFloat(cvss, 'f', -1, 64),
		"type": typ, "title": title, "cvss_score": cvss}
}

// dlq reads every dead letter stored so far.
func (p *pipeline) dlq(t testing.TB) []dlq.DeadLetter {
	t.Helper()
	var out []dlq.DeadLetter
	for _, m := range p.readStream(t, natsx.StreamDLQ) {
		var dl dlq.DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			t.Fatalf("dead letter is not JSON: %v", err)
		}
		out = append(out, dl)
	}
	return out
}

// readStream returns every message a stream holds, oldest first.
func (p *pipeline) readStream(t testing.TB, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	return natsxtest.Messages(t, p.JS, stream, "")
}

// jobs reads the delivery jobs DELIVERIES holds, done or not (not the
// scheduled retries waiting their time).
func (p *pipeline) jobs(t testing.TB) []*jetstream.RawStreamMsg {
	t.Helper()
	return natsxtest.Messages(t, p.JS, natsx.StreamDeliveries, "deliveries.")
}

// settle waits until fan-out and delivery have nothing left to do.
func (p *pipeline) settle(t testing.TB) {
	t.Helper()
	eventually(t, 20*time.Second, func() bool {
		for stream, consumer := range map[string]string{natsx.StreamScanEvents: fanout.ConsumerName(fanout.Config{}), natsx.StreamDeliveries: delivery.ConsumerName(delivery.Config{})} {
			c, err := p.JS.Consumer(context.Background(), stream, consumer)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue // that service does not run here
			}
			if err != nil {
				return false
			}
			info, err := c.Info(context.Background())
			if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
				return false
			}
		}
		return true
	})
}

// consumers describes the work fan-out and delivery have left, for
// failure messages.
func (p *pipeline) consumers() string {
	var out []string
	for _, sc := range [][2]string{{natsx.StreamScanEvents, fanout.ConsumerName(fanout.Config{})}, {natsx.StreamDeliveries, delivery.ConsumerName(delivery.Config{})}} {
		c, err := p.JS.Consumer(context.Background(), sc[0], sc[1])
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", sc[1], err))
			continue
		}
		info, err := c.Info(context.Background())
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", sc[1], err))
			continue
		}
		out = append(out, fmt.Sprintf("%s: %d pending, %d ack pending, %d redelivered, %d pulls waiting",
			sc[1], info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting))
	}
	return strings.Join(out, "; ")
}

// received is one request a receiver got.
type received struct {
	Header http.Header
	Body   []byte
	At     time.Time
}

// receiver is a real HTTP server that records every request and answers
// with the status respond returns for the n-th request (1-based).
type receiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []received
}

func newReceiver(t testing.TB, respond func(n int) int) *receiver {
	if respond == nil {
		respond = func(int) int { return http.StatusNoContent }
	}
	return newReceiverWith(t, func(n int, w http.ResponseWriter) { w.WriteHeader(respond(n)) })
}

// newReceiverWith records like newReceiver and lets answer write the
// response to the n-th request (headers, delays, hangs).
func newReceiverWith(t testing.TB, answer func(n int, w http.ResponseWriter)) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{Header: req.Header.Clone(), Body: body, At: time.Now()})
		n := len(r.got)
		r.mu.Unlock()
		answer(n, w)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// verifyStandardWebhook checks a request by the Standard Webhooks 1.0 rule,
// written here from the specification rather than taken from the signer:
// HMAC-SHA256 keyed with base64-decoded secret (after "whsec_") over
// "<webhook-id>.<webhook-timestamp>.<body>", base64, as "v1,<sig>" in a
// space-separated list; the timestamp within five minutes.
func verifyStandardWebhook(secret string, h http.Header, body []byte) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return fmt.Errorf("secret: %v", err)
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	if id == "" || ts == "" {
		return errors.New("webhook-id or webhook-timestamp missing")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: %v", ts, err)
	}
	if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("webhook-timestamp %s is %s off", ts, d)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Split(h.Get("webhook-signature"), " ") {
		version, sig, ok := strings.Cut(s, ",")
		if ok && version == "v1" && hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no valid v1 signature in %q", h.Get("webhook-signature"))
}

// testResolver stands in for DNS, which this sandbox does not have: every
// *.example.com name is a public address, internal.example.net is a
// private one, *.slow.example.org answers only when asked to give up (a
// tenant's hung name server), a *.switch.example.net name resolves while a
// test holds it in switchable (operator_test.go), anything else does not
// resolve.
type testResolver struct{}

func (testResolver) LookupNetIP(ctx context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := switchable.Load(host); ok && strings.HasSuffix(host, ".switch.example.net") {
		return []netip.Addr{a.(netip.Addr)}, nil
	}
	switch {
	case strings.HasSuffix(host, ".slow.example.org"):
		<-ctx.Done()
		return nil, &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true}
	case strings.HasSuffix(host, ".example.com"):
		return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
	case host == "internal.example.net":
		return []netip.Addr{netip.MustParseAddr("10.1.2.3")}, nil
	case host == "rebind.example.net":
		return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishRaw sends a NATS message as given, for inputs no well-behaved
// client would produce.
func publishRaw(t testing.TB, js jetstream.JetStream, m *nats.Msg) {
	t.Helper()
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatalf("publish raw: %v", err)
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// violations records what the NATS server reports as a permissions
// violation, for a test that must see none.
type violations struct {
	mu  sync.Mutex
	got []string
}

func (v *violations) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.got)
}

// log is a logger that writes to h and records violations in v.
func (v *violations) log(h slog.Handler) *slog.Logger {
	return slog.New(&violationLog{Handler: h, v: v})
}

type violationLog struct {
	slog.Handler
	v *violations
}

func (l *violationLog) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "Violation") {
		l.v.mu.Lock()
		l.v.got = append(l.v.got, r.Message)
		l.v.mu.Unlock()
	}
	return l.Handler.Handle(ctx, r)
}

func (l *violationLog) WithAttrs(a []slog.Attr) slog.Handler {
	return &violationLog{Handler: l.Handler.WithAttrs(a), v: l.v}
}

func (l *violationLog) WithGroup(n string) slog.Handler {
	return &violationLog{Handler: l.Handler.WithGroup(n), v: l.v}
}

// metricSum sums the values of p's metrics whose line starts with prefix.
func metricSum(p *pipeline, prefix string) float64 {
	rr := httptest.NewRecorder()
	p.Tel.Handler.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	sum := 0.0
	for _, line := range strings.Split(rr.Body.String(), "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}
