package secrets

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/scanwire/scanwire/internal/jsonx"
)

// Fields are the names of a document's members whose string values are
// secrets: "secret" (each of a subscription's secrets) and
// "signing_secret" (a tenant's).
type Fields map[string]bool

// DefaultFields are the secrets of scanwire's documents.
var DefaultFields = Fields{"secret": true, "signing_secret": true}

// SealDoc seals every secret of a JSON document bound to where (the
// bucket and the key). A document with no secret, or an empty keyring,
// comes back as it was.
func (k *Keyring) SealDoc(doc []byte, where string, fields Fields) ([]byte, error) {
	if !k.Enabled() {
		return doc, nil
	}
	return transform(doc, fields, func(field, v string) (string, error) { return k.Seal(v, where+"/"+field), nil })
}

// OpenDoc opens every sealed secret of a JSON document bound to where.
// Plain secrets stay as they are.
func (k *Keyring) OpenDoc(doc []byte, where string, fields Fields) ([]byte, error) {
	if !bytes.Contains(doc, []byte(prefix)) {
		return doc, nil
	}
	return transform(doc, fields, func(field, v string) (string, error) { return k.Open(v, where+"/"+field) })
}

// NeedsRekey reports whether a document holds a secret in plain text or
// sealed under a key other than the current one.
func (k *Keyring) NeedsRekey(doc []byte, fields Fields) bool {
	need := false
	_, _ = transform(doc, fields, func(_, v string) (string, error) {
		if id, sealed := IsSealed(v); v != "" && (!sealed || id != k.Current()) {
			need = true
		}
		return v, nil
	})
	return need
}

// transform rewrites the string value of every member named in fields, at
// any depth, with fn. It does not escape '<', '>' or '&', and keeps
// numbers as they were written.
func transform(doc []byte, fields Fields, fn func(field, v string) (string, error)) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return doc, nil // not JSON: the document's own parser says what is wrong
	}
	changed := false
	var walk func(v any) error
	walk = func(v any) error {
		switch t := v.(type) {
		case map[string]any:
			for name, m := range t {
				if s, ok := m.(string); ok && fields[name] {
					out, err := fn(name, s)
					if err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					if out != s {
						t[name], changed = out, true
					}
					continue
				}
				if err := walk(m); err != nil {
					return err
				}
			}
		case []any:
			for _, m := range t {
				if err := walk(m); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(v); err != nil {
		return nil, err
	}
	if !changed {
		return doc, nil
	}
	return jsonx.Marshal(v)
}
