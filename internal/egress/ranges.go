package egress

import (
	"encoding/binary"
	"net/netip"
)

// span is one blocked range and what to call it.
type span struct {
	prefix netip.Prefix
	what   string // completes "X is ...": "a private address (10.0.0.0/8)"
}

// named is one range described as it is (a metadata service).
func named(what, cidr string) []span {
	return []span{{netip.MustParsePrefix(cidr), what}}
}

// kind is ranges of one kind, each described with its CIDR.
func kind(what string, cidrs ...string) []span {
	out := make([]span, len(cidrs))
	for i, c := range cidrs {
		out[i] = span{netip.MustParsePrefix(c), what + " (" + c + ")"}
	}
	return out
}

func concat(lists ...[]span) []span {
	var out []span
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// alwaysBlocked are blocked whatever --allow-private-targets says: no
// webhook receiver lives there, even in development, and some hold what an
// attacker wants most, the cloud metadata services that hand instance
// credentials to whoever asks from inside the instance. The services are
// listed before their enclosing ranges so that errors name them.
var alwaysBlocked = concat(
	// AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle Cloud, Hetzner,
	// Tencent and most other clouds answer on 169.254.169.254.
	named("a link-local address (cloud metadata)", "169.254.169.254/32"),
	named("a link-local address (AWS ECS task metadata)", "169.254.170.2/32"),
	named("cloud metadata (AWS, over IPv6)", "fd00:ec2::254/128"),
	// The rest of fd00:ec2::/32 is AWS's other instance services (DNS,
	// time), a unique local range no one else picks by chance.
	named("an AWS instance service address (fd00:ec2::/32)", "fd00:ec2::/32"),
	named("cloud metadata (GCP, over IPv6)", "fd20:ce::254/128"),
	named("cloud metadata (Alibaba Cloud)", "100.100.100.200/32"),
	// Azure's wire server (agent and extension configuration) sits on an
	// address that looks public.
	named("the Azure wire server (cloud metadata)", "168.63.129.16/32"),
	named("cloud metadata (Oracle Cloud Classic)", "192.0.0.192/32"),
	kind("a link-local address", "169.254.0.0/16", "fe80::/10"),
	// Connecting to 0.0.0.0 or :: reaches the local host on Linux.
	kind("an unspecified address", "0.0.0.0/8", "::/128"),
	kind("a multicast address", "224.0.0.0/4", "ff00::/8"),
	named("the broadcast address", "255.255.255.255/32"),
)

// privateRanges are blocked unless --allow-private-targets: the internal
// network, and the special-purpose ranges that are never on the public
// internet (RFC 6890 and its IPv6 registry). The latter are not dangerous
// the way metadata is; they are blocked because no production receiver can
// live there, and lifted with the private ones because developers do use
// them locally (documentation addresses in examples, 198.18.0.0/15 in
// fake-IP proxies, unique local addresses in container networks).
var privateRanges = concat(
	kind("a loopback address", "127.0.0.0/8", "::1/128"),
	kind("a private address", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
	kind("a carrier-grade NAT address", "100.64.0.0/10"),
	kind("a unique local address", "fc00::/7"),
	kind("a site-local address (deprecated)", "fec0::/10"),
	kind("an IETF protocol assignment", "192.0.0.0/24"),
	kind("a documentation address", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"),
	kind("a benchmarking address", "198.18.0.0/15", "2001:2::/48"),
	kind("a reserved address", "240.0.0.0/4", "2001:10::/28", "2001:20::/28"),
	kind("a discard-only address", "100::/64"),
)

// globalUnicast is the only IPv6 space assigned for the public internet;
// what lies outside it and in no range above (and carries no IPv4 address)
// is unassigned, and treated as reserved.
var globalUnicast = netip.MustParsePrefix("2000::/3")

var (
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour  = netip.MustParsePrefix("2002::/16")
	teredo     = netip.MustParsePrefix("2001::/32")
	translated = netip.MustParsePrefix("::ffff:0:0:0/96")
	compatible = netip.MustParsePrefix("::/96")
)

// judge says whether ip is blocked under p, and why. ip carries no zone.
func (p *Policy) judge(ip netip.Addr) (verdict, bool) {
	addr := ip
	if v4, ok := embeddedIPv4(ip); ok {
		addr = v4
	}
	for _, s := range alwaysBlocked {
		if s.prefix.Contains(addr) {
			return verdict{addr: addr, what: s.what, always: true}, true
		}
	}
	if p.AllowPrivate {
		return verdict{}, false
	}
	for _, s := range privateRanges {
		if s.prefix.Contains(addr) {
			return verdict{addr: addr, what: s.what}, true
		}
	}
	if addr.Is6() && !globalUnicast.Contains(addr) {
		return verdict{addr: addr, what: "a reserved address (outside 2000::/3, the global unicast space)"}, true
	}
	return verdict{}, false
}

// embeddedIPv4 returns the IPv4 address an IPv6 address stands for, in the
// forms that reach it: IPv4-mapped (::ffff:a.b.c.d), SIIT-translated
// (::ffff:0:a.b.c.d), IPv4-compatible (::a.b.c.d, deprecated, still
// accepted by some stacks), NAT64 (64:ff9b::/96 and the local-use
// 64:ff9b:1::/48, read as a /96: a gateway that uses a shorter prefix
// inside it is its operator's to police), 6to4 (2002:AABB:CCDD::/48) and
// Teredo (2001::/32, the client address inverted in the last 32 bits).
// Each is judged as the IPv4 address it carries: ::ffff:169.254.169.254 is
// the metadata service to a dual-stack socket.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	if ip.Is4In6() {
		return ip.Unmap(), true
	}
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	last := [4]byte(b[12:16])
	switch {
	case nat64.Contains(ip), nat64Local.Contains(ip), translated.Contains(ip):
		return netip.AddrFrom4(last), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	case teredo.Contains(ip):
		var client [4]byte
		binary.BigEndian.PutUint32(client[:], ^binary.BigEndian.Uint32(last[:]))
		return netip.AddrFrom4(client), true
	case compatible.Contains(ip) && ip != netip.IPv6Unspecified() && ip != netip.IPv6Loopback():
		return netip.AddrFrom4(last), true
	}
	return netip.Addr{}, false
}
