// Package egress is the one policy that decides where webhooks may go. A
// webhook sender is an SSRF machine pointed at whatever URL a tenant types,
// so the same Policy judges twice:
//
//   - at subscription write time, the URL (CheckURL, or CheckURLStatic
//     where no DNS may be done): https only, no userinfo, no IP literal in a
//     blocked range in any spelling a resolver accepts, no name that
//     resolves only to blocked addresses; a callback URL that arrives in an
//     event is judged by CheckCallbackURL, the same at every door;
//   - at dial time, the IP address actually dialed (DialContext and its
//     Control hook), because what a name resolved to when the subscription
//     was written says nothing about what it resolves to now.
//
// The blocked ranges are the IANA special-purpose address registries in
// full, plus multicast, site-local and the cloud metadata addresses (see
// table in ranges.go). Some are blocked whatever the configuration
// (link-local, cloud metadata, unspecified, multicast, broadcast); the rest
// of the non-public space (loopback, RFC 1918, CGNAT, unique local,
// documentation and other special-purpose ranges) is blocked unless
// Policy.AllowPrivate is set, which is what `scanwire run
// --allow-private-targets` does for local development. IPv6 forms that
// carry an IPv4 address (mapped, translated, compatible, NAT64, 6to4,
// Teredo) are judged as the IPv4 address they carry.
//
// The policy does not follow redirects and is not a proxy: the HTTP client
// that uses DialContext must not follow redirects (a receiver could bounce
// a signed request anywhere) and must not be configured with a proxy
// (the proxy, not this dialer, would then reach the target).
package egress

import (
	"context"
	"net"
	"net/netip"
	"strings"
)

// Resolver is what the policy resolves hostnames with; *net.Resolver
// satisfies it. Tests pass a table so that no test depends on real DNS.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Policy is the egress policy. The zero value blocks private targets and
// resolves with net.DefaultResolver. A Policy is not modified by its
// methods and is safe for concurrent use once built.
type Policy struct {
	// AllowPrivate lets http:// URLs and the private ranges through
	// (loopback, RFC 1918, CGNAT, unique local, documentation...): the
	// --allow-private-targets flag, for local development and tests. The
	// always-blocked ranges (link-local, cloud metadata, unspecified,
	// multicast, broadcast) stay blocked.
	AllowPrivate bool
	// Resolver resolves hostnames at write and dial time; nil means
	// net.DefaultResolver.
	Resolver Resolver
	// Dialer dials the allowed addresses; nil means a dialer with a 10s
	// timeout and a 30s keep-alive. DialContext uses a copy whose Control
	// hook is the policy's (followed by the Dialer's own Control or
	// ControlContext, if it has one).
	Dialer *net.Dialer
}

func (p *Policy) resolver() Resolver {
	if p.Resolver != nil {
		return p.Resolver
	}
	return net.DefaultResolver
}

// CheckIP judges one address: nil if a webhook may be sent to it, or an
// error wrapping ErrBlocked that names the range and the fix, such as
// "egress blocked: 169.254.169.254 is a link-local address (cloud
// metadata); no webhook may reach it, with or without
// --allow-private-targets". A zone is ignored; an invalid (zero) address is
// blocked.
func (p *Policy) CheckIP(ip netip.Addr) error {
	if !ip.IsValid() {
		return blocked("not an IP address")
	}
	ip = ip.WithZone("")
	v, ok := p.judge(ip)
	if !ok {
		return nil
	}
	return blocked("%s; %s", v.explain(ip.String(), ip.String(), ip), v.hint())
}

// verdict is why an address is blocked.
type verdict struct {
	// addr is the address the range holds: the one judged, or the IPv4
	// address it carries.
	addr netip.Addr
	// what completes "X is ...": "a private address (10.0.0.0/8)".
	what   string
	always bool
}

// explain says what ip, written as host in subject (the address itself, or
// a quoted URL), is: `"https://2852039166/" is 169.254.169.254, a
// link-local address (cloud metadata)`.
func (v verdict) explain(subject, host string, ip netip.Addr) string {
	var b strings.Builder
	b.WriteString(subject)
	spelled := host != ip.String()
	if spelled {
		b.WriteString(" is " + ip.String() + ",")
	}
	switch {
	case v.addr != ip && spelled:
		b.WriteString(" which embeds " + v.addr.String() + ",")
	case v.addr != ip:
		b.WriteString(" embeds " + v.addr.String() + ",")
	case !spelled:
		b.WriteString(" is")
	}
	b.WriteString(" " + v.what)
	return b.String()
}

func (v verdict) hint() string {
	if v.always {
		return hintAlways
	}
	return hintPrivate
}
