package egress

import (
	"errors"
	"fmt"
)

// ErrBlocked is wrapped by every refusal of a destination: an address in a
// blocked range, a name that resolves only to such addresses, a loopback
// name. A delivery that fails with it is dead-lettered, not retried: no
// retry makes the address legal. Its text is the prefix of every such
// error's message, "egress blocked: ", which is the dead letter's reason.
//
// Errors about a URL's form (scheme, userinfo, port, a malformed host) do
// not wrap it: those URLs are invalid, not pointed somewhere forbidden.
var ErrBlocked = errors.New("egress blocked")

// blocked builds an ErrBlocked error: "egress blocked: " + the message.
func blocked(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBlocked}, args...)...)
}

// The fix each kind of refusal calls for, at the end of its message.
const (
	hintPrivate = "subscriptions must reach the public internet (scanwire run --allow-private-targets allows it for local development)"
	hintAlways  = "no webhook may reach it, with or without --allow-private-targets"
)
