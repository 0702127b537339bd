package profiles

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/scanwire/scanwire/internal/jsonx"
	"github.com/scanwire/scanwire/internal/signing"
)

// xsignature is the beta security-webhooks platform's document:
// {"event", "payload", "timestamp"} as the body, X-Webhook-Event-Id as the
// idempotency key, X-Timestamp, and X-Signature: hex HMAC-SHA256 of the
// whole body (which holds the timestamp too, against replays).
type xsignature struct{}

func (xsignature) Name() string                  { return XSignature }
func (xsignature) Accepts(eventType string) bool { return true }

func (xsignature) Render(d Delivery) (Request, error) {
	if len(d.Secrets) == 0 {
		return Request{}, fmt.Errorf("x-signature signs every delivery; the secret is missing")
	}
	name, payload := d.Event.Type(), json.RawMessage(d.Event.Data())
	if name == "webhook.test" {
		// The document's test event and its payload.
		name = "test.webhook-event"
		payload, _ = jsonx.Marshal(map[string]string{"company": tenantOf(d)})
	}
	ts := d.Now.Unix()
	body, err := marshal(struct {
		Event     string          `json:"event"`
		Payload   json.RawMessage `json:"payload"`
		Timestamp int64           `json:"timestamp"`
	}{name, payload, ts})
	if err != nil {
		return Request{}, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", d.UserAgent)
	h.Set("X-Webhook-Event-Id", d.WebhookID)
	h.Set("X-Timestamp", strconv.FormatInt(ts, 10))
	h.Set("X-Signature", signing.HexHMAC([]byte(d.Secrets[0]), body))
	return Request{Header: h, Body: body}, nil
}

// DefaultSchedule: "addMinutes(2 ** $retries), with a maximum of six
// attempts": 2, 4, 8, 16 and 32 minutes after attempts one to five.
func (xsignature) DefaultSchedule() []time.Duration {
	return []time.Duration{2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute}
}

func (xsignature) CheckSecret(s string) error { return literalSecret(s) }
func (xsignature) AllowsUnsigned() bool       { return false }
