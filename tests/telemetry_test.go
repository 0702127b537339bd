package tests

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
	"github.com/scanwire/scanwire/services/delivery"
	"github.com/scanwire/scanwire/services/fanout"
)

// withRecorder routes the pipeline's spans into a recorder.
func withRecorder(t testing.TB) (pipelineOpt, *tracetest.SpanRecorder, trace.TracerProvider) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tel, err := telemetry.New(context.Background(), telemetry.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	return func(c *app.Config) { c.Telemetry = tel }, rec, tp
}

// One event published over NATS, fanned out to two subscriptions, one of
// them retried once: every span is in one trace, each parent is right, and
// the receivers see a traceparent of that trace.
func TestOneTraceFromScannerToReceivers(t *testing.T) {
	t.Parallel()
	opt, rec, tp := withRecorder(t)
	p := startPipeline(t, "", opt)
	ok := newReceiver(t, nil)
	flaky := newReceiver(t, func(n int) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: ok.URL, Events: []string{"finding.*"}})
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: flaky.URL, Events: []string{"finding.high"}, Retry: subscriptions.Retry{Schedule: []string{"1s"}}})

	ctx, root := tp.Tracer("scanner").Start(context.Background(), "scan")
	data := finding("s1", "xss", 8.8, "XSS")
	b, _ := jsonMarshal(data)
	e := events.New("acme", "//scanners/zap", events.TypeFindingHigh, "s1", b)
	if _, err := events.Publish(ctx, p.JS, "scans.acme.s1.finding.high", &e); err != nil {
		t.Fatal(err)
	}
	root.End()
	eventually(t, 15*time.Second, func() bool { return ok.count() == 1 && flaky.count() == 2 })
	p.settle(t)
	traceID := root.SpanContext().TraceID()

	for _, r := range append(ok.requests(), flaky.requests()...) {
		tp := r.Header.Get("traceparent")
		if !strings.HasPrefix(tp, "00-"+traceID.String()+"-") {
			t.Errorf("receiver got traceparent %q, want trace %s", tp, traceID)
		}
	}
	spans := map[string][]sdktrace.ReadOnlySpan{}
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	eventually(t, 5*time.Second, func() bool { return len(rec.Ended()) >= 1+1+1+1+2+3+3 })
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("span %q is in trace %s, not %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
		name := strings.Fields(s.Name())[0]
		spans[name] = append(spans[name], s)
		byID[s.SpanContext().SpanID()] = s
	}
	parentName := func(s sdktrace.ReadOnlySpan) string {
		if p, ok := byID[s.Parent().SpanID()]; ok {
			return strings.Fields(p.Name())[0]
		}
		return "?"
	}
	want := map[string]struct {
		n      int
		parent string
	}{
		"publish": {1, "scan"}, "fanout": {1, "publish"}, "match": {1, "fanout"}, "queue": {2, "fanout"},
		"deliver": {3, "queue"}, "HTTP": {3, "deliver"},
	}
	for name, w := range want {
		if len(spans[name]) != w.n {
			t.Errorf("%d %q spans, want %d", len(spans[name]), name, w.n)
		}
		for _, s := range spans[name] {
			if got := parentName(s); got != w.parent {
				t.Errorf("span %q has parent %q, want %q", s.Name(), got, w.parent)
			}
		}
	}
	attempts := map[int64]bool{}
	for _, s := range spans["deliver"] {
		for _, a := range s.Attributes() {
			if a.Key == "scanwire.attempt" {
				attempts[a.Value.AsInt64()] = true
			}
		}
	}
	if !attempts[1] || !attempts[2] {
		t.Errorf("deliver spans carry attempts %v, want 1 and 2", attempts)
	}
}

// /metrics after a known run shows the expected counters.
func TestMetricsAfterKnownRun(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	good := newReceiver(t, nil)
	bad := newReceiver(t, func(int) int { return 500 })
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: good.URL, Events: []string{"finding.*"}, Limits: subscriptions.Limits{FindingsPerType: 2}})
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: bad.URL, Events: []string{"scan.started"}, Retry: subscriptions.Retry{Schedule: []string{"1s"}}})
	for i := range 3 {
		data := finding("s1", "sqli", 9, "SQLi")
		data["finding_id"] = string(rune('a' + i))
		p.publish(t, "acme", events.TypeFindingHigh, "s1", data)
	}
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t"})
	publishRaw(t, p.JS, binaryMsg("scans.acme.s1.finding.high", with(validAttrs("bad-1"), "ce-type", "finding.low"), goodFinding))
	eventually(t, 15*time.Second, func() bool { return len(p.dlq(t)) == 1 && good.count() == 2 })
	p.settle(t)

	resp, err := http.Get("http://" + p.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`scanwire_events_accepted_total{type="finding.high"} 3`,
		`scanwire_events_accepted_total{type="scan.started"} 1`,
		`scanwire_events_rejected_total{reason="invalid"} 1`,
		`scanwire_deliveries_total{outcome="delivered",profile="standard-webhooks"} 2`,
		`scanwire_deliveries_total{outcome="retry",profile="standard-webhooks"} 1`,
		`scanwire_deliveries_total{outcome="dead-lettered",profile="standard-webhooks"} 1`,
		`scanwire_retries_scheduled_total 1`,
		`scanwire_dead_letters_total{reason="retries_exhausted"} 1`,
		`scanwire_limit_suppressed_total{subscription_id=`,
		`scanwire_attempt_duration_seconds_count{outcome="delivered",profile="standard-webhooks"} 2`,
		`scanwire_subscriptions_cached 2`,
		`scanwire_consumer_pending{consumer="` + delivery.ConsumerName(delivery.Config{}) + `",stream="DELIVERIES"} 0`,
		`scanwire_consumer_ack_pending{consumer="` + fanout.ConsumerName(fanout.Config{}) + `",stream="SCAN_EVENTS"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if m := regexp.MustCompile(`scanwire_limit_suppressed_total\{[^}]*\} (\d+)`).FindStringSubmatch(string(body)); m == nil || m[1] != "1" {
		t.Errorf("limit suppressions %v, want 1", m)
	}
}

// syncBuffer is a log sink the services write to from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// No secret, signature or Authorization header appears in any log line,
// span attribute or error of a full run.
func TestNoSecretInLogsSpansOrErrors(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	opt, rec, _ := withRecorder(t)
	p := startPipeline(t, "", opt, withGateway(), func(c *app.Config) {
		c.Log = slog.New(telemetry.LogHandler(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	})
	acme := p.api(t, acmeKey)
	ok := newReceiver(t, nil)
	failing := newReceiver(t, func(int) int { return 401 })
	s1 := acme.createSub(map[string]any{"url": ok.URL, "events": []string{"*"}})
	s2 := acme.createSub(map[string]any{"url": failing.URL, "events": []string{"scan.*"}, "profile": "detectify",
		"secrets": []map[string]string{{"secret": "detectify-secret-0123456789"}}, "retry": map[string]any{"schedule": []string{"1s"}}})
	var rot struct {
		Secret string `json:"secret"`
	}
	acme.do("POST", "/v1/subscriptions/"+s1.ID+"/rotate-secret", nil, &rot)
	var sign struct {
		Secret string `json:"signing_secret"`
	}
	acme.do("GET", "/v1/signing-secret", nil, &sign)
	eventually(t, 5*time.Second, func() bool { s, _ := p.Subs.Get("acme", s1.ID); return s != nil && len(s.Secrets) == 2 })
	p.publish(t, "acme", events.TypeScanStarted, "s1", map[string]any{"scan_id": "s1", "target": "t", "callback_url": ok.URL + "/cb"})
	p.publish(t, "acme", events.TypeScanFinished, "s1", map[string]any{"scan_id": "s1", "target": "t", "status": "completed"})
	acme.do("POST", "/v1/subscriptions/"+s2.ID+"/test", nil, nil)
	(&api{t: t, base: acme.base, key: "wrong-key-0123456789abc"}).do("GET", "/v1/subscriptions", nil, nil)
	eventually(t, 15*time.Second, func() bool { return len(p.dlq(t)) >= 2 })
	p.settle(t)

	var haystack strings.Builder
	haystack.WriteString(logs.String())
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			haystack.WriteString(a.Value.Emit() + "\n")
		}
		haystack.WriteString(s.Status().Description + "\n")
		for _, ev := range s.Events() {
			for _, a := range ev.Attributes {
				haystack.WriteString(a.Value.Emit() + "\n")
			}
		}
	}
	for _, dl := range p.dlq(t) {
		haystack.WriteString(dl.Reason + dl.LastError + "\n")
	}
	needles := []string{s1.Secrets[0].Secret, rot.Secret, sign.Secret, "detectify-secret-0123456789", acmeKey, adminKey, "wrong-key-0123456789abc", "Bearer"}
	for _, r := range append(ok.requests(), failing.requests()...) {
		for _, h := range []string{"webhook-signature", "X-Detectify-Signature", "X-Pwnkemon-Signature"} {
			if v := r.Header.Get(h); v != "" {
				needles = append(needles, v)
			}
		}
	}
	if len(needles) < 10 {
		t.Fatalf("only %d needles: the run did not deliver what it should", len(needles))
	}
	for _, n := range needles {
		if n != "" && strings.Contains(haystack.String(), n) {
			t.Errorf("%q appears in a log line, span or error", n)
		}
	}
	if !strings.Contains(logs.String(), `"trace_id"`) {
		t.Error("no log line carries a trace_id")
	}
}
