// Package profiles renders a delivery job into the HTTP request one
// receiver dialect expects: body shape, event names, headers and signature.
// Each profile follows one product's public webhook document byte for byte
// (see docs/design.md, Profiles).
package profiles

import (
	"net/http"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/scanwire/scanwire/internal/jsonx"
)

// Profile names: the values of a subscription's "profile" field.
const (
	StandardWebhooks = "standard-webhooks"
	Pwnkemon         = "pwnkemon"
	PlexTrac         = "plextrac"
	XSignature       = "x-signature"
	CG               = "cg"
	Detectify        = "detectify"
)

// Delivery is what a profile renders: one event for one subscriber.
type Delivery struct {
	// WebhookID is the receiver's idempotency key; the same on every attempt.
	WebhookID string
	// Event is the CloudEvent being delivered.
	Event *event.Event
	// Structured is Event in structured JSON mode, as fan-out stored it
	// (events.Structured; older versions stored json.Marshal's form).
	Structured []byte
	// Secrets are the live secrets, newest first. Empty means unsigned,
	// which only profiles whose document allows it accept.
	Secrets []string
	// Now is the attempt's time; signatures and timestamps use it, so every
	// attempt is signed afresh.
	Now time.Time
	// UserAgent is sent unless the profile's document names its own.
	UserAgent string
}

// Request is a rendered webhook: the body and the headers to send with it.
type Request struct {
	Header http.Header
	Body   []byte
}

// Profile is one receiver dialect.
type Profile interface {
	// Name is the value of the subscription's "profile" field.
	Name() string
	// Accepts reports whether the profile can render events of this type.
	Accepts(eventType string) bool
	// Render builds the request for one attempt. It must not change d.
	Render(d Delivery) (Request, error)
	// DefaultSchedule is the retry schedule of the profile's document:
	// the delay after the first failed attempt, then after the second...
	DefaultSchedule() []time.Duration
	// CheckSecret tells whether s can sign for this profile, with an error
	// that says how to fix it.
	CheckSecret(s string) error
	// AllowsUnsigned reports whether the document allows deliveries
	// without a signature (a subscription with no secrets).
	AllowsUnsigned() bool
}

// registry lists every profile. A new dialect is one file and one line here.
var registry = map[string]Profile{
	StandardWebhooks: standard{},
	Pwnkemon:         pwnkemon{},
	PlexTrac:         plextrac{},
	XSignature:       xsignature{},
	CG:               cg{},
	Detectify:        detectify{},
}

// Lookup returns the profile called name.
func Lookup(name string) (Profile, bool) {
	p, ok := registry[name]
	return p, ok
}

// Names returns the names of every profile, sorted.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// marshal encodes a body. Bodies are never HTML-escaped (docs/design.md,
// Profiles): jsonx.Marshal writes no \u003c itself, and UnescapeHTML
// undoes the ones event data brings along in a json.RawMessage (a Go
// scanner's json.Marshal writes them), so "<script> & x" reaches the
// receiver as itself whichever profile it uses.
func marshal(v any) ([]byte, error) {
	b, err := jsonx.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonx.UnescapeHTML(b), nil
}

// tenantOf is the tenant the event came from.
func tenantOf(d Delivery) string {
	t, _ := d.Event.Extensions()["tenant"].(string)
	return t
}
