// Package subscriptions holds the subscription document (docs/design.md), its
// validation, its store in the NATS KV bucket, and the watch-fed cache the
// services match events against.
package subscriptions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jsonx"
	"github.com/scanwire/scanwire/internal/profiles"
	"github.com/scanwire/scanwire/schemas"
)

// Default limits of the Detectify document: a noisy scan cannot flood an
// endpoint.
const (
	DefaultFindingsPerScan = 100
	DefaultFindingsPerType = 10
)

// Subscription is one subscriber's document, the value of
// subscriptions.<tenant>.<id> in the KV bucket.
type Subscription struct {
	ID                    string   `json:"id"`
	Tenant                string   `json:"tenant"`
	URL                   string   `json:"url"`
	Description           string   `json:"description,omitempty"`
	Events                []string `json:"events"`
	Filter                Filter   `json:"filter"`
	Limits                Limits   `json:"limits"`
	Retry                 Retry    `json:"retry"`
	Profile               string   `json:"profile"`
	Secrets               []Secret `json:"secrets"`
	IncludeCustomerEvents bool     `json:"include_customer_events"`
	Disabled              bool     `json:"disabled"`
	DisabledReason        string   `json:"disabled_reason"`
	// FailingSince is when the current streak of failed deliveries began;
	// nil while deliveries succeed. A streak longer than the delivery
	// service's auto-disable period disables the subscription.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	Created      time.Time  `json:"created"`
	Updated      time.Time  `json:"updated"`
}

// Filter narrows which events of the subscribed types are delivered.
type Filter struct {
	Targets []string `json:"targets,omitempty"`
	ScanID  string   `json:"scan_id,omitempty"`
	MinCVSS float64  `json:"min_cvss,omitempty"`
}

// Limits caps finding deliveries per scan; 0 means the default.
type Limits struct {
	FindingsPerScan int `json:"findings_per_scan"`
	FindingsPerType int `json:"findings_per_type"`
}

// Retry holds the retry schedule: the delays after each failed attempt.
// Empty means the profile's default.
type Retry struct {
	Schedule []string `json:"schedule,omitempty"`
}

// Secret is one signing secret. During a rotation several are live; the
// newest comes first.
type Secret struct {
	Secret  string     `json:"secret"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires"`
}

// FieldError is a user-facing validation error: the field, and what to do.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *FieldError) Error() string { return "subscription." + e.Field + ": " + e.Message }

// ValidationError lists every problem of a document.
type ValidationError struct{ Fields []*FieldError }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Error()
	}
	return strings.Join(parts, "; ")
}

// idRE is the schema's pattern of an id (schemas/subscription.json).
var idRE = regexp.MustCompile(`^sub_[0-9A-HJKMNP-TV-Z]{26}$`)

// NewID returns a fresh subscription id, sub_<ULID>.
func NewID() string { return "sub_" + ulid.Make().String() }

// Key is the KV key of a subscription.
func Key(tenant, id string) string { return tenant + "." + id }

// Parse decodes a stored or submitted document and validates it: Decode,
// then Validate. These are the same checks a write passes, so a document
// the store accepted is never refused when read back.
func Parse(doc []byte) (*Subscription, error) {
	s, err := Decode(doc)
	if err != nil {
		return nil, err
	}
	// Decode held doc, the document as stored, against the schema: what
	// is left is meaning. Not checking it twice lowers the peak of loading
	// a cache of 100,000 documents (BenchmarkMemorySubscriptions).
	if err := s.validate(false); err != nil {
		return nil, err
	}
	return s, nil
}

// Decode checks a document as written against the schema, the one check
// that sees unknown, missing or mistyped fields (a Subscription cannot
// hold them), and decodes it. It leaves meaning to Validate: a document
// submitted for creation has no id, profile or secret until the store
// fills them in.
func Decode(doc []byte) (*Subscription, error) {
	if err := schemaErrors(doc); err != nil {
		return nil, err
	}
	var s Subscription
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		// The schema passed, so what is left is a value the Go type
		// cannot hold, such as 1.0 for an integer field.
		field := "(document)"
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field = te.Field
		}
		return nil, &ValidationError{Fields: []*FieldError{{Field: field, Message: err.Error()}}}
	}
	return &s, nil
}

// Validate is the one check of a subscription: the store runs it before
// every write and Parse after every read. It holds the document as it
// will be stored against the schema (lengths, patterns, the profile's
// name, no repeated event types), then checks what the schema cannot:
// event types known, durations positive, the URL usable, secrets fit for
// the profile. Every problem is reported, each under its field ("events[1]",
// "secrets[0].secret"); where the schema already refused a field, the
// meaning checks say nothing more of it.
func (s *Subscription) Validate() error { return s.validate(true) }

// validate is Validate, with the schema check of the document as it will
// be stored or without it (for a document read back, which Decode held to
// the schema as stored).
func (s *Subscription) validate(schema bool) error {
	ve := &ValidationError{}
	if schema {
		doc, err := json.Marshal(s)
		if err != nil { // a NaN, say, which JSON cannot carry
			return &ValidationError{Fields: []*FieldError{{Field: "(document)", Message: err.Error()}}}
		}
		if err := schemaErrors(doc); err != nil {
			var sve *ValidationError
			if !errors.As(err, &sve) {
				return err
			}
			ve.Fields = sve.Fields
		}
	} else {
		// Read back, a document may lack fields its writer left out, which
		// it holds as "": the two the schema refuses then.
		if !idRE.MatchString(s.ID) {
			ve.Fields = append(ve.Fields, &FieldError{Field: "id", Message: fmt.Sprintf("%q is not a subscription id (sub_<ULID>)", s.ID)})
		}
		if _, ok := profiles.Lookup(s.Profile); !ok {
			ve.Fields = append(ve.Fields, &FieldError{Field: "profile", Message: fmt.Sprintf("unknown profile %q; use one of %s", s.Profile, strings.Join(profiles.Names(), ", "))})
		}
	}
	refused := map[string]bool{}
	for _, f := range ve.Fields {
		refused[f.Field] = true
	}
	for _, f := range s.meaning() {
		if !refused[f.Field] {
			ve.Fields = append(ve.Fields, f)
		}
	}
	if len(ve.Fields) > 0 {
		return ve
	}
	return nil
}

// MarshalJSON writes missing lists as [] rather than null: the schema
// wants arrays there, and a document without events or secrets lacks
// them rather than being malformed. The store writes this form and
// Validate checks it. "<", ">" and "&" are left unescaped; an encoder
// that wants them escaped escapes them in what this returns.
func (s Subscription) MarshalJSON() ([]byte, error) {
	type plain Subscription // the same fields without this method
	p := plain(s)
	if p.Events == nil {
		p.Events = []string{}
	}
	if p.Secrets == nil {
		p.Secrets = []Secret{}
	}
	return jsonx.Marshal(p)
}

// schemaErrors validates doc against the subscription schema and returns
// nil or a *ValidationError naming each field as Validate's meaning checks
// do.
func schemaErrors(doc []byte) error {
	err := schemas.Validate(schemas.Subscription, doc)
	if err == nil {
		return nil
	}
	var se *schemas.Error
	if !errors.As(err, &se) {
		return err
	}
	var tree any // to tell arrays from objects; invalid JSON has only the root pointer
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber() // a number too large for a float64 still decodes
	_ = dec.Decode(&tree)
	ve := &ValidationError{}
	for _, v := range se.Violations {
		ve.Fields = append(ve.Fields, &FieldError{Field: fieldPath(tree, v.Pointer), Message: v.Message})
	}
	return ve
}

// fieldPath turns a JSON pointer into doc ("/secrets/0/secret") into a
// field path ("secrets[0].secret"): array elements in brackets, object
// members after dots, the root as "(document)". The document tells an
// index from a member named by digits.
func fieldPath(doc any, pointer string) string {
	if pointer == "" {
		return "(document)"
	}
	var b strings.Builder
	at := doc
	for _, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch v := at.(type) {
		case []any:
			b.WriteString("[" + tok + "]")
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(v) {
				at = v[i]
			} else {
				at = nil
			}
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(tok)
			m, _ := v.(map[string]any)
			at = m[tok]
		}
	}
	return b.String()
}

// meaning checks what the schema cannot say. Rules the schema states (the
// id's and tenant's form, the profile's name, ranges of numbers) are not
// repeated here.
func (s *Subscription) meaning() []*FieldError {
	var out []*FieldError
	add := func(field, format string, args ...any) {
		out = append(out, &FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		add("url", "%q must be an absolute https:// URL", egress.RedactURL(s.URL)) // a URL that does not parse may still carry a password
	} else if u.User != nil {
		add("url", "must not carry a user or password; put credentials in the secret instead")
	}
	for i, t := range s.Events {
		if !validPattern(t) {
			add(fmt.Sprintf("events[%d]", i), "unknown event type %q; use one of %s, or a wildcard such as finding.*", t, strings.Join(events.Types(), ", "))
		}
	}
	for i, g := range s.Filter.Targets {
		if _, err := path.Match(g, "x"); err != nil {
			add(fmt.Sprintf("filter.targets[%d]", i), "%q is not a valid glob: %v", g, err)
		}
	}
	for i, d := range s.Retry.Schedule {
		if v, err := time.ParseDuration(d); err != nil || v <= 0 {
			add(fmt.Sprintf("retry.schedule[%d]", i), "%q must be a positive duration such as 30s, 5m or 2h", d)
		}
	}
	// An unknown profile is the schema's to report (its enum lists the
	// profiles); what a profile asks of secrets and events is checked here.
	if p, ok := profiles.Lookup(s.Profile); ok {
		if len(s.Secrets) == 0 && !p.AllowsUnsigned() {
			add("secrets", "profile %s signs every delivery; omit secrets on create and one is generated", s.Profile)
		}
		for i, sec := range s.Secrets {
			if err := p.CheckSecret(sec.Secret); err != nil {
				add(fmt.Sprintf("secrets[%d].secret", i), "%v", err)
			}
		}
		for _, t := range events.Types() {
			if t != events.TypeWebhookTest && s.Wants(t) && !p.Accepts(t) {
				add("events", "profile %s cannot deliver %s; choose the event types its document describes", s.Profile, t)
				break
			}
		}
	}
	return out
}

// validPattern reports whether p is an event type or a wildcard over
// known types ("finding.*", "*").
func validPattern(p string) bool {
	if events.Known(p) {
		return true
	}
	if !strings.Contains(p, "*") {
		return false
	}
	return slices.ContainsFunc(events.Types(), func(t string) bool { return matchType(p, t) })
}

// matchType matches an event type against a pattern where "*" stands for
// one or more dot-separated words at the end ("finding.*") or everything.
func matchType(pattern, t string) bool {
	if pattern == "*" || pattern == t {
		return true
	}
	prefix, ok := strings.CutSuffix(pattern, "*")
	return ok && strings.HasPrefix(t, prefix) && len(t) > len(prefix)
}

// Wants reports whether the subscription takes events of type t.
func (s *Subscription) Wants(t string) bool {
	return slices.ContainsFunc(s.Events, func(p string) bool { return matchType(p, t) })
}

// Facts are what filters look at in an event.
type Facts struct {
	Target string
	ScanID string
	// CVSS is the finding's score; HasCVSS is false for other events.
	CVSS    float64
	HasCVSS bool
}

// Accepts reports whether the subscription's filter lets an event with
// these facts through. filter.min_cvss applies to findings only: a scan's
// start and end are not filtered away by a severity floor.
func (s *Subscription) Accepts(f Facts) bool {
	if s.Filter.ScanID != "" && s.Filter.ScanID != f.ScanID {
		return false
	}
	if f.HasCVSS && f.CVSS < s.Filter.MinCVSS {
		return false
	}
	if len(s.Filter.Targets) == 0 {
		return true
	}
	host := strings.ToLower(f.Target)
	if u, err := url.Parse(host); err == nil && u.Host != "" {
		host = u.Hostname() // a target given as a URL is matched by its host
	}
	return slices.ContainsFunc(s.Filter.Targets, func(g string) bool {
		ok, _ := path.Match(strings.ToLower(g), host)
		return ok
	})
}

// Schedule returns the retry delays: the subscription's own, or its
// profile's default. jitter says whether to spread them (±10%), which the
// Standard Webhooks schedule asks for and a schedule given by the user or
// a product's document does not.
func (s *Subscription) Schedule() (delays []time.Duration, jitter bool) {
	if len(s.Retry.Schedule) == 0 {
		if p, ok := profiles.Lookup(s.Profile); ok {
			return p.DefaultSchedule(), s.Profile == profiles.StandardWebhooks
		}
		return nil, false
	}
	out := make([]time.Duration, 0, len(s.Retry.Schedule))
	for _, d := range s.Retry.Schedule {
		if v, err := time.ParseDuration(d); err == nil {
			out = append(out, v)
		}
	}
	return out, false
}

// LiveSecrets returns the secrets that sign at now, newest first.
func (s *Subscription) LiveSecrets(now time.Time) []string {
	live := s.liveSecrets(now)
	out := make([]string, len(live))
	for i, sec := range live {
		out[i] = sec.Secret
	}
	return out
}

// Redacted returns a copy whose secrets are hidden: what lists and logs show.
func (s *Subscription) Redacted() *Subscription {
	c := *s
	c.Secrets = make([]Secret, len(s.Secrets))
	for i, sec := range s.Secrets {
		sec.Secret = redact(sec.Secret)
		c.Secrets[i] = sec
	}
	return &c
}

func redact(secret string) string {
	if p, ok := strings.CutPrefix(secret, "whsec_"); ok && len(p) > 4 {
		return "whsec_" + p[:4] + "…"
	}
	return "…"
}
