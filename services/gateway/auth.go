package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/scanwire/scanwire/internal/events"
)

// Keys are the API keys: one admin key that acts for any tenant, and one
// key per tenant that sees and changes only that tenant.
type Keys struct {
	Admin   string
	Tenants map[string]string // tenant -> key
}

// ParseKeys reads SCANWIRE_ADMIN_KEY and SCANWIRE_API_KEYS
// ("tenant=key,tenant=key"). Its errors name an entry by its position
// and, once the entry has the form tenant=key, by its tenant: never a
// character of a key, since a malformed entry ("acme:key") may be nothing
// but the key, and the error is printed and logged.
func ParseKeys(admin, tenants string) (Keys, error) {
	k := Keys{Admin: admin, Tenants: map[string]string{}}
	seen := map[string]bool{}
	if admin != "" {
		if len(admin) < 16 {
			return k, fmt.Errorf("SCANWIRE_ADMIN_KEY: use at least 16 characters")
		}
		seen[admin] = true
	}
	for i, pair := range strings.Split(tenants, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		entry := fmt.Sprintf("SCANWIRE_API_KEYS entry %d", i+1)
		tenant, key, ok := strings.Cut(pair, "=")
		if !ok || key == "" {
			return k, fmt.Errorf("%s is not of the form tenant=key (entries are separated by commas; the entry is not shown, as it may hold a key)", entry)
		}
		if !events.ValidToken(tenant) {
			return k, fmt.Errorf("%s: the tenant before '=' must be %s (the entry is not shown, as it may hold a key)", entry, tokenRule)
		}
		if len(key) < 16 {
			return k, fmt.Errorf("%s: the key of tenant %s is shorter than 16 characters", entry, tenant)
		}
		if seen[key] {
			return k, fmt.Errorf("%s: the key of tenant %s is used twice; every key must be unique", entry, tenant)
		}
		if _, dup := k.Tenants[tenant]; dup {
			return k, fmt.Errorf("%s: tenant %s has a key already; give each tenant one", entry, tenant)
		}
		seen[key] = true
		k.Tenants[tenant] = key
	}
	return k, nil
}

// Empty reports whether no key is configured: every /v1 call is refused.
func (k Keys) Empty() bool { return k.Admin == "" && len(k.Tenants) == 0 }

// caller is who made a request.
type caller struct {
	admin  bool
	tenant string // the key's tenant; for the admin, the one it names
	key    string // the key presented
}

// identify finds the key presented. Every configured key is compared, in
// constant time over hashes, so neither the timing nor the length of the
// presented key tells how close it came.
func (k Keys) identify(presented string) (caller, bool) {
	if presented == "" {
		return caller{}, false
	}
	p := sha256.Sum256([]byte(presented))
	var found caller
	match := 0
	if k.Admin != "" {
		a := sha256.Sum256([]byte(k.Admin))
		if subtle.ConstantTimeCompare(p[:], a[:]) == 1 {
			found, match = caller{admin: true}, 1
		}
	}
	for tenant, key := range k.Tenants {
		h := sha256.Sum256([]byte(key))
		if subtle.ConstantTimeCompare(p[:], h[:]) == 1 {
			found, match = caller{tenant: tenant}, 1
		}
	}
	return found, match == 1
}

// Identify returns the tenant whose key presented is, or admin for the
// admin key (natsauth.Keys: NATS connections are judged by the same keys).
func (k Keys) Identify(presented string) (tenant string, admin, ok bool) {
	c, ok := k.identify(presented)
	return c.tenant, c.admin, ok
}

type authedHandler func(w http.ResponseWriter, r *http.Request, c caller)

// authed checks the bearer key. The admin names the tenant it acts for
// with ?tenant= (handlers may also take it from the body). ?tenant= is
// checked here for every handler: it becomes a subject token and a KV
// key, where "*" would read every tenant's records.
func (g *Gateway) authed(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, ok := bearer(r.Header.Get("Authorization"))
		c, found := g.keys.Load().identify(strings.TrimSpace(key))
		if !ok || !found {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scanwire"`)
			writeError(w, http.StatusUnauthorized, "", "missing or unknown API key: send Authorization: Bearer <key> (SCANWIRE_API_KEYS or SCANWIRE_ADMIN_KEY)")
			return
		}
		c.key = strings.TrimSpace(key)
		t, ok := queryToken(w, r, "tenant")
		if !ok {
			return
		}
		if c.admin {
			c.tenant = t
		} else if t != "" && t != c.tenant {
			writeError(w, http.StatusForbidden, "tenant", "this key acts for tenant "+c.tenant+" only")
			return
		}
		h(w, r, c)
	}
}

func readAll(r *http.Request) ([]byte, error) { return io.ReadAll(r.Body) }

// bearer reads the key of an "Authorization: Bearer <key>" header. The
// scheme is case-insensitive (RFC 9110, section 11.1): "bearer" and
// "BEARER" are accepted too.
func bearer(header string) (string, bool) {
	scheme, key, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	key = strings.TrimSpace(key)
	return key, key != ""
}
