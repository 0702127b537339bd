package profiles

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/scanwire/scanwire/internal/signing"
)

// detectify is the Detectify document: event_scan_started,
// event_scan_finished, event_finding_high and event_finding_medium bodies
// as its examples show them, X-Detectify-Signature: hex HMAC-SHA256 of the
// body, and no signature header at all when the subscription has no
// secret.
type detectify struct{}

func (detectify) Name() string                  { return Detectify }
func (detectify) Accepts(eventType string) bool { return true }

// The bodies, fields in the document's order.
type (
	detectifyScanStarted struct {
		Type      string `json:"type"`
		Domain    string `json:"domain"`
		ReportURL string `json:"report_url"`
	}
	detectifyScanFinished struct {
		Type             string `json:"type"`
		Domain           string `json:"domain"`
		ReportURL        string `json:"report_url"`
		CriticalFindings int    `json:"critical_findings"`
		MediumFindings   int    `json:"medium_findings"`
		NoticeFindings   int    `json:"notice_findings"`
	}
	detectifyFinding struct {
		Type       string   `json:"type"`
		Domain     string   `json:"domain"`
		CVSSScore  float64  `json:"cvss_score"`
		Severity   string   `json:"severity"`
		Title      string   `json:"title"`
		FindingURL string   `json:"finding_url"`
		Tags       []string `json:"tags"`
	}
)

func (detectify) Render(d Delivery) (Request, error) {
	var in struct {
		Target           string   `json:"target"`
		ReportURL        string   `json:"report_url"`
		CriticalFindings int      `json:"critical_findings"`
		MediumFindings   int      `json:"medium_findings"`
		NoticeFindings   int      `json:"notice_findings"`
		CVSSScore        float64  `json:"cvss_score"`
		Title            string   `json:"title"`
		URL              string   `json:"url"`
		Tags             []string `json:"tags"`
	}
	if err := json.Unmarshal(d.Event.Data(), &in); err != nil {
		return Request{}, fmt.Errorf("event data: %w", err)
	}
	var v any
	switch t := d.Event.Type(); t {
	case "scan.started":
		v = detectifyScanStarted{"event_scan_started", in.Target, in.ReportURL}
	case "scan.finished":
		v = detectifyScanFinished{"event_scan_finished", in.Target, in.ReportURL, in.CriticalFindings, in.MediumFindings, in.NoticeFindings}
	case "finding.high", "finding.medium":
		severity := t[len("finding."):]
		if in.Tags == nil {
			in.Tags = []string{}
		}
		v = detectifyFinding{"event_finding_" + severity, in.Target, in.CVSSScore, severity, in.Title, in.URL, in.Tags}
	default:
		v = detectifyScanStarted{Type: "event_test"}
	}
	body, err := marshal(v)
	if err != nil {
		return Request{}, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", d.UserAgent)
	if len(d.Secrets) > 0 {
		h.Set("X-Detectify-Signature", signing.HexHMAC([]byte(d.Secrets[0]), body))
	}
	return Request{Header: h, Body: body}, nil
}

func (detectify) DefaultSchedule() []time.Duration { return standard{}.DefaultSchedule() }
func (detectify) CheckSecret(s string) error       { return literalSecret(s) }

// AllowsUnsigned: "The signature is omitted if the secret key is not
// specified for the subscription."
func (detectify) AllowsUnsigned() bool { return true }
