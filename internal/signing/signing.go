// Package signing holds the HMAC rules webhooks are signed with and the
// secrets they are signed by.
package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// StandardPrefix starts every Standard Webhooks secret.
const StandardPrefix = "whsec_"

// NewStandardSecret returns a fresh Standard Webhooks secret: "whsec_" and
// the base64 of 32 random bytes.
func NewStandardSecret() string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("crypto/rand: " + err.Error()) // never fails on supported platforms
	}
	return StandardPrefix + base64.StdEncoding.EncodeToString(key)
}

// StandardKey returns the HMAC key of a Standard Webhooks secret: the
// base64-decoded bytes after "whsec_".
func StandardKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, StandardPrefix)
	if !ok {
		return nil, fmt.Errorf("secret must start with %q followed by base64 (Standard Webhooks)", StandardPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("secret after %q is not valid base64", StandardPrefix)
	}
	if len(key) < 24 {
		return nil, fmt.Errorf("secret key is %d bytes; use at least 24 (32 recommended)", len(key))
	}
	return key, nil
}

// StandardSignature returns "v1,<base64 HMAC-SHA256 of id.timestamp.body>",
// one entry of the webhook-signature header.
func StandardSignature(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// HexHMAC returns the lower-case hex HMAC-SHA256 of the concatenated parts
// under key: the rule of every profile but Standard Webhooks.
func HexHMAC(key []byte, parts ...[]byte) string {
	mac := hmac.New(sha256.New, key)
	for _, p := range parts {
		mac.Write(p)
	}
	return hex.EncodeToString(mac.Sum(nil))
}
