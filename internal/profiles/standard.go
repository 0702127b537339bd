package profiles

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/scanwire/scanwire/internal/jsonx"
	"github.com/scanwire/scanwire/internal/signing"
)

// standard is the Standard Webhooks 1.0 profile: the structured CloudEvent
// as body, webhook-id / webhook-timestamp / webhook-signature headers, one
// signature per live secret so that receivers keep verifying during a
// secret rotation.
type standard struct{}

func (standard) Name() string { return StandardWebhooks }

func (standard) Accepts(string) bool { return true }

func (standard) Render(d Delivery) (Request, error) {
	// Jobs stored before fan-out used events.Structured (and replays of
	// their dead letters) hold json.Marshal's \u003c escapes: the body is
	// sent, and signed, without them.
	body := jsonx.UnescapeHTML(d.Structured)
	ts := d.Now.Unix()
	sigs := make([]string, 0, len(d.Secrets))
	for _, s := range d.Secrets {
		key, err := signing.StandardKey(s)
		if err != nil {
			return Request{}, fmt.Errorf("standard-webhooks: %w", err)
		}
		sigs = append(sigs, signing.StandardSignature(key, d.WebhookID, ts, body))
	}
	h := http.Header{}
	h.Set("Content-Type", event.ApplicationCloudEventsJSON+"; charset=utf-8")
	h.Set("Webhook-Id", d.WebhookID)
	h.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	if len(sigs) > 0 {
		h.Set("Webhook-Signature", strings.Join(sigs, " "))
	}
	h.Set("User-Agent", d.UserAgent)
	return Request{Header: h, Body: body}, nil
}

// DefaultSchedule is the Standard Webhooks retry schedule after the first
// attempt (5s, 5m, 30m, 2h, 5h, 10h, 10h), stretched by two more tries
// (20h, 24h) so that a receiver down over a weekend still gets its events:
// about three days in all, jittered by the delivery service.
func (standard) DefaultSchedule() []time.Duration {
	return []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour,
		10 * time.Hour, 10 * time.Hour, 20 * time.Hour, 24 * time.Hour}
}

func (standard) CheckSecret(s string) error {
	_, err := signing.StandardKey(s)
	return err
}

func (standard) AllowsUnsigned() bool { return false }
