package tests

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// binaryMsg builds a binary-mode CloudEvent by hand, so each case can break
// exactly one thing.
func binaryMsg(subject string, attrs map[string]string, data string) *nats.Msg {
	m := nats.NewMsg(subject)
	for k, v := range attrs {
		m.Header.Set(k, v)
	}
	m.Data = []byte(data)
	return m
}

func validAttrs(id string) map[string]string {
	return map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          id,
		"ce-source":      testSource,
		"ce-type":        "finding.high",
		"ce-subject":     "s1",
		"ce-tenant":      "acme",
		"content-type":   "application/json",
	}
}

func without(m map[string]string, key string) map[string]string {
	delete(m, key)
	return m
}

func with(m map[string]string, key, value string) map[string]string {
	m[key] = value
	return m
}

const goodFinding = `{"scan_id":"s1","target":"app.example.com","finding_id":"f1","type":"xss","title":"XSS","cvss_score":7.5}`

// Every kind of bad input lands in REJECTED with a reason a person can act
// on, produces no webhook, and leaves the services running.
func TestBadInputIsRejectedWithReason(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	r := newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"*"}})
	const subj = "scans.acme.s1.finding.high"

	tests := []struct {
		name   string
		msg    *nats.Msg
		reason string // must appear in the stored reason
	}{
		{"missing source", binaryMsg(subj, without(validAttrs("e1"), "ce-source"), goodFinding), "source: missing"},
		{"missing id", binaryMsg(subj, without(validAttrs("e2"), "ce-id"), goodFinding), "id: missing"},
		{"missing tenant", binaryMsg(subj, without(validAttrs("e3"), "ce-tenant"), goodFinding), "tenant: missing extension attribute"},
		{"unknown type", binaryMsg(subj, with(validAttrs("e4"), "ce-type", "finding.critical"), goodFinding), `type: unknown event type "finding.critical"`},
		{"data failing its schema", binaryMsg(subj, validAttrs("e5"),
			`{"scan_id":"s1","target":"t","finding_id":"f1","type":"xss","title":"XSS","cvss_score":11}`), "data/cvss_score"},
		{"missing required field", binaryMsg(subj, validAttrs("e6"),
			`{"scan_id":"s1","target":"t","finding_id":"f1","type":"xss","cvss_score":7}`), "title"},
		{"tenant disagrees with subject", binaryMsg(subj, with(validAttrs("e7"), "ce-tenant", "globex"), goodFinding),
			`tenant: "globex" disagrees with the NATS subject's tenant "acme"`},
		{"scan disagrees with subject", binaryMsg("scans.acme.s2.finding.high", validAttrs("e8"), goodFinding),
			`subject: scan id "s1" disagrees with the NATS subject's scan id "s2"`},
		{"type disagrees with subject", binaryMsg("scans.acme.s1.finding.medium", validAttrs("e9"), goodFinding),
			`must be published on a subject ending in .finding.high`},
		{"cvss below the high band", binaryMsg(subj, validAttrs("e10"),
			`{"scan_id":"s1","target":"t","finding_id":"f1","type":"xss","title":"XSS","cvss_score":4.0}`), "below 6.0, the floor of finding.high"},
		{"non-JSON data", binaryMsg(subj, validAttrs("e11"), `scan s1 found xss`), "data: not valid JSON"},
		{"payload over the limit", binaryMsg(subj, validAttrs("e12"),
			`{"scan_id":"s1","target":"t","finding_id":"f1","type":"xss","title":"XSS","cvss_score":7,"evidence":"`+strings.Repeat("A", events.MaxEventSize)+`"}`),
			"the limit is 262144 bytes"},
		{"a repeated key", binaryMsg(subj, validAttrs("e14"),
			`{"scan_id":"s1","target":"t","finding_id":"f1","type":"xss","title":"XSS","cvss_score":9.8,"cvss_score":6.1}`), `"cvss_score"`},
		{"data that is not UTF-8", binaryMsg(subj, validAttrs("e15"),
			"{\"scan_id\":\"s1\",\"target\":\"t\",\"finding_id\":\"f1\",\"type\":\"xss\",\"title\":\"X\xffS\",\"cvss_score\":7}"), "UTF-8"},
		{"not a CloudEvent", binaryMsg(subj, map[string]string{"content-type": "text/plain"}, "hello"), "not a CloudEvent"},
		{"bad structured event", binaryMsg(subj, map[string]string{"content-type": "application/cloudevents+json"}, `{"specversion":"1.0",`), "not a valid CloudEvent"},
	}
	for _, tt := range tests {
		publishRaw(t, p.JS, tt.msg)
	}
	// A valid event after all of them is still delivered: nothing stalled.
	p.publish(t, "acme", events.TypeFindingHigh, "s9", finding("s9", "xss", 8, "still working"))
	eventually(t, 10*time.Second, func() bool { return r.count() == 1 })
	p.settle(t)

	// Fan-out works on several events at once, so REJECTED's order is not
	// the publish order; the original sequence number says which is which.
	rejected := map[string]*jetstream.RawStreamMsg{}
	for _, m := range p.readStream(t, "REJECTED") {
		rejected[m.Header.Get(events.HeaderOriginalSeq)] = m
	}
	if len(rejected) != len(tests) {
		t.Fatalf("REJECTED holds %d events, want %d", len(rejected), len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := rejected[strconv.Itoa(i+1)]
			if m == nil {
				t.Fatalf("event %d not in REJECTED", i+1)
			}
			reason := m.Header.Get(events.HeaderRejectReason)
			if !strings.Contains(reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", reason, tt.reason)
			}
			if got := m.Header.Get(events.HeaderOriginalSubject); got != tt.msg.Subject {
				t.Errorf("original subject %q, want %q", got, tt.msg.Subject)
			}
			if string(m.Data) != string(tt.msg.Data) {
				t.Errorf("rejected body differs from what was sent")
			}
			if !strings.HasPrefix(m.Subject, "rejected.") {
				t.Errorf("stored on %q", m.Subject)
			}
		})
	}
	if n := r.count(); n != 1 {
		t.Errorf("receiver got %d webhooks, want only the valid one", n)
	}
}

// Publishing the same event id twice stores one event and delivers once.
func TestDuplicateEventIDDeliversOnce(t *testing.T) {
	t.Parallel()
	p := startPipeline(t, "")
	r := newReceiver(t, nil)
	p.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: r.URL, Events: []string{"finding.high"}})
	for range 3 {
		publishRaw(t, p.JS, binaryMsg("scans.acme.s1.finding.high", with(validAttrs("same-id"), nats.MsgIdHdr, "same-id"), goodFinding))
	}
	eventually(t, 10*time.Second, func() bool { return r.count() >= 1 })
	p.settle(t)
	if n := r.count(); n != 1 {
		t.Errorf("got %d webhooks for one event id, want 1", n)
	}
}
