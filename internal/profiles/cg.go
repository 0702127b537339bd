package profiles

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/scanwire/scanwire/internal/signing"
)

// cg is the scanning portal's document: the event as JSON with its event
// names (scan_started, scan_completed), the organization it concerns (for
// a partner, the customer's), and X-CG-Hook-Signature: sha256=<hex
// HMAC-SHA256 of the body>.
type cg struct{}

func (cg) Name() string                  { return CG }
func (cg) Accepts(eventType string) bool { return true }

// cgNames maps event types to the portal's event names.
var cgNames = map[string]string{
	"scan.started":   "scan_started",
	"scan.finished":  "scan_completed",
	"finding.high":   "finding_high",
	"finding.medium": "finding_medium",
	"webhook.test":   "webhook_test",
}

func (cg) Render(d Delivery) (Request, error) {
	name, ok := cgNames[d.Event.Type()]
	if !ok {
		name = strings.ReplaceAll(d.Event.Type(), ".", "_")
	}
	body, err := marshal(struct {
		Event        string          `json:"event"`
		ID           string          `json:"id"`
		Organization string          `json:"organization"`
		CreatedAt    string          `json:"created_at"`
		Data         json.RawMessage `json:"data"`
	}{name, d.WebhookID, tenantOf(d), d.Now.UTC().Format(time.RFC3339), d.Event.Data()})
	if err != nil {
		return Request{}, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", d.UserAgent)
	if len(d.Secrets) > 0 {
		h.Set("X-CG-Hook-Signature", "sha256="+signing.HexHMAC([]byte(d.Secrets[0]), body))
	}
	return Request{Header: h, Body: body}, nil
}

// DefaultSchedule: "retry delivery up to 3 times, with increasing delays".
func (cg) DefaultSchedule() []time.Duration {
	return []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute}
}

func (cg) CheckSecret(s string) error { return literalSecret(s) }

// AllowsUnsigned: "Optionally, set a webhook secret".
func (cg) AllowsUnsigned() bool { return true }
