package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Resolver is what the policy resolves hostnames with; *net.Resolver
// satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Policy is the egress policy. The zero value blocks private targets and
// uses the system resolver.
type Policy struct {
	// AllowPrivate lets http:// and private addresses through
	// (--allow-private-targets, for local development and tests). The
	// always-blocked ranges stay blocked.
	AllowPrivate bool
	Resolver     Resolver
	// Dialer dials allowed addresses; nil means a 10s timeout. Its Control
	// is replaced by the policy's.
	Dialer *net.Dialer
}

func (p *Policy) resolver() Resolver {
	if p.Resolver != nil {
		return p.Resolver
	}
	return net.DefaultResolver
}

// CheckURLStatic judges everything about a URL that needs no DNS: scheme,
// userinfo, host, port, and an IP literal in any spelling a resolver would
// accept. It is what documents read back from the bucket are held to.
func (p *Policy) CheckURLStatic(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	switch {
	case u.Scheme == "http" && !p.AllowPrivate:
		return fmt.Errorf("%q must use https (http only with scanwire run --allow-private-targets)", raw)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q must use https", raw)
	case u.Opaque != "" || u.Host == "":
		return fmt.Errorf("%q must be an absolute URL with a host, like https://hooks.example.com/scanwire", raw)
	case u.User != nil:
		return fmt.Errorf("%q must not carry a user or password; put credentials in the secret", raw)
	case strings.ContainsAny(u.Host, "\\@"):
		return fmt.Errorf("%q has a malformed host", raw)
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port must be 1-65535", raw)
		}
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return fmt.Errorf("%q must name a host", raw)
	}
	if ip, ok, err := parseHostIP(host); err != nil {
		return fmt.Errorf("%q: %v", raw, err)
	} else if ok {
		if err := p.CheckIP(ip); err != nil {
			return fmt.Errorf("%q: %w", raw, err)
		}
		return nil
	}
	if (host == "localhost" || strings.HasSuffix(host, ".localhost")) && !p.AllowPrivate {
		return fmt.Errorf("%q: %w", raw, &blockedError{ip: netip.IPv4Unspecified(), what: "loopback"})
	}
	return nil
}

// CheckURL is CheckURLStatic plus the hostname's addresses, for write
// time: a host that does not resolve, or resolves only to blocked
// addresses, is refused. (A host that resolves to a mix passes; the dial
// check refuses the blocked ones when they are dialed.)
func (p *Policy) CheckURL(ctx context.Context, raw string) error {
	if err := p.CheckURLStatic(raw); err != nil {
		return err
	}
	u, _ := url.Parse(raw)
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if _, ok, _ := parseHostIP(host); ok {
		return nil
	}
	ips, err := p.resolver().LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return fmt.Errorf("%q: host %s does not resolve; check the name", raw, host)
	}
	var errs []error
	for _, ip := range ips {
		err := p.CheckIP(ip)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%q: every address of %s is blocked: %w", raw, host, errors.Join(errs...))
}

// parseHostIP recognises an IP literal, including the legacy IPv4 forms
// inet_aton accepts (2852039166, 0251.0376.0251.0376, 0xa9fea9fe, 127.1):
// a resolver would dial them as the address they spell, so they are judged
// as that address. A host that looks numeric but is none of these is an
// error, not a name to look up.
func parseHostIP(host string) (netip.Addr, bool, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, true, nil
	}
	if strings.Contains(host, ":") {
		return netip.Addr{}, false, fmt.Errorf("host %s is not a valid IPv6 address", host)
	}
	parts := strings.Split(host, ".")
	numeric := true
	for _, part := range parts {
		if _, ok := inetNumber(part); !ok {
			numeric = false
		}
	}
	if !numeric {
		// A name, unless its last label is all digits (no TLD is).
		last := parts[len(parts)-1]
		if last != "" && strings.Trim(last, "0123456789") == "" {
			return netip.Addr{}, false, fmt.Errorf("host %s is neither a valid IP address nor a DNS name", host)
		}
		return netip.Addr{}, false, nil
	}
	if len(parts) > 4 {
		return netip.Addr{}, false, fmt.Errorf("host %s is not a valid IPv4 address", host)
	}
	nums := make([]uint64, len(parts))
	for i, part := range parts {
		nums[i], _ = inetNumber(part)
	}
	// inet_aton: a, a.b (b: 24 bits), a.b.c (c: 16 bits), a.b.c.d.
	var v uint64
	last := nums[len(nums)-1]
	for i, n := range nums[:len(nums)-1] {
		if n > 255 {
			return netip.Addr{}, false, fmt.Errorf("host %s is not a valid IPv4 address", host)
		}
		v |= n << (24 - 8*i)
	}
	if last >= 1<<(8*(5-len(nums))) {
		return netip.Addr{}, false, fmt.Errorf("host %s is not a valid IPv4 address", host)
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true, nil
}

// inetNumber parses one inet_aton part: decimal, 0-prefixed octal or
// 0x-prefixed hex.
func inetNumber(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := 10
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		s, base = s[2:], 16
		if s == "" {
			return 0, true // "0x" is 0 to inet_aton
		}
	case len(s) > 1 && s[0] == '0':
		s, base = s[1:], 8
	}
	n, err := strconv.ParseUint(s, base, 32)
	return n, err == nil
}
