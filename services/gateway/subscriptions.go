package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/testdelivery"
)

// subscriptionError answers a store error with its status: 422 for a bad
// document (naming the first field), 404, 409 for a lost race.
func (g *Gateway) subscriptionError(w http.ResponseWriter, err error) {
	var ve *subscriptions.ValidationError
	var fe *subscriptions.FieldError
	switch {
	case errors.As(err, &ve):
		writeJSON(w, http.StatusUnprocessableEntity, apiError{Error: err.Error(), Field: ve.Fields[0].Field, Problems: ve.Fields})
	case errors.As(err, &fe):
		writeError(w, http.StatusUnprocessableEntity, fe.Field, err.Error())
	case errors.Is(err, subscriptions.ErrNotFound):
		writeError(w, http.StatusNotFound, "", "subscription not found")
	case errors.Is(err, subscriptions.ErrConflict):
		writeError(w, http.StatusConflict, "", err.Error())
	default:
		g.log.Error("subscription store", "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "subscription store unavailable")
	}
}

// owned resolves {id} for the caller: a tenant's key finds only its own
// subscriptions (another tenant's is 404, not 403, so that ids cannot be
// probed); the admin finds any. An id that is not a subject token is
// 404 before it reaches the store.
func (g *Gateway) owned(w http.ResponseWriter, r *http.Request, c caller) (tenant, id string, ok bool) {
	id, ok = pathToken(w, r, "id", "subscription")
	if !ok {
		return "", "", false
	}
	tenant = c.tenant
	if c.admin && tenant == "" {
		if !strings.HasPrefix(id, "sub_") { // TenantOf finds sub_<ULID> ids only
			g.subscriptionError(w, subscriptions.ErrNotFound)
			return "", "", false
		}
		t, err := g.store.TenantOf(r.Context(), id)
		if err != nil {
			g.subscriptionError(w, err)
			return "", "", false
		}
		tenant = t
	}
	if _, _, err := g.store.Get(r.Context(), tenant, id); err != nil && errors.Is(err, subscriptions.ErrNotFound) {
		g.subscriptionError(w, err)
		return "", "", false
	}
	return tenant, id, true
}

func (g *Gateway) listSubscriptions(w http.ResponseWriter, r *http.Request, c caller) {
	entries, err := g.store.List(r.Context(), c.tenant)
	if err != nil {
		g.subscriptionError(w, err)
		return
	}
	subs := []*subscriptions.Subscription{}
	invalid := []map[string]string{}
	for _, e := range entries {
		if e.Err != nil {
			invalid = append(invalid, map[string]string{"key": e.Key, "error": e.Err.Error()})
			continue
		}
		subs = append(subs, e.Sub.Redacted())
	}
	writeJSON(w, http.StatusOK, map[string]any{"subscriptions": subs, "invalid": invalid})
}

func (g *Gateway) createSubscription(w http.ResponseWriter, r *http.Request, c caller) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		writeError(w, http.StatusBadRequest, "", "body must be a JSON subscription document: "+jsonProblem(err))
		return
	}
	bodyTenant, _ := doc["tenant"].(string)
	switch {
	case !c.admin && bodyTenant != "" && bodyTenant != c.tenant:
		writeError(w, http.StatusForbidden, "tenant", "this key creates subscriptions for tenant "+c.tenant+" only")
		return
	case bodyTenant == "" && c.tenant == "":
		writeError(w, http.StatusUnprocessableEntity, "tenant", "the admin key names the tenant: add \"tenant\" to the body or ?tenant=")
		return
	case bodyTenant == "":
		doc["tenant"] = c.tenant
	}
	for _, f := range []string{"id", "created", "updated"} {
		if _, ok := doc[f]; ok {
			writeError(w, http.StatusUnprocessableEntity, f, f+" is set by scanwire; leave it out")
			return
		}
	}
	body, _ = json.Marshal(doc)
	// Decode holds the body to the schema, which alone sees unknown
	// fields; Create then runs Validate, the check every write and read
	// of a subscription passes.
	s, err := subscriptions.Decode(body)
	if err != nil {
		g.subscriptionError(w, err)
		return
	}
	created, err := g.store.Create(r.Context(), *s)
	if err != nil {
		g.subscriptionError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/subscriptions/"+created.ID)
	writeJSON(w, http.StatusCreated, created) // the one time the secret is shown
}

func (g *Gateway) getSubscription(w http.ResponseWriter, r *http.Request, c caller) {
	tenant, id, ok := g.owned(w, r, c)
	if !ok {
		return
	}
	s, rev, err := g.store.Get(r.Context(), tenant, id)
	if err != nil {
		g.subscriptionError(w, err)
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(rev, 10)))
	writeJSON(w, http.StatusOK, s.Redacted())
}

// patchSubscription applies a JSON merge patch. With If-Match (the ETag of
// a GET) the change applies only to that revision, so two people editing
// at once cannot silently overwrite each other: the second gets 409.
func (g *Gateway) patchSubscription(w http.ResponseWriter, r *http.Request, c caller) {
	tenant, id, ok := g.owned(w, r, c)
	if !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	s, rev, err := g.store.Get(r.Context(), tenant, id)
	if err != nil {
		g.subscriptionError(w, err)
		return
	}
	if m := r.Header.Get("If-Match"); m != "" {
		want, err := strconv.ParseUint(strings.Trim(m, `"`), 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "", "If-Match must be the ETag of a GET")
			return
		}
		if want != rev {
			g.subscriptionError(w, subscriptions.ErrConflict)
			return
		}
	}
	next, err := s.Patch(body)
	if err != nil {
		g.subscriptionError(w, err)
		return
	}
	updated, err := g.store.Update(r.Context(), *next, rev)
	if err != nil {
		g.subscriptionError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, updated.Redacted())
}

func (g *Gateway) deleteSubscription(w http.ResponseWriter, r *http.Request, c caller) {
	tenant, id, ok := g.owned(w, r, c)
	if !ok {
		return
	}
	if err := g.store.Delete(r.Context(), tenant, id); err != nil {
		g.subscriptionError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// rotateSecret is POST /v1/subscriptions/{id}/rotate-secret with an
// optional body {"overlap": "24h", "secret": "..."}.
func (g *Gateway) rotateSecret(w http.ResponseWriter, r *http.Request, c caller) {
	tenant, id, ok := g.owned(w, r, c)
	if !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req := struct {
		Overlap string `json:"overlap"`
		Secret  string `json:"secret"`
	}{Overlap: subscriptions.DefaultOverlap.String()}
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "", `body is {"overlap": "24h", "secret": "..."}, both optional: `+jsonProblem(err))
			return
		}
	}
	overlap, err := time.ParseDuration(req.Overlap)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "overlap", req.Overlap+" is not a duration such as 24h or 0s")
		return
	}
	s, err := g.store.Rotate(r.Context(), tenant, id, overlap, req.Secret)
	if err != nil {
		g.subscriptionError(w, err)
		return
	}
	out := map[string]any{"id": s.ID, "secret": s.Secrets[0].Secret, "overlap": overlap.String()}
	if len(s.Secrets) > 1 {
		out["previous_secrets_expire"] = s.Secrets[1].Expires
	}
	writeJSON(w, http.StatusOK, out) // the one time the new secret is shown
}

// testSubscription sends a webhook.test event through the pipeline and
// reports its first attempt. A subscription that cannot be tested is
// refused at once with the reason, and a test the pipeline gives up on
// before any attempt is reported as soon as it is.
func (g *Gateway) testSubscription(w http.ResponseWriter, r *http.Request, c caller) {
	tenant, id, ok := g.owned(w, r, c)
	if !ok {
		return
	}
	res, err := testdelivery.New(g.js, g.store, g.attempts).Send(r.Context(), tenant, id, g.cfg.TestWait)
	var disabled *testdelivery.DisabledError
	var invalid *testdelivery.InvalidError
	var stopped *testdelivery.StoppedError
	switch {
	case errors.Is(err, subscriptions.ErrNotFound):
		g.subscriptionError(w, err)
	case errors.As(err, &disabled):
		writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "disabled_reason": disabled.Reason})
	case errors.As(err, &invalid):
		writeError(w, http.StatusUnprocessableEntity, "", err.Error())
	case errors.As(err, &stopped):
		out := map[string]any{"error": err.Error(), "code": stopped.Code, "event_id": res.EventID, "webhook_id": res.WebhookID}
		if stopped.Stream == natsx.StreamDLQ {
			out["dead_letter_id"] = stopped.Seq
		}
		writeJSON(w, stoppedStatus(stopped.Code), out)
	case errors.Is(err, attempts.ErrNoAttempt):
		writeJSON(w, http.StatusGatewayTimeout, map[string]any{"error": "no attempt within " + g.cfg.TestWait.String() + "; the test delivery is queued and will still be made",
			"event_id": res.EventID, "webhook_id": res.WebhookID})
	case err != nil:
		g.log.Error("test delivery", "subscription_id", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "could not send the test event")
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// stoppedStatus answers a test given up on before any attempt as the
// refusal up front would have: 404 when the subscription was deleted
// meanwhile, 409 when it was disabled, 422 for anything else about it.
func stoppedStatus(code string) int {
	switch code {
	case dlq.ReasonSubscriptionDeleted.String(), events.RejectNoSubscription.String():
		return http.StatusNotFound
	case dlq.ReasonSubscriptionDisabled.String():
		return http.StatusConflict
	}
	return http.StatusUnprocessableEntity
}

func (g *Gateway) listAttempts(w http.ResponseWriter, r *http.Request, c caller) {
	tenant, id, ok := g.owned(w, r, c)
	if !ok {
		return
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	list, err := g.attempts.List(r.Context(), attempts.Query{Tenant: tenant, SubscriptionID: id, EventID: r.URL.Query().Get("event_id"), Limit: limit})
	if err != nil {
		g.log.Error("list attempts", "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "attempt log unavailable")
		return
	}
	if list == nil {
		list = []attempts.Attempt{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"attempts": list})
}
