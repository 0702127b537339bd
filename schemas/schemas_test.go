package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

var allNames = []string{ScanStarted, ScanFinished, Finding, WebhookTest, Subscription}

// Every file is a well-formed 2020-12 schema with the $id the compiler
// registers it under, and every object in it refuses unknown fields: the
// contract says unknown fields are an error, and one forgotten nested
// object would let typos through silently.
func TestEverySchemaCompiles(t *testing.T) {
	if got := Names(); !slices.Equal(got, slices.Sorted(slices.Values(allNames))) {
		t.Fatalf("Names() = %v, want %v", got, allNames)
	}
	if _, err := compile(); err != nil {
		t.Fatal(err)
	}
	for _, name := range allNames {
		t.Run(name, func(t *testing.T) {
			src, ok := Source(name)
			if !ok {
				t.Fatal("no source")
			}
			var doc map[string]any
			if err := json.Unmarshal(src, &doc); err != nil {
				t.Fatal(err)
			}
			if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" || doc["$id"] != baseURL+name {
				t.Errorf("$schema %v, $id %v", doc["$schema"], doc["$id"])
			}
			if doc["title"] == nil || doc["description"] == nil {
				t.Error("title or description missing")
			}
			closedObjects(t, "", doc)
		})
	}
	if _, ok := Source("schemas.go"); ok {
		t.Error("Source serves a file that is not a schema")
	}
}

func closedObjects(t *testing.T, at string, v any) {
	switch v := v.(type) {
	case map[string]any:
		if v["type"] == "object" && v["additionalProperties"] != false {
			t.Errorf("%s: object without additionalProperties false", cmpOr(at, "/"))
		}
		for k, c := range v {
			closedObjects(t, at+"/"+k, c)
		}
	case []any:
		for _, c := range v {
			closedObjects(t, at+"/*", c)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

const (
	goodFinding  = `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":7.5,"url":"https://t/a","tags":["new"],"cwe":"CWE-79","evidence":"<script>"}`
	goodFinished = `{"scan_id":"s1","target":"t","status":"completed","findings_count":3,"summary":{"risk_rating":"high","summary":"s","attack_chains":["a then b"]},"tier":"pro","credits_used":1.5}`
	goodSub      = `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"https://h.example.com/hook","events":["finding.high","scan.*"],
		"filter":{"targets":["*.example.com"],"scan_id":"","min_cvss":0},"limits":{"findings_per_scan":100,"findings_per_type":10},
		"retry":{"schedule":["5s","1m30s","1.5h","250ms"]},"profile":"standard-webhooks",
		"secrets":[{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw","created":"2026-01-02T15:04:05Z","expires":null}],
		"include_customer_events":false,"disabled":false,"disabled_reason":"","created":"2026-01-02T15:04:05Z","updated":"2026-01-02T15:04:05.5+02:00","description":"d"}`
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name, schema, doc string
		pointer, message  string // message "": the document is valid
	}{
		{"valid started", ScanStarted, `{"scan_id":"s-1_A","target":"t","scan_type":"full","tier":"pro","callback_url":"https://x.example.com/cb"}`, "", ""},
		{"valid finished", ScanFinished, goodFinished, "", ""},
		{"valid failed scan", ScanFinished, `{"scan_id":"s1","target":"t","status":"failed","error":"Credit budget exceeded"}`, "", ""},
		{"valid finding", Finding, goodFinding, "", ""},
		{"valid webhook test", WebhookTest, `{"subscription_id":"sub_1","message":"hi","company":"Acme"}`, "", ""},
		{"empty webhook test", WebhookTest, `{}`, "", ""},
		{"valid subscription", Subscription, goodSub, "", ""},

		{"missing required", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","cvss_score":7}`, "/title", "missing required property"},
		{"wrong type", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":"high"}`, "/cvss_score", "must be a number but found a string"},
		{"cvss out of range", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":11}`, "/cvss_score", "must be <= 10 but found 11"},
		{"bad status", ScanFinished, `{"scan_id":"s1","target":"t","status":"done"}`, "/status", `must be one of "completed", "failed", "cancelled" but found "done"`},
		{"unknown property", ScanStarted, `{"scan_id":"s1","target":"t","colour":"red"}`, "/colour", `unknown property "colour"`},
		{"nested unknown property", ScanFinished, `{"scan_id":"s1","target":"t","status":"failed","summary":{"colour":1}}`, "/summary/colour", `unknown property "colour"`},
		{"escaped pointer", WebhookTest, `{"a/b~c":1}`, "/a~1b~0c", `unknown property "a/b~c"`},
		{"scan id with a dot", ScanStarted, `{"scan_id":"s.1","target":"t"}`, "/scan_id", `must be 1-128 characters of A-Z, a-z, 0-9, '_' or '-' but found "s.1"`},
		{"callback not http", ScanStarted, `{"scan_id":"s1","target":"t","callback_url":"ftp://x"}`, "/callback_url", "must be an http or https URL"},
		{"nested pointer", ScanFinished, `{"scan_id":"s1","target":"t","status":"completed","summary":{"attack_chains":[1]}}`, "/summary/attack_chains/0", "must be a string but found a number"},
		{"bad cwe", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":7,"cwe":"79"}`, "/cwe", "must be a CWE id such as CWE-79"},
		{"finding type with a space", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"x ss","title":"x","cvss_score":7}`, "/type", "must be letters, digits"},
		{"negative findings count", ScanFinished, `{"scan_id":"s1","target":"t","status":"completed","findings_count":-1}`, "/findings_count", "must be >= 0 but found -1"},
		{"fractional findings count", ScanFinished, `{"scan_id":"s1","target":"t","status":"completed","findings_count":1.5}`, "/findings_count", "must be an integer but found a number"},
		{"secret too short", Subscription, `{"tenant":"acme","url":"https://h","events":["scan.started"],"secrets":[{"secret":"short"}]}`, "/secrets/0/secret", "must be at least 16 characters long but has 5"},
		{"secret missing", Subscription, `{"tenant":"acme","url":"https://h","events":["scan.started"],"secrets":[{}]}`, "/secrets/0/secret", "missing required property"},
		{"bad date", Subscription, `{"tenant":"acme","url":"https://h","events":["scan.started"],"created":"yesterday"}`, "/created", "RFC 3339 date-time"},
		{"bad expiry", Subscription, `{"tenant":"acme","url":"https://h","events":["scan.started"],"secrets":[{"secret":"0123456789abcdef","expires":"soon"}]}`, "/secrets/0/expires", "RFC 3339"},
		{"no events", Subscription, `{"tenant":"acme","url":"https://h","events":[]}`, "/events", "must have at least 1 item but has 0"},
		{"repeated event", Subscription, `{"tenant":"acme","url":"https://h","events":["scan.started","scan.started"]}`, "/events", "items 0 and 1 are equal"},
		{"bad event pattern", Subscription, `{"tenant":"acme","url":"https://h","events":["Scan Started"]}`, "/events/0", "must be an event type such as finding.high"},
		{"bad duration", Subscription, `{"tenant":"acme","url":"https://h","events":["*"],"retry":{"schedule":["5 minutes"]}}`, "/retry/schedule/0", "must be a duration such as 30s, 5m, 2h"},
		{"unknown profile", Subscription, `{"tenant":"acme","url":"https://h","events":["*"],"profile":"slack"}`, "/profile", `but found "slack"`},
		{"negative limit", Subscription, `{"tenant":"acme","url":"https://h","events":["*"],"limits":{"findings_per_type":-1}}`, "/limits/findings_per_type", "must be >= 0"},
		{"min_cvss out of range", Subscription, `{"tenant":"acme","url":"https://h","events":["*"],"filter":{"min_cvss":10.5}}`, "/filter/min_cvss", "must be <= 10 but found 10.5"},
		{"bad subscription id", Subscription, `{"id":"sub_lowercase","tenant":"acme","url":"https://h","events":["*"]}`, "/id", "must be a subscription id"},
		{"huge exponent", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":1e10000000}`, "/cvss_score", "must be a number that fits a 64-bit float"},
		{"float64 overflow", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":-1e400}`, "/cvss_score", "but found -1e400"},
		{"tiny exponent", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":1e-999999}`, "/cvss_score", "exponent within ±400"},
		{"endless integer", ScanFinished, `{"scan_id":"s1","target":"t","status":"failed","findings_count":` + strings.Repeat("9", 101) + `}`, "/findings_count", "at most 100 characters"},
		{"huge number in an array", Subscription, `{"tenant":"acme","url":"https://h","events":[1e999999,1e999999]}`, "/events/1", "fits a 64-bit float"},
		{"small exponent is fine", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","title":"x","cvss_score":75e-1}`, "", ""},
		{"not an object", ScanStarted, `["s1"]`, "", "must be an object but found an array"},
		{"invalid JSON", Finding, `{"scan_id":`, "", "not valid JSON: "},
		{"syntax error", Finding, `{"scan_id" "s1"}`, "", "not valid JSON: invalid character"},
		{"empty input", Finding, ``, "", "not valid JSON: empty document"},
		{"trailing data", Finding, `{} {}`, "", "not valid JSON: "},
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
			if se.Schema != tt.schema {
				t.Errorf("Schema = %q, want %q", se.Schema, tt.schema)
			}
			if strings.HasPrefix(tt.message, "not valid JSON") && len(se.Violations) != 1 {
				t.Errorf("invalid JSON gave %d violations, want 1", len(se.Violations))
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

// Error() is what lands in REJECTED and in API responses, so its exact
// shape is pinned: sorted by pointer, root as "/", "; " between entries.
func TestErrorString(t *testing.T) {
	tests := []struct{ name, schema, doc, want string }{
		{"several at once", Finding, `{"scan_id":"s1","target":"t","finding_id":"f","type":"xss","cvss_score":11.5}`,
			`/cvss_score: must be <= 10 but found 11.5; /title: missing required property`},
		{"root", Finding, `"x"`, `/: must be an object but found a string`},
		{"two unknown fields", WebhookTest, `{"b":1,"a":2}`, `/a: unknown property "a"; /b: unknown property "b"`},
		{"long value is cut", ScanStarted, `{"scan_id":"` + strings.Repeat("é", 100) + `","target":"t"}`,
			`/scan_id: must be 1-128 characters of A-Z, a-z, 0-9, '_' or '-' but found "` + strings.Repeat("é", 64) + `…"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.schema, []byte(tt.doc))
			if err == nil || err.Error() != tt.want {
				t.Errorf("got  %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestViolationsSortedAndUnique(t *testing.T) {
	err := Validate(Subscription, []byte(`{"url":"","events":["A","A"],"colour":1,"secrets":[{"secret":"x"},{"secret":"y"}]}`))
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("got %v", err)
	}
	if !slices.IsSortedFunc(se.Violations, func(a, b Violation) int { return strings.Compare(a.Pointer, b.Pointer) }) {
		t.Errorf("not sorted by pointer: %v", se)
	}
	if len(slices.Compact(slices.Clone(se.Violations))) != len(se.Violations) {
		t.Errorf("duplicates: %v", se)
	}
	for _, want := range []string{"/colour", "/events", "/events/0", "/secrets/1/secret", "/tenant", "/url"} {
		if !slices.ContainsFunc(se.Violations, func(v Violation) bool { return v.Pointer == want }) {
			t.Errorf("no violation at %s in %v", want, se)
		}
	}
}

// ValidateValue accepts what the gateway and fan-out already decoded,
// with or without UseNumber.
func TestValidateValue(t *testing.T) {
	dec := json.NewDecoder(strings.NewReader(goodFinding))
	dec.UseNumber()
	var withNumbers any
	if err := dec.Decode(&withNumbers); err != nil {
		t.Fatal(err)
	}
	var withFloats any
	if err := json.Unmarshal([]byte(goodFinished), &withFloats); err != nil {
		t.Fatal(err)
	}
	if err := ValidateValue(Finding, withNumbers); err != nil {
		t.Errorf("UseNumber value: %v", err)
	}
	if err := ValidateValue(ScanFinished, withFloats); err != nil {
		t.Errorf("float64 value: %v", err)
	}
	for _, bad := range []any{math.Inf(1), math.NaN(), json.Number("0x1p3"), json.Number("Inf")} {
		err := ValidateValue(Finding, map[string]any{"scan_id": "s1", "target": "t", "finding_id": "f", "type": "x", "title": "t", "cvss_score": bad})
		var se *Error
		if !errors.As(err, &se) || se.Violations[0].Pointer != "/cvss_score" {
			t.Errorf("cvss_score %v: got %v", bad, err)
		}
	}
	err := ValidateValue(ScanFinished, map[string]any{"scan_id": "s1", "target": "t", "status": "done"})
	var se *Error
	if !errors.As(err, &se) || len(se.Violations) != 1 || se.Violations[0].Pointer != "/status" {
		t.Errorf("got %v", err)
	}
}

func TestUnknownSchema(t *testing.T) {
	for _, err := range []error{
		Validate("nope.json", []byte(`{}`)),
		Validate("nope.json", []byte(`not json`)), // the caller's bug wins over the sender's
		ValidateValue("nope.json", map[string]any{}),
	} {
		var se *Error
		if err == nil || errors.As(err, &se) || err.Error() != `unknown schema "nope.json"` {
			t.Errorf("got %v", err)
		}
	}
}

// The compiled schemas are shared by every goroutine of fan-out and the
// gateway; run under -race.
func TestConcurrentUse(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			doc := goodFinding
			if i%2 == 1 {
				doc = strings.Replace(doc, "7.5", "11", 1)
			}
			if err := Validate(Finding, []byte(doc)); (err != nil) != (i%2 == 1) {
				t.Errorf("goroutine %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}

// Whatever the bytes, Validate answers nil or a non-empty *Error, never a
// panic.
func FuzzValidate(f *testing.F) {
	for _, seed := range []string{goodFinding, goodFinished, goodSub, `{}`, `[1,2,{"a":null}]`, "\xff\x00", `{"a/b~c":1e400}`, ``, `{"cvss_score":-0.0}`, `{"cvss_score":1e9999999}`, `{"findings_count":1e999999}`} {
		f.Add([]byte(seed))
	}
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
			if !bytes.Contains([]byte(se.Error()), []byte(": ")) {
				t.Fatalf("%s: malformed Error() %q", n, se.Error())
			}
		}
	})
}

// Every pattern in the schemas is said in words: no answer shows a
// regular expression.
func TestEveryPatternHasWords(t *testing.T) {
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`"pattern":\s*("(?:[^"\\]|\\.)*")`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			var p string
			if err := json.Unmarshal(m[1], &p); err != nil {
				t.Fatal(err)
			}
			if _, ok := patternWords[p]; !ok {
				t.Errorf("%s: pattern %s has no words in patternWords", f, p)
			}
		}
	}
}
