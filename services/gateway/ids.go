package gateway

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/scanwire/scanwire/internal/events"
)

// Ids from a request are checked here, before any of them reaches NATS:
// subscription ids, scan ids and tenants become tokens of subjects and KV
// keys, where "*" or ">" is a wildcard that would read other records and
// "." or " " an error of NATS's. An id that cannot name a resource is 404
// (the resource cannot exist) and a bad query parameter 400; neither says
// more than the rule.

// tokenRule is the form of every id that becomes a subject token.
var tokenRule = fmt.Sprintf("1-%d characters of A-Z, a-z, 0-9, '_' or '-'", events.MaxTokenLen)

// pathToken reads the path value name, which must be a subject token; it
// answers 404 for what ("subscription", "scan", "tenant") otherwise.
func pathToken(w http.ResponseWriter, r *http.Request, name, what string) (string, bool) {
	v := r.PathValue(name)
	if !events.ValidToken(v) {
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("%s not found: {%s} must be %s", what, name, tokenRule))
		return "", false
	}
	return v, true
}

// pathSeq reads the path value name, a stream sequence (a dead letter's
// id): a positive integer. It answers 404 for what otherwise.
func pathSeq(w http.ResponseWriter, r *http.Request, name, what string) (uint64, bool) {
	n, err := strconv.ParseUint(r.PathValue(name), 10, 64)
	if err != nil || n == 0 {
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("%s not found: {%s} must be a positive integer", what, name))
		return 0, false
	}
	return n, true
}

// queryToken reads the query parameter name, which is either absent or a
// subject token; it answers 400 naming the rule otherwise.
func queryToken(w http.ResponseWriter, r *http.Request, name string) (string, bool) {
	v := r.URL.Query().Get(name)
	if v != "" && !events.ValidToken(v) {
		writeError(w, http.StatusBadRequest, name, fmt.Sprintf("?%s= must be %s", name, tokenRule))
		return "", false
	}
	return v, true
}
