// Package secrets keeps signing secrets encrypted at rest: in KV, in a
// backup of the store, in what `nats kv get` shows. A secret is sealed
// with AES-256-GCM (the standard library's) under the first key of the
// keyring (SCANWIRE_SECRETS_KEY) and stored as
//
//	sealed:v1:<key id>:<base64url(nonce | ciphertext)>
//
// with the bucket, the document's key and the field as associated data,
// so that a sealed value moved into another document does not open. The
// key id names the key it was sealed with: the keyring may hold older
// keys to open what they sealed until `scanwire secrets rekey` has sealed
// everything again under the first.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// EnvKey is the environment variable of the keyring: base64 keys of 32
// bytes, separated by commas, the first sealing, all opening.
const EnvKey = "SCANWIRE_SECRETS_KEY"

// prefix starts every sealed value.
const prefix = "sealed:v1:"

// ErrNoKey is wrapped by the error of opening a value sealed under a key
// the keyring does not hold.
var ErrNoKey = errors.New("sealed with a key that " + EnvKey + " does not hold")

// Keyring seals under its first key and opens under any. The zero
// Keyring (no key) seals nothing: secrets stay in plain text.
type Keyring struct {
	keys []key
}

type key struct {
	id   string
	aead cipher.AEAD
}

// ParseKeyring reads a keyring as EnvKey holds it; "" is the empty
// keyring. Its errors name the entry by position, never a character of a
// key.
func ParseKeyring(s string) (*Keyring, error) {
	k := &Keyring{}
	seen := map[string]bool{}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(entry)
		if err != nil {
			raw, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(entry, "="))
		}
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("%s: key %d is not 32 bytes in base64 (make one with `scanwire secrets keygen`)", EnvKey, i+1)
		}
		block, _ := aes.NewCipher(raw)
		aead, _ := cipher.NewGCM(block)
		id := KeyID(raw)
		if seen[id] {
			return nil, fmt.Errorf("%s: key %d is there twice", EnvKey, i+1)
		}
		seen[id] = true
		k.keys = append(k.keys, key{id: id, aead: aead})
	}
	return k, nil
}

// NewKey returns a new random key as EnvKey holds it.
func NewKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// KeyID is a key's id: the first 8 hex digits of its SHA-256, which
// names it without telling anything of it.
func KeyID(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:4])
}

// Enabled reports whether the keyring seals.
func (k *Keyring) Enabled() bool { return k != nil && len(k.keys) > 0 }

// Current is the id of the key that seals, or "".
func (k *Keyring) Current() string {
	if !k.Enabled() {
		return ""
	}
	return k.keys[0].id
}

// IsSealed reports whether a stored value is sealed, and under which key.
func IsSealed(v string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(v, prefix)
	if !ok {
		return "", false
	}
	id, _, ok = strings.Cut(rest, ":")
	return id, ok
}

// Seal seals plain under the current key, bound to where (bucket, key and
// field). A value already sealed, or any value with an empty keyring, is
// returned as it is.
func (k *Keyring) Seal(plain, where string) string {
	if !k.Enabled() || plain == "" {
		return plain
	}
	if _, sealed := IsSealed(plain); sealed {
		return plain
	}
	cur := k.keys[0]
	nonce := make([]byte, cur.aead.NonceSize(), cur.aead.NonceSize()+len(plain)+cur.aead.Overhead())
	_, _ = rand.Read(nonce)
	out := cur.aead.Seal(nonce, nonce, []byte(plain), []byte(where))
	return prefix + cur.id + ":" + base64.RawURLEncoding.EncodeToString(out)
}

// Open returns the secret a stored value holds: a sealed one opened with
// the key its id names, a plain one as it is.
func (k *Keyring) Open(stored, where string) (string, error) {
	id, sealed := IsSealed(stored)
	if !sealed {
		return stored, nil
	}
	var aead cipher.AEAD
	if k != nil {
		for _, kk := range k.keys {
			if kk.id == id {
				aead = kk.aead
			}
		}
	}
	if aead == nil {
		return "", fmt.Errorf("%w (key id %s)", ErrNoKey, id)
	}
	b, err := base64.RawURLEncoding.DecodeString(stored[len(prefix)+len(id)+1:])
	if err != nil || len(b) < aead.NonceSize() {
		return "", fmt.Errorf("sealed value under key %s is damaged", id)
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], []byte(where))
	if err != nil {
		return "", fmt.Errorf("sealed value under key %s does not open here: it was damaged, or moved from another document", id)
	}
	return string(plain), nil
}
