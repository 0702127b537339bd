package events

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestBinaryRoundTrip(t *testing.T) {
	e := New("acme", "//scanners/zap", TypeFindingHigh, "s1",
		[]byte(`{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"<b>","cvss_score":7}`))
	m, err := ToMsg(context.Background(), "scans.acme.s1.finding.high", &e)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time", "ce-tenant", "content-type"} {
		if m.Header.Get(h) == "" {
			t.Errorf("binary mode header %s missing; headers: %v", h, m.Header)
		}
	}
	if string(m.Data) != string(e.Data()) {
		t.Errorf("body %s, want the data %s", m.Data, e.Data())
	}
	got, err := FromMsg(m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != e.ID() || got.Type() != e.Type() || Tenant(got) != "acme" || !got.Time().Equal(e.Time()) || string(got.Data()) != string(e.Data()) {
		t.Errorf("round trip changed the event:\n got %v\nwant %v", got, e)
	}
	if err := Validate(Address{"acme", "s1", "finding.high"}, got); err != nil {
		t.Errorf("valid event refused: %v", err)
	}
}

func TestStructuredModeAccepted(t *testing.T) {
	h := nats.Header{}
	h.Set("Content-Type", "application/cloudevents+json")
	body := `{"specversion":"1.0","id":"e1","source":"//s","type":"scan.started","subject":"s1","tenant":"acme",
		"datacontenttype":"application/json","data":{"scan_id":"s1","target":"app.example.com"}}`
	e, err := FromMsg(h, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(Address{"acme", "s1", "started"}, e); err != nil {
		t.Errorf("valid structured event refused: %v", err)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	e := New("acme", "", "finding.high", "s1", []byte(`{"scan_id":"s2","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":5}`))
	err := Validate(Address{"globex", "s1", "finding.high"}, &e)
	if err == nil {
		t.Fatal("invalid event accepted")
	}
	for _, want := range []string{"source: missing", `tenant: "acme" disagrees`, `data/scan_id: "s2" disagrees`, "below 6.0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err, want)
		}
	}
	if !IsInvalid(err) {
		t.Error("IsInvalid is false for a validation error")
	}
}

func TestCVSSBands(t *testing.T) {
	tests := []struct {
		typ   string
		score string
		ok    bool
	}{
		{TypeFindingHigh, "6", true}, {TypeFindingHigh, "10", true}, {TypeFindingHigh, "5.99", false},
		{TypeFindingMedium, "3", true}, {TypeFindingMedium, "5.9", true}, {TypeFindingMedium, "6", false}, {TypeFindingMedium, "2.9", false},
	}
	for _, tt := range tests {
		t.Run(tt.typ+"/"+tt.score, func(t *testing.T) {
			kind, _ := KindOf(tt.typ)
			e := New("acme", "//s", tt.typ, "s1", []byte(`{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":`+tt.score+`}`))
			err := Validate(Address{"acme", "s1", kind}, &e)
			if (err == nil) != tt.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	s, err := Subject("acme", "s-1", TypeFindingMedium)
	if err != nil || s != "scans.acme.s-1.finding.medium" {
		t.Fatalf("Subject = %q, %v", s, err)
	}
	a, err := ParseSubject(s)
	if err != nil || a != (Address{"acme", "s-1", "finding.medium"}) {
		t.Errorf("ParseSubject = %+v, %v", a, err)
	}
	for _, bad := range []struct{ tenant, scan, typ string }{{"ac.me", "s", TypeScanStarted}, {"acme", "s*", TypeScanStarted}, {"acme", "s", "scan.paused"}, {"", "s", TypeScanStarted}} {
		if _, err := Subject(bad.tenant, bad.scan, bad.typ); err == nil {
			t.Errorf("Subject(%q, %q, %q) accepted", bad.tenant, bad.scan, bad.typ)
		}
	}
}

// Decoding and validating arbitrary messages never panics, and whatever
// passes validation can be encoded again.
func FuzzDecodeAndValidate(f *testing.F) {
	f.Add("1.0", "e1", "finding.high", "application/json", []byte(`{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":7}`))
	f.Add("", "", "", "application/cloudevents+json", []byte(`{"specversion":"1.0","id":"x","source":"s","type":"scan.started"}`))
	f.Add("0.3", "e", "scan.started", "text/plain", []byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, spec, id, typ, ct string, data []byte) {
		h := nats.Header{}
		if spec != "" {
			h.Set("ce-specversion", spec)
		}
		h.Set("ce-id", id)
		h.Set("ce-type", typ)
		h.Set("ce-source", "//s")
		h.Set("ce-subject", "s1")
		h.Set("ce-tenant", "acme")
		h.Set("content-type", ct)
		e, err := FromMsg(h, data)
		if err != nil {
			return
		}
		kind, _ := KindOf(e.Type())
		if Validate(Address{"acme", "s1", kind}, e) != nil {
			return
		}
		if _, err := ToMsg(context.Background(), "scans.acme.s1."+kind, e); err != nil {
			t.Errorf("valid event does not encode: %v", err)
		}
	})
}
