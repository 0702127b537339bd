package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/jsonx"
	"github.com/scanwire/scanwire/schemas"
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
	if ie := (*InvalidError)(nil); !errors.As(err, &ie) {
		t.Error("a validation error is not an *InvalidError")
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
// passes validation is delivered as it was checked: Structured encodes it,
// its JSON has no repeated key, no byte that is not UTF-8 and no HTML
// escape, and decoding it (as delivery does) gives back the same data,
// which validates again and encodes to the same bytes.
func FuzzDecodeAndValidate(f *testing.F) {
	f.Add("1.0", "e1", "finding.high", "application/json", "", "", []byte(`{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":7}`))
	f.Add("", "", "", "application/cloudevents+json", "", "", []byte(`{"specversion":"1.0","id":"x","source":"s","type":"scan.started"}`))
	f.Add("0.3", "e", "scan.started", "text/plain", "", "", []byte("\x00\xff"))
	f.Add("1.0", "e1", "finding.high", "application/json", "note", "<b> & </b>", []byte(findingXSS))
	f.Add("1.0", "e1", "scan.started", "application/json", "data", "x", []byte(`{"scan_id":"s1","target":"t"}`))
	f.Add("1.0", "e1", "finding.high", "application/json", "", "", []byte(`{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":9.8,"cvss_score":6.1}`))
	f.Add("", "", "", "application/cloudevents+json", "", "", []byte(`{"specversion":"1.0","id":"e1","source":"//s","type":"scan.started","subject":"s1","tenant":"acme","datacontenttype":"application/json","data_base64":"eyJzY2FuX2lkIjoiczEiLCJ0YXJnZXQiOiI8YT4mIn0="}`))
	f.Fuzz(func(t *testing.T, spec, id, typ, ct, ext, extValue string, data []byte) {
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
		if ext != "" {
			h.Set("ce-"+ext, extValue)
		}
		e, err := FromMsg(h, data)
		if err != nil {
			return
		}
		kind, _ := KindOf(e.Type())
		addr := Address{"acme", "s1", kind}
		invalid := Validate(addr, e)
		s, err := Structured(e) // whatever the event, no panic
		if invalid != nil {
			return
		}
		if err != nil {
			t.Fatalf("valid event does not encode: %v", err)
		}
		if a := jsonx.Ambiguities(s); a != nil {
			t.Fatalf("structured event %s is ambiguous: %+v", s, a)
		}
		if !bytes.Equal(jsonx.UnescapeHTML(s), s) {
			t.Fatalf("structured event %s has HTML escapes", s)
		}
		var back event.Event
		if err := json.Unmarshal(s, &back); err != nil {
			t.Fatalf("structured event %s does not decode: %v", s, err)
		}
		if back.DataBase64 || !sameJSON(back.Data(), e.Data()) {
			t.Fatalf("delivered data %s, validated %s", back.Data(), e.Data())
		}
		if err := Validate(addr, &back); err != nil {
			t.Fatalf("delivered event %s is invalid: %v", s, err)
		}
		if again, err := Structured(&back); err != nil || !bytes.Equal(again, s) {
			t.Fatalf("re-encoded\n%s\nwas\n%s (%v)", again, s, err)
		}
		if _, err := ToMsg(context.Background(), "scans.acme.s1."+kind, e); err != nil {
			t.Errorf("valid event does not encode: %v", err)
		}
	})
}

// TestTokenLengthAgreesWithSchemas: the JSON schemas cannot import Go, so
// they state MaxTokenLen literally; this holds every tenant and scan id
// rule in them to the constant and to the very expression ValidToken uses.
func TestTokenLengthAgreesWithSchemas(t *testing.T) {
	want := fmt.Sprintf("^[A-Za-z0-9_-]{1,%d}$", MaxTokenLen)
	if tokenRE.String() != want {
		t.Errorf("ValidToken uses %s, want %s", tokenRE, want)
	}
	type rule struct {
		Pattern   string `json:"pattern"`
		MaxLength int    `json:"maxLength"` // 0 when absent
	}
	var sub struct {
		Properties struct {
			Tenant rule `json:"tenant"`
			Filter struct {
				Properties struct {
					ScanID rule `json:"scan_id"`
				} `json:"properties"`
			} `json:"filter"`
		} `json:"properties"`
	}
	read := func(name string, into any) {
		raw, ok := schemas.Source(name)
		if !ok {
			t.Fatalf("no schema %s", name)
		}
		if err := json.Unmarshal(raw, into); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	read(schemas.Subscription, &sub)
	if p := sub.Properties.Tenant.Pattern; p != want {
		t.Errorf("%s: tenant pattern %s, want %s", schemas.Subscription, p, want)
	}
	// filter.scan_id may be "" (no filter), so it states only the length.
	if m := sub.Properties.Filter.Properties.ScanID.MaxLength; m != MaxTokenLen {
		t.Errorf("%s: filter.scan_id maxLength %v, want %d", schemas.Subscription, m, MaxTokenLen)
	}
	for _, name := range []string{schemas.ScanStarted, schemas.ScanFinished, schemas.Finding} {
		var data struct {
			Properties struct {
				ScanID rule `json:"scan_id"`
			} `json:"properties"`
		}
		read(name, &data)
		if p := data.Properties.ScanID.Pattern; p != want {
			t.Errorf("%s: scan_id pattern %s, want %s", name, p, want)
		}
	}
}

func TestTokenLength(t *testing.T) {
	if !ValidToken(strings.Repeat("a", MaxTokenLen)) || ValidToken(strings.Repeat("a", MaxTokenLen+1)) || ValidToken("") {
		t.Errorf("ValidToken does not take 1 to %d characters", MaxTokenLen)
	}
	long := strings.Repeat("a", MaxTokenLen+1)
	if p := BadToken(long); !strings.Contains(p, fmt.Sprintf(" must be 1-%d characters", MaxTokenLen)) {
		t.Errorf("BadToken(%d characters) = %q", MaxTokenLen+1, p)
	}
	if p := BadToken("acme"); p != "" {
		t.Errorf("BadToken(acme) = %q, want none", p)
	}
	e := New(long, "//s", TypeScanStarted, "s1", []byte(`{"scan_id":"s1","target":"t"}`))
	err := Validate(Address{long, "s1", "started"}, &e)
	if err == nil || !strings.Contains(err.Error(), "tenant: "+BadToken(long)) {
		t.Errorf("an over-long tenant: %v", err)
	}
}
