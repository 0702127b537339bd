package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/scanwire/scanwire/internal/tenants"
)

// tenantView is a record as the API shows it: never the signing secret.
type tenantView struct {
	Tenant  string `json:"tenant"`
	Partner string `json:"partner,omitempty"`
}

func (g *Gateway) tenantError(w http.ResponseWriter, err error) {
	var fe *tenants.FieldError
	switch {
	case errors.Is(err, tenants.ErrNotFound):
		writeError(w, http.StatusNotFound, "", "tenant not found")
	case errors.As(err, &fe):
		writeError(w, http.StatusUnprocessableEntity, fe.Field, err.Error())
	default:
		g.log.Error("tenant store", "err", err)
		writeError(w, http.StatusServiceUnavailable, "", "tenant store unavailable")
	}
}

// putTenant is PUT /v1/tenants/{tenant} {"partner": "..."}, admin only.
func (g *Gateway) putTenant(w http.ResponseWriter, r *http.Request, c caller) {
	if !c.admin {
		writeError(w, http.StatusForbidden, "", "tenant records are managed with the admin key")
		return
	}
	name, ok := pathToken(w, r, "tenant", "tenant")
	if !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req struct {
		Partner string `json:"partner"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "", `body is {"partner": "<tenant>"} ("" for none): `+jsonProblem(err))
		return
	}
	t, err := g.tenants.Change(r.Context(), name, func(t *tenants.Tenant) error { t.Partner = req.Partner; return nil })
	if err != nil {
		g.tenantError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tenantView{Tenant: t.Tenant, Partner: t.Partner})
}

// getTenant is GET /v1/tenants/{tenant}: the admin, or the tenant itself.
func (g *Gateway) getTenant(w http.ResponseWriter, r *http.Request, c caller) {
	name, ok := pathToken(w, r, "tenant", "tenant")
	if !ok {
		return
	}
	if !c.admin && name != c.tenant {
		writeError(w, http.StatusNotFound, "", "tenant not found")
		return
	}
	t, _, err := g.tenants.Get(r.Context(), name)
	if err != nil {
		g.tenantError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tenantView{Tenant: t.Tenant, Partner: t.Partner})
}

func (g *Gateway) deleteTenant(w http.ResponseWriter, r *http.Request, c caller) {
	if !c.admin {
		writeError(w, http.StatusForbidden, "", "tenant records are managed with the admin key")
		return
	}
	name, ok := pathToken(w, r, "tenant", "tenant")
	if !ok {
		return
	}
	if err := g.tenants.Delete(r.Context(), name); err != nil {
		g.tenantError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// signingSecret is GET /v1/signing-secret: the secret that signs the
// tenant's per-scan callbacks, as Pwnkemon's dashboard shows it.
func (g *Gateway) signingSecret(w http.ResponseWriter, r *http.Request, c caller) {
	if c.tenant == "" {
		writeError(w, http.StatusUnprocessableEntity, "tenant", "the admin key names the tenant with ?tenant=")
		return
	}
	secret, err := g.tenants.SigningSecret(r.Context(), c.tenant)
	if err != nil {
		g.tenantError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"tenant": c.tenant, "signing_secret": secret})
}

// rotateSigningSecret is POST /v1/signing-secret/rotate: the old secret
// stops signing at once, as in the Pwnkemon document.
func (g *Gateway) rotateSigningSecret(w http.ResponseWriter, r *http.Request, c caller) {
	if c.tenant == "" {
		writeError(w, http.StatusUnprocessableEntity, "tenant", "the admin key names the tenant with ?tenant=")
		return
	}
	secret, err := g.tenants.RotateSigningSecret(r.Context(), c.tenant)
	if err != nil {
		g.tenantError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"tenant": c.tenant, "signing_secret": secret})
}
