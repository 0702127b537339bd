package profiles

import (
	"fmt"
	"net/http"
	"time"

	"github.com/scanwire/scanwire/internal/signing"
)

// plextrac is the PlexTrac document: the event as JSON, written exactly as
// JSON.stringify writes it, and x-authorization-hmac-256: hex HMAC-SHA256
// of that body. PlexTrac's receivers re-serialise the parsed body before
// checking, so the body must be a fixed point of parse-then-stringify:
// no \u003c for <, numbers as JavaScript prints them, key order kept.
type plextrac struct{}

func (plextrac) Name() string                  { return PlexTrac }
func (plextrac) Accepts(eventType string) bool { return true }

func (plextrac) Render(d Delivery) (Request, error) {
	data, err := parseOrdered(d.Event.Data())
	if err != nil {
		return Request{}, fmt.Errorf("event data: %w", err)
	}
	body := jsStringify(object{
		{"event", d.Event.Type()},
		{"id", d.WebhookID},
		{"tenant", tenantOf(d)},
		{"timestamp", d.Now.UTC().Format(time.RFC3339)},
		{"data", data},
	})
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", d.UserAgent)
	if len(d.Secrets) > 0 {
		h.Set("x-authorization-hmac-256", signing.HexHMAC([]byte(d.Secrets[0]), body))
	}
	return Request{Header: h, Body: body}, nil
}

func (plextrac) DefaultSchedule() []time.Duration { return standard{}.DefaultSchedule() }
func (plextrac) CheckSecret(s string) error       { return literalSecret(s) }

// AllowsUnsigned: "If a secret is provided during webhook setup, PlexTrac
// generates an HMAC-SHA256 signature": the secret is optional.
func (plextrac) AllowsUnsigned() bool { return true }
