// Package events defines scanwire's CloudEvents: their types, the NATS
// subjects they travel on, how they are encoded on NATS, and the rules an
// event must pass before anyone receives it.
package events

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/oklog/ulid/v2"
)

// Event types (the CloudEvents "type" attribute; docs/design.md, Events).
const (
	TypeScanStarted   = "scan.started"
	TypeScanFinished  = "scan.finished"
	TypeFindingHigh   = "finding.high"
	TypeFindingMedium = "finding.medium"
	TypeWebhookTest   = "webhook.test"
)

// TenantExtension is the CloudEvents extension attribute that names the
// tenant an event belongs to.
const TenantExtension = "tenant"

// kinds maps an event type to the last part of its subject.
var kinds = map[string]string{
	TypeScanStarted:   "started",
	TypeScanFinished:  "finished",
	TypeFindingHigh:   "finding.high",
	TypeFindingMedium: "finding.medium",
	TypeWebhookTest:   "webhook.test",
}

// Types returns every known event type.
func Types() []string {
	return []string{TypeScanStarted, TypeScanFinished, TypeFindingHigh, TypeFindingMedium, TypeWebhookTest}
}

// Known reports whether t is one of the event types above.
func Known(t string) bool {
	_, ok := kinds[t]
	return ok
}

// IsFinding reports whether t is a finding event, the kind limits count.
func IsFinding(t string) bool { return t == TypeFindingHigh || t == TypeFindingMedium }

// MaxTokenLen is the longest tenant or scan id, in characters. Both
// become tokens of NATS subjects (scans.<tenant>.<scan_id>.<kind>) and of
// KV keys, and a tenant accepted here must be one a subscription and a
// tenant record can name. The JSON schemas cannot import Go, so they state
// the same number in their tenant and scan id rules; a test holds them to
// this constant. Event ids, which are not subject tokens, are held to the
// same length.
const MaxTokenLen = 128

var tokenRE = regexp.MustCompile(fmt.Sprintf(`^[A-Za-z0-9_-]{1,%d}$`, MaxTokenLen))

// ValidToken reports whether s may be used as one token of a NATS subject.
func ValidToken(s string) bool { return tokenRE.MatchString(s) }

// BadToken says what is wrong with s as a subject token, for a message
// about a tenant or scan id: `"a.b" must be 1-128 characters of ...`. It
// returns "" for a valid token.
func BadToken(s string) string {
	if ValidToken(s) {
		return ""
	}
	return fmt.Sprintf("%q must be 1-%d characters of A-Z, a-z, 0-9, '_' or '-'", s, MaxTokenLen)
}

// CheckToken returns a user-facing error when s is not a valid subject token.
func CheckToken(field, s string) error {
	if p := BadToken(s); p != "" {
		return fmt.Errorf("%s: %s (it becomes a NATS subject token)", field, p)
	}
	return nil
}

// Address is where an event lives in SCAN_EVENTS:
// scans.<tenant>.<scan_id>.<kind>.
type Address struct {
	Tenant string
	ScanID string
	Kind   string
}

// Subject returns the subject an event of this type is published on.
func Subject(tenant, scanID, eventType string) (string, error) {
	if err := CheckToken("tenant", tenant); err != nil {
		return "", err
	}
	if err := CheckToken("subject (scan id)", scanID); err != nil {
		return "", err
	}
	kind, ok := kinds[eventType]
	if !ok {
		return "", fmt.Errorf("type: unknown event type %q; use one of %s", eventType, strings.Join(Types(), ", "))
	}
	return "scans." + tenant + "." + scanID + "." + kind, nil
}

// ParseSubject splits a SCAN_EVENTS subject into its parts.
func ParseSubject(subject string) (Address, error) {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) != 4 || parts[0] != "scans" {
		return Address{}, fmt.Errorf("nats subject %q: want scans.<tenant>.<scan_id>.<kind>", subject)
	}
	a := Address{Tenant: parts[1], ScanID: parts[2], Kind: parts[3]}
	if !ValidToken(a.Tenant) || !ValidToken(a.ScanID) {
		return a, fmt.Errorf("nats subject %q: tenant and scan id must be tokens of A-Z, a-z, 0-9, '_' or '-'", subject)
	}
	return a, nil
}

// New builds an event with a fresh id and the current time. data is the
// event's JSON data, stored as is.
func New(tenant, source, eventType, scanID string, data []byte) event.Event {
	e := event.New()
	e.SetID(NewID())
	e.SetSource(source)
	e.SetType(eventType)
	e.SetSubject(scanID)
	e.SetTime(time.Now().UTC())
	e.SetExtension(TenantExtension, tenant)
	e.SetDataContentType(event.ApplicationJSON)
	e.DataEncoded = data
	return e
}

// Key identifies an event across tenants: CloudEvents ids are unique per
// source only, and two tenants (or two scanners of one tenant) may send the
// same id. It is "ev_" + unpadded base32 of the first 16 bytes of
// SHA-256(tenant NUL source NUL id), a valid subject token. It is the
// event's dedupe id in SCAN_EVENTS, and every id derived from an event
// (webhook-id, job, retry, dead letter, limit record entry) starts from it,
// so an exact repeat is a duplicate and nothing else is.
func Key(tenant, source, id string) string {
	sum := sha256.Sum256([]byte(tenant + "\x00" + source + "\x00" + id))
	return "ev_" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16])
}

// KeyOf is Key of e's tenant extension, source and id.
func KeyOf(e *event.Event) string { return Key(Tenant(e), e.Source(), e.ID()) }

// NewID returns a fresh, sortable event id.
func NewID() string { return "evt_" + ulid.Make().String() }

// Tenant returns the event's tenant extension, or "".
func Tenant(e *event.Event) string {
	v, ok := e.Extensions()[TenantExtension]
	if !ok {
		return ""
	}
	s, _ := v.(string)
	return s
}

// Headers of a message in REJECTED. The original headers and body follow
// unchanged, so a fixed consumer (or a person) can read back exactly what
// the scanner sent.
const (
	HeaderRejectReason    = "Scanwire-Reject-Reason"
	HeaderRejectCode      = "Scanwire-Reject-Code" // a RejectReason's String
	HeaderOriginalSubject = "Scanwire-Original-Subject"
	HeaderOriginalSeq     = "Scanwire-Original-Seq"
	// HeaderOmitted says what of the original a rejected copy leaves out
	// because it would not fit beside the reason (the original stays in
	// SCAN_EVENTS under HeaderOriginalSeq for its retention).
	HeaderOmitted = "Scanwire-Omitted"
)

// RejectedSubject is where an invalid event of tenant is kept.
func RejectedSubject(tenant string) string { return "rejected." + tenant }

// KindOf returns the subject kind of an event type.
func KindOf(eventType string) (string, bool) {
	k, ok := kinds[eventType]
	return k, ok
}
