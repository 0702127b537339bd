package gateway

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/scanwire/scanwire/internal/dlq"
)

// listDLQ is GET /v1/dlq[?subscription_id=][&limit=].
func (g *Gateway) listDLQ(w http.ResponseWriter, r *http.Request, c caller) {
	sub, ok := queryToken(w, r, "subscription_id")
	if !ok {
		return
	}
	if sub != "" && c.tenant == "" {
		// dlq.Store.List reads every tenant then, ignoring the
		// subscription: the admin must say whose it is.
		writeError(w, http.StatusUnprocessableEntity, "tenant", "?subscription_id= needs ?tenant= with the admin key")
		return
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	list, err := g.dlq.List(r.Context(), c.tenant, sub, limit)
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
// event with the same webhook-id. A dead letter whose subscription takes
// no deliveries (deleted, disabled, invalid) is refused with 409 and the
// reason, and stays in the DLQ.
func (g *Gateway) replayDLQ(w http.ResponseWriter, r *http.Request, c caller) {
	id, ok := pathSeq(w, r, "id", "dead letter")
	if !ok {
		return
	}
	// Read it first to tell the client, in words of ours, why one cannot
	// be replayed; Replay's other errors are NATS's, for the log.
	e, err := g.dlq.Get(r.Context(), c.tenant, id)
	if err == nil && (len(e.Raw) > 0 || e.Job.WebhookID == "") {
		writeError(w, http.StatusUnprocessableEntity, "", "dead letter "+strconv.FormatUint(id, 10)+" holds an undecodable message, not a job: nothing to replay")
		return
	}
	var job *dlq.Entry
	if err == nil {
		job = e
		_, err = g.dlq.Replay(r.Context(), c.tenant, id)
	}
	switch {
	case errors.Is(err, dlq.ErrNotFound):
		writeError(w, http.StatusNotFound, "", "dead letter not found")
	case errors.Is(err, dlq.ErrNoTarget):
		writeError(w, http.StatusConflict, "", err.Error())
	case err != nil:
		g.log.Error("replay", "id", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "could not replay the dead letter; try again")
	default:
		writeJSON(w, http.StatusAccepted, map[string]any{"replayed": id, "webhook_id": job.Job.WebhookID, "subscription_id": job.Job.SubscriptionID})
	}
}
