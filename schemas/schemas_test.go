package schemas

import (
	"errors"
	"strings"
	"testing"
)

func TestEverySchemaCompiles(t *testing.T) {
	all, err := compile()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{ScanStarted, ScanFinished, Finding, WebhookTest, Subscription} {
		if all[n] == nil {
			t.Errorf("schema %s not compiled", n)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name, schema, doc string
		pointer, message  string // "" pointer and message: valid
	}{
		{"valid finding", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":7.5,"tags":["new"],"cwe":"CWE-79"}`, "", ""},
		{"valid finished", ScanFinished, `{"scan_id":"s1","target":"t","status":"failed","error":"Credit budget exceeded"}`, "", ""},
		{"valid started", ScanStarted, `{"scan_id":"s1","target":"t","callback_url":"https://x.example.com/cb"}`, "", ""},
		{"valid test", WebhookTest, `{}`, "", ""},
		{"valid subscription", Subscription, `{"tenant":"acme","url":"https://h.example.com","events":["finding.*"],"secrets":[{"secret":"0123456789abcdef","expires":null}]}`, "", ""},
		{"missing required", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","cvss_score":7}`, "/title", "missing required property"},
		{"wrong type", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":"high"}`, "/cvss_score", "number"},
		{"cvss out of range", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":11}`, "/cvss_score", "10"},
		{"bad status", ScanFinished, `{"scan_id":"s1","target":"t","status":"done"}`, "/status", "completed"},
		{"unknown property", ScanStarted, `{"scan_id":"s1","target":"t","colour":"red"}`, "", `unknown property "colour"`},
		{"scan id with a dot", ScanStarted, `{"scan_id":"s.1","target":"t"}`, "/scan_id", "pattern"},
		{"nested pointer", ScanFinished, `{"scan_id":"s1","target":"t","status":"completed","summary":{"attack_chains":[1]}}`, "/summary/attack_chains/0", "string"},
		{"secret too short", Subscription, `{"tenant":"acme","url":"https://h","events":["scan.started"],"secrets":[{"secret":"short"}]}`, "/secrets/0/secret", "16"},
		{"bad date", Subscription, `{"tenant":"acme","url":"https://h","events":["scan.started"],"created":"yesterday"}`, "/created", "date-time"},
		{"invalid JSON", Finding, `{"scan_id":`, "", "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.schema, []byte(tt.doc))
			if tt.message == "" {
				if err != nil {
					t.Fatalf("valid document refused: %v", err)
				}
				return
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not *Error", err)
			}
			for _, v := range se.Violations {
				if v.Pointer == tt.pointer && strings.Contains(v.Message, tt.message) {
					return
				}
			}
			t.Errorf("no violation at %q mentioning %q in %v", tt.pointer, tt.message, se)
		})
	}
}

func TestUnknownSchema(t *testing.T) {
	if err := Validate("nope.json", []byte(`{}`)); err == nil || !strings.Contains(err.Error(), `unknown schema "nope.json"`) {
		t.Errorf("got %v", err)
	}
}

// Whatever the bytes, Validate answers nil or a non-empty *Error, never a
// panic.
func FuzzValidate(f *testing.F) {
	f.Add([]byte(`{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":7}`))
	f.Add([]byte(`[1,2,{"a":null}]`))
	f.Add([]byte("\xff\x00"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, n := range Names() {
			err := Validate(n, doc)
			if err == nil {
				continue
			}
			var se *Error
			if !errors.As(err, &se) || len(se.Violations) == 0 {
				t.Fatalf("%s: %v is not a non-empty *Error", n, err)
			}
		}
	})
}
