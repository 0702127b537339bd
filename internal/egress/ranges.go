// Package egress is the one policy that decides which addresses webhooks
// may reach: at subscription write time (the URL) and at dial time (the IP
// actually dialed). A webhook sender is an SSRF machine pointed at
// whatever URL a tenant types; this package is what stops it.
package egress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// ErrBlocked is wrapped by every refusal of an address. A delivery that
// hits it is dead-lettered, not retried: no retry makes the address legal.
var ErrBlocked = errors.New("egress blocked")

type block struct {
	prefix netip.Prefix
	what   string
}

func mustPrefixes(what string, cidrs ...string) []block {
	out := make([]block, len(cidrs))
	for i, c := range cidrs {
		out[i] = block{netip.MustParsePrefix(c), what}
	}
	return out
}

// always are blocked whatever --allow-private-targets says: no legitimate
// webhook receiver lives there, and the cloud metadata services that do
// hand out credentials.
var always = concat(
	mustPrefixes("cloud metadata", "169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32", "168.63.129.16/32", "169.254.170.2/32"),
	mustPrefixes("link-local", "169.254.0.0/16", "fe80::/10"),
	mustPrefixes("unspecified", "0.0.0.0/8", "::/128"),
	mustPrefixes("multicast", "224.0.0.0/4", "ff00::/8"),
	mustPrefixes("broadcast", "255.255.255.255/32"),
)

// private are blocked unless --allow-private-targets: the internal network
// and the address ranges that are never on the public internet.
var private = concat(
	mustPrefixes("loopback", "127.0.0.0/8", "::1/128"),
	mustPrefixes("private (RFC 1918)", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
	mustPrefixes("carrier-grade NAT", "100.64.0.0/10"),
	mustPrefixes("unique local", "fc00::/7"),
	mustPrefixes("reserved", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "2001:db8::/32"),
)

func concat(lists ...[]block) []block {
	var out []block
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

var (
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour  = netip.MustParsePrefix("2002::/16")
	teredo     = netip.MustParsePrefix("2001::/32")
	compatible = netip.MustParsePrefix("::/96")
)

// embedded returns the IPv4 address an IPv6 address carries, in the forms
// that reach it: IPv4-mapped and -compatible, NAT64 (64:ff9b::/96 and
// 64:ff9b:1::/48), 6to4 (2002::/16) and Teredo (2001::/32, client address
// inverted). Each must be judged as the IPv4 address it stands for.
func embedded(ip netip.Addr) (netip.Addr, bool) {
	if ip.Is4In6() {
		return ip.Unmap(), true
	}
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	v4 := func(p []byte) netip.Addr { return netip.AddrFrom4([4]byte(p)) }
	switch {
	case nat64.Contains(ip), nat64Local.Contains(ip):
		return v4(b[12:16]), true
	case sixToFour.Contains(ip):
		return v4(b[2:6]), true
	case teredo.Contains(ip):
		x := binary.BigEndian.Uint32(b[12:16]) ^ 0xffffffff
		var o [4]byte
		binary.BigEndian.PutUint32(o[:], x)
		return netip.AddrFrom4(o), true
	case compatible.Contains(ip) && ip != netip.IPv6Unspecified() && ip != netip.IPv6Loopback():
		return v4(b[12:16]), true // IPv4-compatible (deprecated, still routed by some stacks)
	}
	return netip.Addr{}, false
}

// CheckIP judges one address. It returns nil, or an error wrapping
// ErrBlocked that names the range.
func (p *Policy) CheckIP(ip netip.Addr) error {
	if !ip.IsValid() {
		return fmt.Errorf("%w: not an IP address", ErrBlocked)
	}
	ip = ip.WithZone("")
	if inner, ok := embedded(ip); ok {
		if err := p.CheckIP(inner); err != nil {
			return fmt.Errorf("%w: %s embeds %s (%s)", ErrBlocked, ip, inner, rangeOf(err))
		}
		return nil
	}
	for _, b := range always {
		if b.prefix.Contains(ip) {
			return &blockedError{ip: ip, what: b.what, always: true}
		}
	}
	if !p.AllowPrivate {
		for _, b := range private {
			if b.prefix.Contains(ip) {
				return &blockedError{ip: ip, what: b.what}
			}
		}
	}
	return nil
}

// blockedError names the address and its range.
type blockedError struct {
	ip     netip.Addr
	what   string
	always bool
}

func (e *blockedError) Error() string {
	if e.always {
		return fmt.Sprintf("egress blocked: %s is %s, never a webhook target", e.ip, e.what)
	}
	return fmt.Sprintf("egress blocked: %s is %s; subscriptions must reach the public internet (scanwire run --allow-private-targets allows it for local development)", e.ip, e.what)
}

func (e *blockedError) Unwrap() error { return ErrBlocked }

func rangeOf(err error) string {
	var be *blockedError
	if errors.As(err, &be) {
		return be.what
	}
	return "blocked"
}
