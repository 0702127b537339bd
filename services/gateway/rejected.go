package gateway

import (
	"net/http"
	"strconv"

	"github.com/scanwire/scanwire/internal/rejected"
)

// listRejected is GET /v1/rejected[?limit=]: the newest rejected events,
// newest first. A tenant's key sees its own; the admin every tenant's, or
// one with ?tenant= (checked by authed).
func (g *Gateway) listRejected(w http.ResponseWriter, r *http.Request, c caller) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	list, err := g.rejected.List(r.Context(), c.tenant, limit)
	if err != nil {
		g.log.Error("list rejected", "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "REJECTED stream unavailable")
		return
	}
	if list == nil {
		list = []rejected.Entry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rejected": list})
}
