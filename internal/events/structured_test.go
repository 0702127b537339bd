package events

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/jsonx"
)

const findingXSS = `{"scan_id":"s1","target":"app.example.com","finding_id":"f1","type":"xss","title":"<script> & \"q\"","cvss_score":7}`

func structuredMsg(t *testing.T, body string) *event.Event {
	t.Helper()
	h := nats.Header{}
	h.Set("content-type", event.ApplicationCloudEventsJSON)
	e, err := FromMsg(h, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Structured is sdk-go's json.Marshal(e) with no HTML escape anywhere:
// not in attributes, not in extensions, not in data, even where the
// scanner's own encoder wrote one.
func TestStructuredIsTheSDKEncodingWithoutHTMLEscapes(t *testing.T) {
	goEscaped, _ := json.Marshal(map[string]any{"scan_id": "s1", "target": "app.example.com", "finding_id": "f1", "type": "xss", "title": `<script> & "q"`, "cvss_score": 7})
	for name, data := range map[string][]byte{"data as written": []byte(findingXSS), "data from Go's json.Marshal": goEscaped} {
		t.Run(name, func(t *testing.T) {
			e := New("acme", "//scanners/zap?a=1&b=<2>", TypeFindingHigh, "s1", data)
			e.SetExtension("note", "<b> & </b>")
			got, err := Structured(&e)
			if err != nil {
				t.Fatal(err)
			}
			sdk, _ := json.Marshal(&e)
			if want := jsonx.UnescapeHTML(sdk); !bytes.Equal(got, want) {
				t.Errorf("Structured\n got %s\nwant %s", got, want)
			}
			for _, want := range []string{`"title":"<script> & \"q\""`, `"source":"//scanners/zap?a=1&b=<2>"`, `"note":"<b> & </b>"`} {
				if !bytes.Contains(got, []byte(want)) {
					t.Errorf("%s not in %s", want, got)
				}
			}
			if bytes.Contains(got, []byte(`\u00`)) {
				t.Errorf("an escape left in %s", got)
			}
		})
	}
}

// A structured event whose JSON data arrived as data_base64 is delivered
// as "data": the object its schema and every receiver's document expect,
// and the bytes validation checked.
func TestStructuredDataBase64BecomesData(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte(findingXSS))
	e := structuredMsg(t, `{"specversion":"1.0","id":"e1","source":"//s","type":"finding.high","subject":"s1","tenant":"acme",
		"datacontenttype":"application/json","data_base64":"`+b64+`"}`)
	if !e.DataBase64 {
		t.Fatal("the sdk no longer marks data_base64; revisit Structured")
	}
	addr := Address{"acme", "s1", "finding.high"}
	if err := Validate(addr, e); err != nil {
		t.Fatalf("valid event refused: %v", err)
	}
	s, err := Structured(e)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s, []byte("data_base64")) || !bytes.Contains(s, []byte(`"data":`+findingXSS)) {
		t.Errorf("data not written as JSON: %s", s)
	}
	if !e.DataBase64 {
		t.Error("Structured changed its argument")
	}
	var back event.Event
	if err := json.Unmarshal(s, &back); err != nil {
		t.Fatal(err)
	}
	if back.DataBase64 || string(back.Data()) != findingXSS || Validate(addr, &back) != nil {
		t.Errorf("delivered event differs from the validated one: %s", s)
	}
}

// Bytes that are not JSON have no other form than base64, so they stay.
func TestStructuredKeepsBase64ForOtherData(t *testing.T) {
	for _, tt := range []struct{ name, ct, data string }{
		{"not JSON", "application/json", "\x00\x01 not json"},
		{"not UTF-8", "application/json", "\"\xff\""},
		{"not a JSON type", "application/octet-stream", `{"a":1}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := event.New()
			e.SetID("e1")
			e.SetSource("//s")
			e.SetType(TypeScanStarted)
			_ = e.SetData(tt.ct, []byte(tt.data))
			e.DataBase64 = true
			s, err := Structured(&e)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(s, []byte(`"data_base64":"`+base64.StdEncoding.EncodeToString([]byte(tt.data))+`"`)) {
				t.Errorf("data_base64 lost: %s", s)
			}
		})
	}
}

// The bug: {"cvss_score":9.8,"cvss_score":6.1} passed validation on the
// last value and was delivered to receivers that may read the first.
func TestDuplicateCVSSScoreRefused(t *testing.T) {
	e := New("acme", "//s", TypeFindingHigh, "s1",
		[]byte(`{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":9.8,"cvss_score":6.1}`))
	err := Validate(Address{"acme", "s1", "finding.high"}, &e)
	var ie *InvalidError
	if !errors.As(err, &ie) || len(ie.Problems) != 1 {
		t.Fatalf("Validate = %v, want one problem", err)
	}
	if p := ie.Problems[0]; p.Field != "data" || !strings.Contains(p.Message, `key "cvss_score" appears twice`) || !strings.Contains(p.Message, "send each key once") {
		t.Errorf("problem %+v", p)
	}
}

func TestDataReadTheSameByEveryReceiver(t *testing.T) {
	const head = `{"scan_id":"s1","target":"t","status":"completed",`
	tests := []struct {
		name, data string
		field, msg string // "" when valid
	}{
		{"nested duplicate", head + `"summary":{"risk_rating":"high","risk_rating":"low"}}`, "data/summary", `key "risk_rating" appears twice`},
		{"duplicate after decoding escapes", head + `"tier":"a","\u0074ier":"b"}`, "data", `key "tier" appears twice`},
		{"not UTF-8", head + "\"error\":\"caf\xe9\"}", "data/error", "byte 62 (0xe9) is not valid UTF-8"},
		{"lone surrogate", head + `"error":"\ud800"}`, "data/error", `\ud800 at byte 59 is half of a UTF-16 surrogate pair`},
		{"surrogate pair", head + `"error":"\ud83d\ude00 é <&>"}`, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New("acme", "//s", TypeScanFinished, "s1", []byte(tt.data))
			err := Validate(Address{"acme", "s1", "finished"}, &e)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("valid data refused: %v", err)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) || len(ie.Problems) != 1 {
				t.Fatalf("Validate = %v, want one problem", err)
			}
			if p := ie.Problems[0]; p.Field != tt.field || !strings.Contains(p.Message, tt.msg) {
				t.Errorf("problem %+v, want %s: ...%s...", p, tt.field, tt.msg)
			}
		})
	}
}

func TestManyDuplicatesMakeAShortError(t *testing.T) {
	data := `{"scan_id":"s1","target":"t"` + strings.Repeat(`,"target":"t"`, 500) + `}`
	e := New("acme", "//s", TypeScanStarted, "s1", []byte(data))
	var ie *InvalidError
	if err := Validate(Address{"acme", "s1", "started"}, &e); !errors.As(err, &ie) || len(ie.Problems) != maxAmbiguities+1 {
		t.Fatalf("Validate = %v, want %d problems", err, maxAmbiguities+1)
	}
	if last := ie.Problems[maxAmbiguities]; !strings.Contains(last.Message, "490 more places") {
		t.Errorf("last problem %+v", last)
	}
}

func TestAttributesMustBeUTF8(t *testing.T) {
	h := nats.Header{}
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "//s", "ce-type": "scan.started",
		"ce-subject": "s1", "ce-tenant": "acme", "ce-note": "ok \xc3", "content-type": "application/json; charset=\"\xff\""} {
		h.Set(k, v)
	}
	e, err := FromMsg(h, []byte(`{"scan_id":"s1","target":"t"}`))
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(Address{"acme", "s1", "started"}, e)
	for _, want := range []string{"note: byte 3 (0xc3) is not valid UTF-8", "datacontenttype: byte 27 (0xff)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
}

// A ce-data header becomes an extension named "data": in structured mode
// a second "data" member, which the delivery side would read as the data.
func TestDataExtensionRefused(t *testing.T) {
	e := New("acme", "//s", TypeScanStarted, "s1", []byte(`{"scan_id":"s1","target":"t"}`))
	e.SetExtension("data", "x")
	err := Validate(Address{"acme", "s1", "started"}, &e)
	if err == nil || !strings.Contains(err.Error(), "ce-data: ") {
		t.Errorf("Validate = %v, want the ce-data extension refused", err)
	}
}

// sameJSON reports whether a and b decode to the same value.
func sameJSON(a, b []byte) bool {
	var x, y any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	return da.Decode(&x) == nil && db.Decode(&y) == nil && reflect.DeepEqual(x, y)
}

// ValidateEncoded hands back the very encoding Structured makes, so fan-out
// encodes each event once; an invalid event gets no encoding.
func TestValidateEncodedIsStructured(t *testing.T) {
	e := New("acme", "//scanners/zap", TypeFindingHigh, "s1", []byte(findingXSS))
	addr := Address{Tenant: "acme", ScanID: "s1", Kind: "finding.high"}
	got, err := ValidateEncoded(addr, &e)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Structured(&e)
	if !bytes.Equal(got, want) {
		t.Errorf("ValidateEncoded\n got %s\nwant %s", got, want)
	}
	e.SetSubject("s2") // disagrees with the subject
	if b, err := ValidateEncoded(addr, &e); err == nil || b != nil {
		t.Errorf("invalid event: %q, %v; want no encoding and the error", b, err)
	}
}
