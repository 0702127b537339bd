package subscriptions

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/scanwire/scanwire/internal/signing"
)

// DefaultOverlap is how long a rotated-out secret keeps signing, so that
// receivers can switch to the new one without dropping a delivery.
const DefaultOverlap = 24 * time.Hour

// readOnly are the fields a patch may not touch: identity and timestamps
// are the store's, and secrets change only through Rotate (so a new one is
// shown exactly once).
var readOnly = []string{"id", "tenant", "created", "updated", "secrets"}

// Patch applies a JSON merge patch (RFC 7396) to a copy of s and returns
// the result, not yet validated or stored.
func (s *Subscription) Patch(patch []byte) (*Subscription, error) {
	var p map[string]json.RawMessage
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, &ValidationError{Fields: []*FieldError{{Field: "(document)", Message: "a patch is a JSON object of the fields to change: " + err.Error()}}}
	}
	for _, f := range readOnly {
		if _, ok := p[f]; ok {
			msg := "cannot be changed"
			if f == "secrets" {
				msg = "cannot be patched; use rotate-secret, which shows the new secret once"
			}
			return nil, &ValidationError{Fields: []*FieldError{{Field: f, Message: msg}}}
		}
	}
	cur, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(cur, &doc); err != nil {
		return nil, err
	}
	var pv map[string]any
	_ = json.Unmarshal(patch, &pv)
	merged, err := json.Marshal(mergePatch(doc, pv))
	if err != nil {
		return nil, err
	}
	return Parse(merged)
}

// mergePatch is RFC 7396: objects merge, null deletes, anything else
// replaces.
func mergePatch(target, patch map[string]any) map[string]any {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(target, k)
		case map[string]any:
			t, _ := target[k].(map[string]any)
			if t == nil {
				t = map[string]any{}
			}
			target[k] = mergePatch(t, pv)
		default:
			target[k] = v
		}
	}
	return target
}

// MaxSecrets is how many secrets a subscription holds at most; the schema
// (schemas/subscription.json, secrets maxItems) states the same number.
const MaxSecrets = 10

// Rotate makes a new secret the signing one and lets the others sign
// until now+overlap (0: they stop at once), the newest MaxSecrets-1 of
// them. secret empty generates one. It
// goes through Change, which re-applies it on a concurrent change, since a
// rotation is not a user's edit that could overwrite another's. The
// returned document carries the new secret first: show it once.
func (st *Store) Rotate(ctx context.Context, tenant, id string, overlap time.Duration, secret string) (*Subscription, error) {
	if overlap < 0 {
		return nil, &FieldError{Field: "overlap", Message: fmt.Sprintf("%s must be >= 0 (0 retires the old secret at once)", overlap)}
	}
	if secret == "" {
		secret = signing.NewStandardSecret()
	}
	return st.Change(ctx, tenant, id, func(s *Subscription) error {
		now := time.Now().UTC().Truncate(time.Second)
		until := now.Add(overlap)
		old := s.liveSecrets(now)
		// The schema allows MaxSecrets; past it the oldest retire now, so
		// a rotation (a leaked secret) never fails for their number.
		old = old[:min(len(old), MaxSecrets-1)]
		s.Secrets = []Secret{{Secret: secret, Created: now}}
		for _, o := range old {
			if o.Expires == nil || o.Expires.After(until) {
				o.Expires = &until
			}
			if overlap > 0 {
				s.Secrets = append(s.Secrets, o)
			}
		}
		return nil
	})
}

// liveSecrets returns the secrets not yet expired at now.
func (s *Subscription) liveSecrets(now time.Time) []Secret {
	var out []Secret
	for _, sec := range s.Secrets {
		if sec.Expires == nil || now.Before(*sec.Expires) {
			out = append(out, sec)
		}
	}
	return out
}
