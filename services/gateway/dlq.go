package gateway

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/scanwire/scanwire/internal/dlq"
)

// listDLQ is GET /v1/dlq[?subscription_id=][&limit=].
func (g *Gateway) listDLQ(w http.ResponseWriter, r *http.Request, c caller) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	list, err := g.dlq.List(r.Context(), c.tenant, r.URL.Query().Get("subscription_id"), limit)
	if err != nil {
		g.log.Error("list dlq", "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "DLQ unavailable")
		return
	}
	if list == nil {
		list = []dlq.Entry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead_letters": list})
}

// replayDLQ is POST /v1/dlq/{id}/replay: a fresh delivery of the same
// event with the same webhook-id.
func (g *Gateway) replayDLQ(w http.ResponseWriter, r *http.Request, c caller) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusNotFound, "", "dead letter not found")
		return
	}
	job, err := g.dlq.Replay(r.Context(), c.tenant, id)
	switch {
	case errors.Is(err, dlq.ErrNotFound):
		writeError(w, http.StatusNotFound, "", "dead letter not found")
	case err != nil:
		g.log.Error("replay", "id", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, "", err.Error())
	default:
		writeJSON(w, http.StatusAccepted, map[string]any{"replayed": id, "webhook_id": job.WebhookID, "subscription_id": job.SubscriptionID})
	}
}
