package profiles

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/scanwire/scanwire/internal/signing"
)

// pwnkemon is the Pwnkemon scan-callback document: one POST of the
// scan's report when it ends (the reduced {scan_id, status, error} when it
// failed), X-Pwnkemon-Signature: t=<ts>,v1=<hex HMAC-SHA256 of
// "<ts>.<raw body>">, the secret used as its literal bytes.
type pwnkemon struct{}

func (pwnkemon) Name() string { return Pwnkemon }

// Accepts: callbacks fire once per scan, on its end.
func (pwnkemon) Accepts(eventType string) bool { return eventType == "scan.finished" }

// pwnkemonReport is the report payload, fields in the document's order.
type pwnkemonReport struct {
	ScanID        string          `json:"scan_id"`
	Status        string          `json:"status"`
	Target        string          `json:"target,omitempty"`
	Tier          string          `json:"tier,omitempty"`
	CreditsUsed   *float64        `json:"credits_used,omitempty"`
	FindingsCount *int            `json:"findings_count,omitempty"`
	Summary       json.RawMessage `json:"summary,omitempty"`
	Error         string          `json:"error,omitempty"`
}

func (pwnkemon) Render(d Delivery) (Request, error) {
	if d.Event.Type() != "scan.finished" {
		return Request{}, fmt.Errorf("pwnkemon delivers scan.finished only, not %s", d.Event.Type())
	}
	if len(d.Secrets) == 0 {
		return Request{}, fmt.Errorf("pwnkemon signs every delivery; the secret is missing")
	}
	var r pwnkemonReport
	if err := json.Unmarshal(d.Event.Data(), &r); err != nil {
		return Request{}, fmt.Errorf("scan.finished data: %w", err)
	}
	if r.Status == "failed" {
		// The document's reduced failure payload: three fields, no more.
		r = pwnkemonReport{ScanID: r.ScanID, Status: r.Status, Error: r.Error}
	} else {
		r.Error = ""
	}
	body, err := marshal(r)
	if err != nil {
		return Request{}, err
	}
	ts := strconv.FormatInt(d.Now.Unix(), 10)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "Pwnkemon/1.0")
	h.Set("X-Pwnkemon-Webhook-Timestamp", ts)
	h.Set("X-Pwnkemon-Signature", "t="+ts+",v1="+signing.HexHMAC([]byte(d.Secrets[0]), []byte(ts), []byte("."), body))
	return Request{Header: h, Body: body}, nil
}

// DefaultSchedule: "retries up to three times with exponential backoff
// (1s, 2s, 4s)".
func (pwnkemon) DefaultSchedule() []time.Duration {
	return []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
}

func (pwnkemon) CheckSecret(s string) error { return literalSecret(s) }
func (pwnkemon) AllowsUnsigned() bool       { return false }

// literalSecret is the rule of every profile whose key is the secret's
// literal bytes.
func literalSecret(s string) error {
	if len(s) < 16 {
		return fmt.Errorf("must be at least 16 characters (a random string with high entropy)")
	}
	return nil
}
