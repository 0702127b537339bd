package subscriptions

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/profiles"
	"github.com/scanwire/scanwire/schemas"
)

func TestParseNamesTheFieldAndTheFix(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown field", `{"tenant":"acme","url":"https://h.example.com","events":["scan.started"],"colour":"red"}`, "colour"},
		{"unknown event type", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"https://h.example.com","events":["scan.paused"],"profile":"standard-webhooks","secrets":[{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]}`, `subscription.events[0]: unknown event type "scan.paused"`},
		{"bad duration", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"https://h.example.com","events":["scan.started"],"profile":"standard-webhooks","retry":{"schedule":["0s"]},"secrets":[{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]}`, "subscription.retry.schedule[0]"},
		{"negative limit", `{"tenant":"acme","url":"https://h.example.com","events":["scan.started"],"limits":{"findings_per_scan":-1}}`, "limits"},
		{"url with userinfo", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"https://u:p@h.example.com","events":["scan.started"],"profile":"standard-webhooks","secrets":[{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]}`, "subscription.url: must not carry a user"},
		{"not a url", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"ftp://h.example.com","events":["scan.started"],"profile":"standard-webhooks","secrets":[{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]}`, "subscription.url"},
		{"unsigned standard", `{"id":"sub_01J0000000000000000000000A","tenant":"acme","url":"https://h.example.com","events":["scan.started"],"profile":"standard-webhooks","secrets":[]}`, "subscription.secrets: profile standard-webhooks signs every delivery"},
		{"not JSON", `{"tenant":`, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestWants(t *testing.T) {
	tests := []struct {
		patterns []string
		typ      string
		want     bool
	}{
		{[]string{"finding.*"}, "finding.high", true},
		{[]string{"finding.*"}, "finding.medium", true},
		{[]string{"finding.*"}, "scan.started", false},
		{[]string{"*"}, "webhook.test", true},
		{[]string{"scan.finished"}, "scan.finished", true},
		{[]string{"scan.finished"}, "scan.started", false},
		{[]string{"scan.*", "finding.high"}, "finding.high", true},
	}
	for _, tt := range tests {
		s := &Subscription{Events: tt.patterns}
		if got := s.Wants(tt.typ); got != tt.want {
			t.Errorf("%v wants %s = %v, want %v", tt.patterns, tt.typ, got, tt.want)
		}
	}
}

func TestLiveSecretsDropExpired(t *testing.T) {
	now := time.Now()
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	s := &Subscription{Secrets: []Secret{{Secret: "new"}, {Secret: "old", Expires: &future}, {Secret: "gone", Expires: &past}}}
	got := s.LiveSecrets(now)
	if strings.Join(got, ",") != "new,old" {
		t.Errorf("live secrets %v, want [new old]", got)
	}
}

// startKV starts a real in-process nats-server with the bucket.
func startKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	return natsxtest.KeyValue(t, natsxtest.JetStream(t), natsx.BucketSubscriptions)
}

func TestStoreAndCacheAgree(t *testing.T) {
	ctx := context.Background()
	kv := startKV(t)
	store := NewStore(kv, nil)
	cache := NewCache(kv, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = cache.Run(cctx) }()
	<-cache.Ready()

	s, err := store.Create(ctx, Subscription{Tenant: "acme", URL: "https://h.example.com/x", Events: []string{"finding.*"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.ID, "sub_") || len(s.Secrets) != 1 || !strings.HasPrefix(s.Secrets[0].Secret, "whsec_") {
		t.Fatalf("create did not fill id and secret: %+v", s)
	}
	// An operator's hand-written invalid document is ignored, not fatal.
	if _, err := kv.Put(ctx, "acme.sub_BROKEN", []byte(`{"tenant":"acme","url":"nope"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(cache.Match("acme", "finding.high", Facts{})) == 1 })
	if _, ok := cache.Get("acme", "sub_BROKEN"); ok {
		t.Error("invalid document entered the cache")
	}
	entries, err := store.List(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[1].Err == nil && entries[0].Err == nil {
		t.Errorf("list should show the valid and the invalid document: %+v", entries)
	}
	if tenant, err := store.TenantOf(ctx, s.ID); err != nil || tenant != "acme" {
		t.Errorf("TenantOf = %q, %v", tenant, err)
	}

	// Compare-and-swap: the second writer of the same revision loses.
	got, rev, err := store.Get(ctx, "acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	got.Description = "first"
	if _, err := store.Update(ctx, *got, rev); err != nil {
		t.Fatal(err)
	}
	got.Description = "second"
	if _, err := store.Update(ctx, *got, rev); !errors.Is(err, ErrConflict) {
		t.Errorf("stale update: %v, want ErrConflict", err)
	}

	if err := store.Delete(ctx, "acme", s.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return cache.Len() == 0 })
	if err := store.Delete(ctx, "acme", s.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// validSub is a document as the store writes it.
func validSub() Subscription {
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	return Subscription{
		ID:      "sub_01J0000000000000000000000A",
		Tenant:  "acme",
		URL:     "https://h.example.com/hook",
		Events:  []string{"scan.finished", "finding.*"},
		Profile: profiles.StandardWebhooks,
		Secrets: []Secret{{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Created: now}},
		Created: now,
		Updated: now,
	}
}

// fields returns err's problems as "field: message", failing the test when
// err is not a *ValidationError.
func fields(t *testing.T, err error) []string {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T), want a *ValidationError", err, err)
	}
	out := make([]string, len(ve.Fields))
	for i, f := range ve.Fields {
		out[i] = f.Field + ": " + f.Message
	}
	return out
}

// TestWriteAndReadRefuseAlike holds the store's check before a write
// (Validate) and the check of a document read back (Parse) to the same
// verdict, field and message: a document the CLI or the API stored is never
// one fan-out ignores as invalid.
func TestWriteAndReadRefuseAlike(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Subscription)
		field string // the one field refused
		msg   string // part of its message
	}{
		{"tenant one past the token length", func(s *Subscription) { s.Tenant = strings.Repeat("t", events.MaxTokenLen+1) }, "tenant", "must be 1-128 characters"},
		{"tenant with a dot", func(s *Subscription) { s.Tenant = "acme.eu" }, "tenant", `but found "acme.eu"`},
		{"300-character description", func(s *Subscription) { s.Description = strings.Repeat("d", 300) }, "description", "must be at most 256 characters long but has 300"},
		{"repeated event type", func(s *Subscription) { s.Events = []string{"scan.finished", "finding.high", "scan.finished"} }, "events", "items 0 and 2 are equal"},
		{"no event types", func(s *Subscription) { s.Events = nil }, "events", "must have at least 1 item but has 0"},
		{"event type of the wrong form", func(s *Subscription) { s.Events = []string{"scan.finished", "Scan Started"} }, "events[1]", `must be an event type`},
		{"unknown event type", func(s *Subscription) { s.Events = []string{"scan.paused"} }, "events[0]", `unknown event type "scan.paused"`},
		{"secret too short", func(s *Subscription) { s.Secrets[0].Secret = "short" }, "secrets[0].secret", "must be at least 16 characters long but has 5"},
		{"no secret for a signing profile", func(s *Subscription) { s.Secrets = nil }, "secrets", "profile standard-webhooks signs every delivery"},
		{"unknown profile", func(s *Subscription) { s.Profile = "slack" }, "profile", `but found "slack"`},
		{"no id", func(s *Subscription) { s.ID = "" }, "id", "must be a subscription id"},
		{"negative limit", func(s *Subscription) { s.Limits.FindingsPerScan = -1 }, "limits.findings_per_scan", "must be >= 0 but found -1"},
		{"min_cvss out of range", func(s *Subscription) { s.Filter.MinCVSS = 10.5 }, "filter.min_cvss", "must be <= 10 but found 10.5"},
		{"zero delay", func(s *Subscription) { s.Retry.Schedule = []string{"30s", "0s"} }, "retry.schedule[1]", `"0s" must be a positive duration`},
		{"ftp URL", func(s *Subscription) { s.URL = "ftp://h.example.com" }, "url", "must be an absolute https:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSub()
			tt.edit(&s)
			write := fields(t, s.Validate())
			if len(write) != 1 || !strings.HasPrefix(write[0], tt.field+": ") || !strings.Contains(write[0], tt.msg) {
				t.Errorf("Validate: %q, want exactly one problem, of %s, containing %q", write, tt.field, tt.msg)
			}
			doc, err := json.Marshal(&s)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(doc)
			if read := fields(t, err); !slices.Equal(read, write) {
				t.Errorf("Parse of the stored document: %q\nValidate before writing it: %q", read, write)
			}
		})
	}
}

// TestTokenLengthTenantIsSubscribable: the 100-character tenant is
// within the token length events accept, so it must be subscribable, and
// one of exactly MaxTokenLen characters too.
func TestTokenLengthTenantIsSubscribable(t *testing.T) {
	for _, n := range []int{100, events.MaxTokenLen} {
		s := validSub()
		s.Tenant = strings.Repeat("t", n)
		if !events.ValidToken(s.Tenant) {
			t.Fatalf("events refuse a %d-character tenant", n)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("Validate refuses a %d-character tenant: %v", n, err)
		}
		doc, _ := json.Marshal(&s)
		if _, err := Parse(doc); err != nil {
			t.Errorf("Parse refuses a %d-character tenant: %v", n, err)
		}
	}
}

// TestUnknownFieldRefusedAlike: a Subscription cannot carry an unknown
// field, so the door a raw document comes through on a write is Decode
// (the API's body), and on a read Parse. Both name the field the same way.
func TestUnknownFieldRefusedAlike(t *testing.T) {
	s := validSub()
	doc, _ := json.Marshal(&s)
	doc = append(doc[:len(doc)-1], []byte(`,"colour":"red","filter":{"scan_id":"s1","severity":"high"}}`)...)
	_, derr := Decode(doc)
	_, perr := Parse(doc)
	want := []string{`colour: unknown property "colour"`, `filter.severity: unknown property "severity"`}
	if got := fields(t, derr); !slices.Equal(got, want) {
		t.Errorf("Decode: %q, want %q", got, want)
	}
	if got := fields(t, perr); !slices.Equal(got, want) {
		t.Errorf("Parse: %q, want %q", got, want)
	}
}

func TestValidDocumentPassesWriteAndRead(t *testing.T) {
	s := validSub()
	s.Description = strings.Repeat("d", 256)
	s.Filter = Filter{Targets: []string{"*.example.com"}, ScanID: strings.Repeat("s", events.MaxTokenLen), MinCVSS: 6}
	s.Retry.Schedule = []string{"30s", "5m"}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	doc, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(doc)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if again, _ := json.Marshal(got); string(again) != string(doc) {
		t.Errorf("Parse changed the document:\n got %s\nwant %s", again, doc)
	}
	if d, err := Decode(doc); err != nil || d.Description != s.Description {
		t.Errorf("Decode: %+v, %v", d, err)
	}
}

// TestUnsignedWithoutSecrets: a profile that may deliver unsigned takes a
// document without secrets, written and read back alike (stored as [],
// which the schema wants, not null).
func TestUnsignedWithoutSecrets(t *testing.T) {
	s := validSub()
	s.Profile, s.Secrets = profiles.PlexTrac, nil
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	doc, _ := json.Marshal(&s)
	if !strings.Contains(string(doc), `"secrets":[]`) {
		t.Errorf("nil secrets stored as %s", doc)
	}
	if _, err := Parse(doc); err != nil {
		t.Errorf("Parse: %v", err)
	}
	raw := strings.Replace(string(doc), `"secrets":[],`, "", 1)
	if _, err := Parse([]byte(raw)); err != nil {
		t.Errorf("Parse of a document without the secrets key: %v", err)
	}
}

// TestEveryProblemOnce: several problems are all reported, each once, under
// the field-path convention of the meaning checks, even where schema and
// meaning both have a rule for a field.
func TestEveryProblemOnce(t *testing.T) {
	s := validSub()
	s.Tenant = "acme eu"
	s.Events = []string{"scan.paused", "scan.paused"}
	s.Secrets[0].Secret = "short"
	s.URL = "ftp://h.example.com"
	got := fields(t, s.Validate())
	wantFields := []string{"events", "secrets[0].secret", "tenant", "events[0]", "events[1]", "url"}
	if len(got) != len(wantFields) {
		t.Fatalf("problems %q, want one for each of %v", got, wantFields)
	}
	for _, f := range wantFields {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, f+": ") }) {
			t.Errorf("no problem of %s in %q", f, got)
		}
	}
}

func TestFieldPath(t *testing.T) {
	doc := map[string]any{"events": []any{"a", "b"}, "secrets": []any{map[string]any{"secret": "x"}}, "0": map[string]any{"a/b": 1}}
	for pointer, want := range map[string]string{
		"":                  "(document)",
		"/tenant":           "tenant",
		"/events/1":         "events[1]",
		"/secrets/0/secret": "secrets[0].secret",
		"/filter/targets/2": "filter.targets.2", // no such array: a member
		"/0/a~1b":           "0.a/b",
	} {
		if got := fieldPath(doc, pointer); got != want {
			t.Errorf("fieldPath(%q) = %q, want %q", pointer, got, want)
		}
	}
}

// TestSchemaProfilesAreTheProfiles: the schema, not Go, refuses an unknown
// profile, so its list must be the registry's.
func TestSchemaProfilesAreTheProfiles(t *testing.T) {
	raw, ok := schemas.Source(schemas.Subscription)
	if !ok {
		t.Fatal("no subscription schema")
	}
	var doc struct {
		Properties struct {
			Profile struct {
				Enum []string `json:"enum"`
			} `json:"profile"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(slices.Values(doc.Properties.Profile.Enum))
	if !slices.Equal(got, profiles.Names()) {
		t.Errorf("schema profiles %v, registry %v", got, profiles.Names())
	}
}

// A document read back is held to the schema once, as stored, and the
// fields its writer left out are still refused: Parse of a hand-written
// document without id or profile names both.
func TestParseRefusesWhatTheStoreWouldWrite(t *testing.T) {
	_, err := Parse([]byte(`{"tenant":"acme","url":"https://h.example.com/hook","events":["scan.started"]}`))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Parse = %v, want a ValidationError", err)
	}
	fields := map[string]bool{}
	for _, f := range ve.Fields {
		fields[f.Field] = true
	}
	if !fields["id"] || !fields["profile"] {
		t.Errorf("problems %v, want id and profile among them", ve)
	}
}
