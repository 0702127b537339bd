package egress

import (
	"encoding/binary"
	"net/netip"
)

// tier is how the policy treats the addresses of a range.
type tier uint8

const (
	// private ranges are blocked unless Policy.AllowPrivate: the internal
	// network, and the special-purpose space no production receiver lives
	// in, which developers do use locally (documentation addresses in
	// examples, 198.18.0.0/15 in fake-IP proxies, unique local addresses in
	// container networks).
	private tier = iota
	// always ranges are blocked whatever the policy says: no webhook
	// receiver lives there, even in development, and some hold what an
	// attacker wants most, the cloud metadata services that hand instance
	// credentials to whoever asks from inside the instance.
	always
	// carrier ranges are IPv6 spellings of IPv4 addresses (mapped,
	// translated, compatible, NAT64, 6to4, Teredo): not blocked for
	// themselves, but judged as the IPv4 address they carry, because that is
	// where a dual-stack socket, a translator or a tunnel sends the packets.
	carrier
)

// entry is one range of the table: a registry's row, or a cloud provider's
// metadata address.
type entry struct {
	prefix netip.Prefix
	// name and ref are the registry's Name and RFC columns (or the service
	// and who runs it): the source, kept beside the code that enforces it.
	name, ref string
	// what completes "X is ..." in messages: "a private address
	// (10.0.0.0/8)".
	what string
	tier tier
	// embeds, when set, is the IPv4 address an address of the range
	// carries. It is judged first: a blocked IPv4 address blocks its IPv6
	// spelling whatever the entry's own tier.
	embeds func(netip.Addr) netip.Addr
}

// row is a registry entry; its message names the range.
func row(t tier, cidr, what, name, ref string) entry {
	return entry{prefix: netip.MustParsePrefix(cidr), name: name, ref: ref, what: what + " (" + cidr + ")", tier: t}
}

// service is a cloud metadata address, always blocked; its message names
// the service rather than the range.
func service(cidr, what, who string) entry {
	return entry{prefix: netip.MustParsePrefix(cidr), name: what, ref: who, what: what, tier: always}
}

// carries is a range judged as the IPv4 address it carries, and also by its
// own tier when it has one (t other than carrier).
func carries(t tier, cidr, what, name, ref string, embeds func(netip.Addr) netip.Addr) entry {
	e := row(t, cidr, what, name, ref)
	e.embeds = embeds
	return e
}

// table is every range the policy knows. It is complete by construction:
// judge takes the most specific entry that holds an address (an always
// entry first), so a range is listed once, as its registry lists it, and
// nested entries (192.0.0.8/32 inside 192.0.0.0/24, Teredo inside
// 2001::/23) need no ordering. IPv6 addresses in no entry and outside
// 2000::/3 are blocked too (see judge).
//
// The IANA rows are transcribed from the IPv4 and IPv6 Special-Purpose
// Address Registries (https://www.iana.org/assignments/iana-ipv4-special-registry,
// https://www.iana.org/assignments/iana-ipv6-special-registry) as they
// stood in 2025: every entry, including those the registry marks globally
// reachable (anycast services, AS112, ORCHIDv2, DETs), since none of them
// is where a webhook receiver lives. The newest IPv4 entry is 192.0.0.10/32
// (allocated 2017-02), the newest IPv6 entry 100:0:0:1::/64 (2025-04).
// When the registries change, add the row here and its address to
// TestRegistry.
var table = []entry{
	// Cloud metadata and instance services, in no registry. They sit inside
	// ranges below (link-local, unique local, IETF assignments) or on
	// addresses that look public, and are named for what they are.
	service("169.254.169.254/32", "a link-local address (cloud metadata)", "AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle Cloud, Hetzner, Tencent"),
	service("169.254.170.2/32", "a link-local address (AWS ECS task metadata)", "AWS"),
	service("fd00:ec2::254/128", "cloud metadata (AWS, over IPv6)", "AWS"),
	// The rest of fd00:ec2::/32 is AWS's other instance services (DNS,
	// time), a unique local range no one else picks by chance.
	service("fd00:ec2::/32", "an AWS instance service address (fd00:ec2::/32)", "AWS"),
	service("fd20:ce::254/128", "cloud metadata (GCP, over IPv6)", "GCP"),
	service("100.100.100.200/32", "cloud metadata (Alibaba Cloud)", "Alibaba Cloud"),
	// Azure's wire server (agent and extension configuration).
	service("168.63.129.16/32", "the Azure wire server (cloud metadata)", "Azure"),
	service("192.0.0.192/32", "cloud metadata (Oracle Cloud Classic)", "Oracle"),

	// IANA IPv4 Special-Purpose Address Registry, in its order.
	// Connecting to 0.0.0.0 or :: reaches the local host on Linux.
	row(always, "0.0.0.0/8", "an unspecified address", `"This network"`, "RFC 791, section 3.2"),
	row(always, "0.0.0.0/32", "an unspecified address", `"This host on this network"`, "RFC 1122, section 3.2.1.3"),
	row(private, "10.0.0.0/8", "a private address", "Private-Use", "RFC 1918"),
	row(private, "100.64.0.0/10", "a carrier-grade NAT address", "Shared Address Space", "RFC 6598"),
	row(private, "127.0.0.0/8", "a loopback address", "Loopback", "RFC 1122, section 3.2.1.3"),
	row(always, "169.254.0.0/16", "a link-local address", "Link Local", "RFC 3927"),
	row(private, "172.16.0.0/12", "a private address", "Private-Use", "RFC 1918"),
	row(private, "192.0.0.0/24", "an IETF protocol assignment", "IETF Protocol Assignments", "RFC 6890, section 2.1"),
	row(private, "192.0.0.0/29", "an IETF protocol assignment, the IPv4 service continuity prefix", "IPv4 Service Continuity Prefix", "RFC 7335"),
	row(private, "192.0.0.8/32", "an IETF protocol assignment, the IPv4 dummy address", "IPv4 dummy address", "RFC 7600"),
	row(private, "192.0.0.9/32", "an IETF protocol assignment, Port Control Protocol anycast", "Port Control Protocol Anycast", "RFC 7723"),
	row(private, "192.0.0.10/32", "an IETF protocol assignment, TURN anycast", "Traversal Using Relays around NAT Anycast", "RFC 8155"),
	row(private, "192.0.0.170/32", "an IETF protocol assignment, NAT64/DNS64 discovery", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 section 2.2"),
	row(private, "192.0.0.171/32", "an IETF protocol assignment, NAT64/DNS64 discovery", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 section 2.2"),
	row(private, "192.0.2.0/24", "a documentation address", "Documentation (TEST-NET-1)", "RFC 5737"),
	row(private, "192.31.196.0/24", "an AS112 DNS sink address", "AS112-v4", "RFC 7535"),
	row(private, "192.52.193.0/24", "an AMT relay anycast address", "AMT", "RFC 7450"),
	row(private, "192.88.99.0/24", "a 6to4 relay anycast address (deprecated)", "Deprecated (6to4 Relay Anycast)", "RFC 7526"),
	row(private, "192.88.99.2/32", "a 6a44 relay anycast address", "6a44-relay anycast address", "RFC 6751"),
	row(private, "192.168.0.0/16", "a private address", "Private-Use", "RFC 1918"),
	row(private, "192.175.48.0/24", "an AS112 DNS sink address", "Direct Delegation AS112 Service", "RFC 7534"),
	row(private, "198.18.0.0/15", "a benchmarking address", "Benchmarking", "RFC 2544"),
	row(private, "198.51.100.0/24", "a documentation address", "Documentation (TEST-NET-2)", "RFC 5737"),
	row(private, "203.0.113.0/24", "a documentation address", "Documentation (TEST-NET-3)", "RFC 5737"),
	row(private, "240.0.0.0/4", "a reserved address", "Reserved", "RFC 1112, section 4"),
	row(always, "255.255.255.255/32", "the broadcast address", "Limited Broadcast", "RFC 8190, RFC 919 section 7"),
	// IANA IPv4 Multicast Address Space Registry.
	row(always, "224.0.0.0/4", "a multicast address", "Multicast", "RFC 5771"),

	// IANA IPv6 Special-Purpose Address Registry, in its order.
	row(private, "::1/128", "a loopback address", "Loopback Address", "RFC 4291"),
	row(always, "::/128", "an unspecified address", "Unspecified Address", "RFC 4291"),
	carries(carrier, "::ffff:0:0/96", "an IPv4-mapped address", "IPv4-mapped Address", "RFC 4291", last32),
	carries(carrier, "64:ff9b::/96", "a NAT64 address", "IPv4-IPv6 Translat.", "RFC 6052", last32),
	// The local-use NAT64 prefix is not globally reachable, and a network
	// may carve any RFC 6052 prefix length out of it, which puts the IPv4
	// address elsewhere than the last 32 bits: the whole range is private.
	// Its /96 reading is judged too, so that the always-blocked addresses
	// stay blocked under AllowPrivate.
	carries(private, "64:ff9b:1::/48", "a local-use IPv4/IPv6 translation address", "IPv4-IPv6 Translat.", "RFC 8215", last32),
	row(private, "100::/64", "a discard-only address", "Discard-Only Address Block", "RFC 6666"),
	row(private, "100:0:0:1::/64", "a dummy address", "Dummy IPv6 Prefix", "RFC 9780"),
	row(private, "2001::/23", "an IETF protocol assignment", "IETF Protocol Assignments", "RFC 2928"),
	carries(carrier, "2001::/32", "a Teredo address", "TEREDO", "RFC 4380, RFC 8190", teredoClient),
	row(private, "2001:1::1/128", "an IETF protocol assignment, Port Control Protocol anycast", "Port Control Protocol Anycast", "RFC 7723"),
	row(private, "2001:1::2/128", "an IETF protocol assignment, TURN anycast", "Traversal Using Relays around NAT Anycast", "RFC 8155"),
	row(private, "2001:1::3/128", "an IETF protocol assignment, DNS-SD service registration anycast", "DNS-SD Service Registration Protocol Anycast", "RFC 9665"),
	row(private, "2001:2::/48", "a benchmarking address", "Benchmarking", "RFC 5180, RFC Errata 1752"),
	row(private, "2001:3::/32", "an AMT relay anycast address", "AMT", "RFC 7450"),
	row(private, "2001:4:112::/48", "an AS112 DNS sink address", "AS112-v6", "RFC 7535"),
	row(private, "2001:10::/28", "a reserved address", "Deprecated (previously ORCHID)", "RFC 4843"),
	row(private, "2001:20::/28", "an ORCHIDv2 overlay identifier", "ORCHIDv2", "RFC 7343"),
	row(private, "2001:30::/28", "a drone remote ID tag", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374"),
	row(private, "2001:db8::/32", "a documentation address", "Documentation", "RFC 3849"),
	carries(carrier, "2002::/16", "a 6to4 address", "6to4", "RFC 3056", sixToFourRouter),
	row(private, "2620:4f:8000::/48", "an AS112 DNS sink address", "Direct Delegation AS112 Service", "RFC 7534"),
	row(private, "3fff::/20", "a documentation address", "Documentation", "RFC 9637"),
	row(private, "5f00::/16", "a segment routing (SRv6) SID", "Segment Routing (SRv6) SIDs", "RFC 9602"),
	row(private, "fc00::/7", "a unique local address", "Unique-Local", "RFC 4193, RFC 8190"),
	row(always, "fe80::/10", "a link-local address", "Link-Local Unicast", "RFC 4291"),

	// IPv6 ranges outside the special-purpose registry.
	// SIIT's IPv4-translated addresses (::ffff:0:a.b.c.d), which some
	// translators still accept.
	carries(carrier, "::ffff:0:0:0/96", "an IPv4-translated address", "IPv4-translated address", "RFC 2765 (obsoleted by RFC 6145)", last32),
	// IPv4-compatible addresses (::a.b.c.d), deprecated, still accepted by
	// some stacks; :: and ::1 inside it are rows of their own.
	carries(carrier, "::/96", "an IPv4-compatible address", "IPv4-Compatible IPv6 Address (deprecated)", "RFC 4291, section 2.5.5.1", last32),
	row(private, "fec0::/10", "a site-local address (deprecated)", "Site-Local (deprecated)", "RFC 3879"),
	row(always, "ff00::/8", "a multicast address", "Multicast", "RFC 4291"),
}

// globalUnicast is the only IPv6 space assigned for the public internet;
// what lies outside it and in no entry is unassigned, and treated as
// reserved.
var globalUnicast = netip.MustParsePrefix("2000::/3")

// last32 reads the IPv4 address in the last 32 bits: mapped, translated,
// compatible, NAT64 /96.
func last32(ip netip.Addr) netip.Addr {
	b := ip.As16()
	return netip.AddrFrom4([4]byte(b[12:16]))
}

// sixToFourRouter reads a 6to4 address's router, 2002:AABB:CCDD::/48.
func sixToFourRouter(ip netip.Addr) netip.Addr {
	b := ip.As16()
	return netip.AddrFrom4([4]byte(b[2:6]))
}

// teredoClient reads a Teredo address's client, inverted in the last 32
// bits (2001:0:<server>:<flags>:<port>:<client>).
func teredoClient(ip netip.Addr) netip.Addr {
	b := ip.As16()
	var client [4]byte
	binary.BigEndian.PutUint32(client[:], ^binary.BigEndian.Uint32(b[12:16]))
	return netip.AddrFrom4(client)
}

// lookup returns the entry that decides ip: the most specific always entry
// that holds it, or else the most specific entry of any tier.
func lookup(ip netip.Addr) (entry, bool) {
	var best, bestAlways *entry
	for i := range table {
		e := &table[i]
		if !e.prefix.Contains(ip) {
			continue
		}
		if best == nil || e.prefix.Bits() > best.prefix.Bits() {
			best = e
		}
		if e.tier == always && (bestAlways == nil || e.prefix.Bits() > bestAlways.prefix.Bits()) {
			bestAlways = e
		}
	}
	switch {
	case bestAlways != nil:
		return *bestAlways, true
	case best != nil:
		return *best, true
	}
	return entry{}, false
}

// judge says whether ip is blocked under p, and why. ip carries no zone.
func (p *Policy) judge(ip netip.Addr) (verdict, bool) {
	e, ok := lookup(ip)
	if !ok {
		if ip.Is6() && !globalUnicast.Contains(ip) {
			return verdict{addr: ip, what: "a reserved address (outside 2000::/3, the global unicast space)"}, !p.AllowPrivate
		}
		return verdict{}, false
	}
	if e.embeds != nil {
		// An IPv4 address is in no carrier range, so this goes one level
		// deep.
		if v, blocked := p.judge(e.embeds(ip)); blocked {
			return v, true
		}
	}
	switch {
	case e.tier == always:
		return verdict{addr: ip, what: e.what, always: true}, true
	case e.tier == private && !p.AllowPrivate:
		return verdict{addr: ip, what: e.what}, true
	}
	return verdict{}, false
}
