package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
)

// publishEvent is POST /v1/events: a CloudEvent over HTTP, binary or
// structured mode. The HTTP binding's headers (Ce-Id, Content-Type) are
// the NATS binding's in another case, so the request is decoded and
// validated by the very code fan-out runs: one mistake, one message.
func (g *Gateway) publishEvent(w http.ResponseWriter, r *http.Request, c caller) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	h := nats.Header{}
	for k, v := range r.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "ce-") || lk == "content-type" {
			h[lk] = v
		}
	}
	e, err := events.FromMsg(h, body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	tenant := events.Tenant(e)
	if !c.admin && tenant != "" && tenant != c.tenant {
		writeError(w, http.StatusForbidden, "tenant", "this key publishes for tenant "+c.tenant+" only")
		return
	}
	kind, _ := events.KindOf(e.Type())
	err = events.Validate(events.Address{Tenant: tenant, ScanID: e.Subject(), Kind: kind}, e)
	if err == nil {
		err = g.checkCallback(r.Context(), e)
	}
	if err != nil {
		var ie *events.InvalidError
		field := ""
		if errors.As(err, &ie) && len(ie.Problems) > 0 {
			field = ie.Problems[0].Field
		}
		status := http.StatusUnprocessableEntity
		if ie != nil && ie.TooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		writeJSON(w, status, apiError{Error: err.Error(), Field: field, Problems: problems(ie)})
		return
	}
	subject, _ := events.Subject(tenant, e.Subject(), e.Type())
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	ack, err := events.Publish(ctx, g.js, subject, e, events.DedupeSecret([]byte(c.key)))
	if r.Context().Err() == nil {
		g.writes.Observe(err)
	}
	switch {
	case natsx.TooLarge(err):
		// Validation keeps events within what the stream takes; should it
		// ever not, retrying would never help.
		g.log.Error("event refused by the stream", "event_id", e.ID(), "err", err)
		writeError(w, http.StatusRequestEntityTooLarge, "", "the stream refuses this event as too large; trim extensions or data")
		return
	case err != nil:
		g.log.Error("publish failed", "event_id", e.ID(), "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "could not store the event; retry with the same id")
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": e.ID(), "subject": subject, "duplicate": ack.Duplicate})
}

// checkCallback judges a valid scan.started event's data.callback_url by
// the pipeline's egress policy, with the check fan-out makes: an error is
// the *events.InvalidError fan-out would reject the event with.
func (g *Gateway) checkCallback(ctx context.Context, e *event.Event) error {
	if g.egress == nil || e.Type() != events.TypeScanStarted {
		return nil
	}
	var data struct {
		CallbackURL string `json:"callback_url"`
	}
	_ = json.Unmarshal(e.Data(), &data) // valid: callback_url is a string by the schema
	if data.CallbackURL == "" {
		return nil
	}
	if err := g.egress.CheckCallbackURL(ctx, data.CallbackURL); err != nil {
		return &events.InvalidError{Problems: []events.Problem{{Field: "data/callback_url", Message: err.Error()}}}
	}
	return nil
}

func problems(ie *events.InvalidError) any {
	if ie == nil {
		return nil
	}
	return ie.Problems
}
