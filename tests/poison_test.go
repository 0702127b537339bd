package tests

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// structuredFinding is a finding.high of tenant acme in structured mode,
// with one extension attribute ext of the given value.
func structuredFinding(id, ext, value string) *nats.Msg {
	m := nats.NewMsg("scans.acme.s1.finding.high")
	m.Header.Set("content-type", "application/cloudevents+json")
	m.Data = fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"source":%q,"type":"finding.high","subject":"s1","tenant":"acme",`+
		`"datacontenttype":"application/json",%q:%q,"data":%s}`, id, testSource, ext, value, goodFinding)
	return m
}

// Whatever arrives ends delivered or in REJECTED with a reason, never in a
// loop: an event over the size limit only because of an extension (whose
// characters a careless encoding would inflate), an invalid event just
// under the stream's cap, and one whose headers nearly fill JetStream's
// 64 KiB leave nothing behind in SCAN_EVENTS's consumer, and a valid event
// after them is delivered.
func TestOversizedAndPoisonEventsEndInRejected(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	r := newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"*"}})

	within := strings.Repeat("<", events.MaxEventSize-2048) // escaped as \u003c it would be six times the limit
	over := strings.Repeat("<", events.MaxEventSize)
	nearCap := binaryMsg("scans.acme.s1.finding.high", validAttrs("near-cap"),
		`{"evidence":"`+strings.Repeat("x", natsx.MaxEventMsgSize-4096)+`"}`)
	// Headers of exactly JetStream's cap: the reason cannot be added to them.
	bigHeaders := binaryMsg("scans.acme.s1.finding.high", with(validAttrs("big-headers"), "ce-padding", ""), `{}`)
	bigHeaders.Header.Set("ce-padding", strings.Repeat("h", natsx.MaxHeaderSize-natsx.HeaderSize(bigHeaders.Header)))
	msgs := []struct {
		name   string
		msg    *nats.Msg
		reason string // "" for a valid event
	}{
		{"large extension within the limit", structuredFinding("ext-ok", "notes", within), ""},
		{"extension over the limit", structuredFinding("ext-over", "notes", over), "the limit is 262144 bytes"},
		{"invalid, just under the stream cap", nearCap, "the limit is 262144 bytes"},
		{"invalid, headers near 64 KiB", bigHeaders, "data/"},
	}
	for _, m := range msgs {
		if _, err := p.JS.PublishMsg(context.Background(), m.msg); err != nil {
			t.Fatalf("%s: publish: %v", m.name, err)
		}
	}
	p.publish(t, "acme", events.TypeFindingHigh, "s9", finding("s9", "xss", 8, "after the poison"))
	eventually(t, 15*time.Second, func() bool { return r.count() >= 2 })
	p.settle(t)

	if n := r.count(); n != 2 {
		t.Errorf("%d webhooks, want 2 (the event with a large extension and the one after)", n)
	}
	for _, req := range r.requests() {
		if strings.Contains(string(req.Body), `\u003c`) {
			t.Error("a body carries \\u003c: the extension was HTML-escaped")
		}
	}
	rejected := map[string]*jetstream.RawStreamMsg{}
	for _, m := range p.readStream(t, "REJECTED") {
		rejected[m.Header.Get(events.HeaderOriginalSeq)] = m
	}
	for i, m := range msgs {
		got := rejected[strconv.Itoa(i+1)]
		switch {
		case m.reason == "" && got != nil:
			t.Errorf("%s: rejected: %s", m.name, got.Header.Get(events.HeaderRejectReason))
		case m.reason == "":
		case got == nil:
			t.Errorf("%s: not in REJECTED", m.name)
		case !strings.Contains(got.Header.Get(events.HeaderRejectReason), m.reason):
			t.Errorf("%s: reason %q, want it to say %q", m.name, got.Header.Get(events.HeaderRejectReason), m.reason)
		}
	}
	if got := rejected["4"]; got != nil {
		if !strings.Contains(got.Header.Get(events.HeaderOmitted), "headers") || string(got.Data) != "{}" {
			t.Errorf("the copy of the event with huge headers: omitted %q, body %q; want its headers named as omitted and its body kept",
				got.Header.Get(events.HeaderOmitted), got.Data)
		}
	}
	info, err := p.JS.Consumer(context.Background(), natsx.StreamScanEvents, "fanout")
	if err != nil {
		t.Fatal(err)
	}
	if ci := info.CachedInfo(); ci.NumAckPending != 0 || ci.NumPending != 0 || ci.NumRedelivered != 0 {
		t.Errorf("fan-out consumer: %d pending, %d in flight, %d redelivered; want every event settled once",
			ci.NumPending, ci.NumAckPending, ci.NumRedelivered)
	}
}

// A flood of unprocessable events from one tenant does not hold fan-out:
// another tenant's event published behind them is delivered within
// seconds.
func TestPoisonFloodDoesNotStarveOtherTenants(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	r := newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "globex", URL: r.URL, Events: []string{"scan.started"}})

	const flood = 1200 // more than the fan-out consumer's ack-pending limit (1,024)
	msgs := make([]*nats.Msg, 0, flood)
	for i := range flood {
		var m *nats.Msg
		switch {
		case i%10 == 0: // over the size limit
			m = structuredFinding(fmt.Sprintf("big-%d", i), "notes", strings.Repeat("<", events.MaxEventSize))
		case i%2 == 0: // not a CloudEvent
			m = binaryMsg("scans.acme.s1.finding.high", map[string]string{"content-type": "text/plain"}, "garbage")
		default: // invalid data
			m = binaryMsg("scans.acme.s1.finding.high", validAttrs(fmt.Sprintf("bad-%d", i)), `{"cvss_score":"high"}`)
		}
		msgs = append(msgs, m)
	}
	publishBurst(t, p.JS, msgs)
	start := time.Now()
	p.publish(t, "globex", events.TypeScanStarted, "g1", map[string]any{"scan_id": "g1", "target": "globex.example.com"})
	eventually(t, 30*time.Second, func() bool { return r.count() == 1 })
	t.Logf("globex's event delivered %s after a flood of %d poison events", time.Since(start).Round(time.Millisecond), flood)
	eventually(t, 60*time.Second, func() bool {
		s, err := p.JS.Stream(context.Background(), natsx.StreamRejected)
		return err == nil && s.CachedInfo().State.Msgs == flood
	})
}

// POST /v1/events gives a permanent answer for an event too large, never
// 503 "retry with the same id": an extension larger than NATS headers
// take is stored (in structured mode) and delivered whole; one that puts
// the event over the limit is 413 naming the limit.
func TestAPIEventSizeAnswers(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "", withGateway())
	r := newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"scan.started"}})
	acme := p.api(t, acmeKey)
	post := func(id string, extension int) (int, apiErrorBody) {
		var out apiErrorBody
		code := acme.do("POST", "/v1/events", `{"scan_id":"s1","target":"t"}`, &out,
			"Content-Type", "application/json", "Ce-Specversion", "1.0", "Ce-Id", id, "Ce-Source", testSource,
			"Ce-Type", "scan.started", "Ce-Subject", "s1", "Ce-Tenant", "acme", "Ce-Notes", strings.Repeat("&", extension))
		return code, out
	}
	if code, out := post("big-ext", 100<<10); code != 202 {
		t.Fatalf("an event with a 100 KiB extension: %d %s, want 202", code, out.Error)
	}
	eventually(t, 10*time.Second, func() bool { return r.count() == 1 })
	if body := string(r.requests()[0].Body); !strings.Contains(body, `"notes":"`+strings.Repeat("&", 100<<10)+`"`) {
		t.Errorf("the delivered event does not carry the 100 KiB extension as sent (%d bytes)", len(body))
	}
	code, out := post("too-big", events.MaxEventSize)
	if code != 413 || out.Field != "event" || !strings.Contains(out.Error, "the limit is 262144 bytes") {
		t.Errorf("an event over the limit: %d %+v, want 413 naming the limit", code, out)
	}
}

// apiErrorBody is the gateway's error answer.
type apiErrorBody struct {
	Error string `json:"error"`
	Field string `json:"field"`
}
