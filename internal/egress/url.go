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

// CheckURLStatic judges everything about a webhook URL that needs no DNS:
// the scheme (https; http only with AllowPrivate), no userinfo, a host,
// a port in 1-65535, and the host itself. An IP literal, in any spelling
// a resolver accepts (2852039166, 0251.0376.0251.0376, 0xa9fea9fe, 127.1,
// [::ffff:a9fe:a9fe]), is judged as the address it spells; a host that
// looks numeric but is no valid address is refused rather than looked up;
// localhost names and single-label names (which the resolver's search
// domains complete into internal names) are refused unless AllowPrivate.
//
// It is what needs no network: for documents read back from the store and
// URLs that arrive in events. Refusals of a destination wrap ErrBlocked;
// refusals of a malformed URL do not. Messages quote the URL and name the
// fix, ready to be shown to whoever wrote it.
func (p *Policy) CheckURLStatic(raw string) error {
	_, _, err := p.checkStatic(raw)
	return err
}

// CheckURL is CheckURLStatic plus the hostname's addresses, for write
// time. A name that does not resolve is refused: at write time it is a
// typo far more often than a receiver not yet in DNS, and catching it then
// beats dead-lettering every delivery. A name whose every address is
// blocked is refused, naming them. A name with some allowed address passes:
// which address a delivery reaches is decided when it is dialed, where
// DialContext skips the blocked ones.
func (p *Policy) CheckURL(ctx context.Context, raw string) error {
	host, isIP, err := p.checkStatic(raw)
	if err != nil || isIP {
		return err
	}
	ips, err := p.resolver().LookupNetIP(ctx, "ip", host)
	var dnsErr *net.DNSError
	switch {
	case err == nil && len(ips) == 0, errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Errorf("%q: host %s does not resolve; check the name", RedactURL(raw), host)
	case err != nil:
		return fmt.Errorf("%q: host %s could not be resolved now (%v); try again", RedactURL(raw), host, err)
	}
	return p.refuseResolved(raw, host, ips)
}

// Redacted stands in for the user and password RedactURL removes.
const Redacted = "REDACTED"

// RedactURL returns raw with its userinfo (a user, a password, a token)
// replaced by REDACTED: "https://u:pw@h/x" becomes "https://REDACTED@h/x".
// Every error and log line that quotes a URL someone typed quotes it
// through RedactURL, since such a URL may carry a credential (webhook
// URLs refuse one, but the refusal must not repeat it).
//
// It works on the text, so that a URL the parser refuses is redacted too,
// and it errs toward hiding: everything after "//" (or from the start,
// without one) up to the last "@" goes. A password may hold "/", "?" or
// "#" (base64 holds "/"), which would end the authority for a parser, so
// an "@" in the path or the query hides the host with it; webhook URLs
// seldom have one. The rest of raw is kept as written.
func RedactURL(raw string) string {
	start := 0
	if i := strings.Index(raw, "//"); i >= 0 {
		start = i + 2
	}
	at := strings.LastIndexByte(raw[start:], '@')
	if at < 0 {
		return raw
	}
	return raw[:start] + Redacted + raw[start+at:]
}

// refuseResolved refuses raw when every address its host resolved to is
// blocked, naming them; nil when some address is allowed (or there are
// none).
func (p *Policy) refuseResolved(raw, host string, ips []netip.Addr) error {
	if msg, blockedAll := p.judgeAll(ips); blockedAll {
		return blocked("%q: %s resolves only to blocked addresses: %s", RedactURL(raw), host, msg)
	}
	return nil
}

// judgeAll reports whether every address in ips is blocked, and if so
// names them and the fix.
func (p *Policy) judgeAll(ips []netip.Addr) (string, bool) {
	var reasons []string
	hint := hintAlways
	for _, ip := range ips {
		ip = ip.WithZone("")
		v, ok := p.judge(ip)
		if !ok {
			return "", false
		}
		reasons = append(reasons, v.explain(ip.String(), ip.String(), ip))
		if !v.always {
			hint = hintPrivate // the flag would let some address through
		}
	}
	return strings.Join(reasons, ", and ") + "; " + hint, len(ips) > 0
}

// checkStatic is CheckURLStatic, also returning the host (lower case,
// without its trailing dot) and whether it is an IP literal.
func (p *Policy) checkStatic(raw string) (string, bool, error) {
	shown := RedactURL(raw) // every message quotes the URL without its credentials
	u, err := url.Parse(raw)
	if err != nil {
		if shown != raw { // the parser's words may quote a piece of the password
			return "", false, fmt.Errorf("%q is not a valid URL, and must not carry a user or password", shown)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", false, fmt.Errorf("%q is not a valid URL: %v", raw, err)
	}
	switch {
	case u.Scheme == "http" && !p.AllowPrivate:
		return "", false, fmt.Errorf("%q must use https (http only with scanwire run --allow-private-targets, for local development)", shown)
	case u.Scheme != "https" && u.Scheme != "http":
		return "", false, fmt.Errorf("%q must use https", shown)
	case u.Opaque != "" || u.Host == "":
		return "", false, fmt.Errorf("%q must be an absolute URL with a host, like https://hooks.example.com/scanwire", shown)
	case u.User != nil:
		return "", false, fmt.Errorf("%q must not carry a user or password (its host is %s); deliveries are authenticated by their signature", shown, u.Hostname())
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", false, fmt.Errorf("%q: port must be 1-65535", shown)
		}
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return "", false, fmt.Errorf("%q must name a host, like https://hooks.example.com/scanwire", shown)
	}
	ip, isIP, err := parseHost(host)
	if err != nil {
		return "", false, fmt.Errorf("%q: %v", shown, err)
	}
	if isIP {
		if v, ok := p.judge(ip.WithZone("")); ok {
			return "", false, blocked("%s; %s", v.explain(strconv.Quote(shown), host, ip.WithZone("")), v.hint())
		}
		if ip.Zone() != "" {
			return "", false, fmt.Errorf("%q: an address with a zone (%%%s) is not on the public internet; remove it", shown, ip.Zone())
		}
		return host, true, nil
	}
	switch {
	case host == "metadata.google.internal":
		return "", false, blocked("%q names the GCP metadata service; %s", shown, hintAlways)
	case p.AllowPrivate:
	case host == "localhost" || strings.HasSuffix(host, ".localhost"):
		return "", false, blocked("%q names the local host (%s is a loopback name); %s", shown, host, hintPrivate)
	case !strings.Contains(host, "."):
		return "", false, blocked("%q names a host without a domain (%s), which only the local network resolves; %s", shown, host, hintPrivate)
	}
	return host, false, nil
}

// parseHost reads a lower-case host without its trailing dot: an IP
// address, or a DNS name (ok false), or an error for what is neither.
//
// IPv4 is read the way inet_aton reads it, as libc resolvers and browsers
// do: one to four parts, each decimal, 0-prefixed octal or 0x-prefixed
// hex, the last filling the remaining bytes (127.1 is 127.0.0.1,
// 2852039166 is 169.254.169.254). A host whose last label starts with a
// digit is numeric in intent (no top-level domain does) and is an error if
// it is no valid address: 1.2.3.4.5 or 0x1g must not be sent to a
// resolver that might read them some other way.
func parseHost(host string) (netip.Addr, bool, error) {
	if strings.Contains(host, ":") {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() {
			return netip.Addr{}, false, fmt.Errorf("host %s is not a valid IPv6 address", host)
		}
		return ip, true, nil
	}
	labels := strings.Split(host, ".")
	if ip, ok := inetAton(labels); ok {
		return ip, true, nil
	}
	if last := labels[len(labels)-1]; last != "" && last[0] >= '0' && last[0] <= '9' {
		return netip.Addr{}, false, fmt.Errorf("host %s looks like an IPv4 address but is not a valid one", host)
	}
	if len(host) > 253 {
		return netip.Addr{}, false, fmt.Errorf("host %s is longer than a DNS name can be", host)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return netip.Addr{}, false, fmt.Errorf("host %s is not a valid DNS name (empty or over-long label)", host)
		}
		for _, c := range []byte(l) {
			if c >= 0x80 {
				return netip.Addr{}, false, fmt.Errorf("host %s must be ASCII; write an internationalized name in its xn-- (punycode) form", host)
			}
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return netip.Addr{}, false, fmt.Errorf("host %s is not a valid DNS name (character %q)", host, c)
			}
		}
	}
	return netip.Addr{}, false, nil
}

// inetAton reads labels as an inet_aton IPv4 address.
func inetAton(labels []string) (netip.Addr, bool) {
	if len(labels) > 4 {
		return netip.Addr{}, false
	}
	var v uint64
	for i, l := range labels {
		n, ok := inetNumber(l)
		if !ok {
			return netip.Addr{}, false
		}
		if i < len(labels)-1 {
			if n > 255 {
				return netip.Addr{}, false
			}
			v |= n << (24 - 8*i)
			continue
		}
		// The last part fills the bytes left: 32, 24, 16 or 8 bits.
		if n >= 1<<(8*(5-len(labels))) {
			return netip.Addr{}, false
		}
		v |= n
	}
	var b [4]byte
	for i := range b {
		b[i] = byte(v >> (24 - 8*i))
	}
	return netip.AddrFrom4(b), true
}

// inetNumber parses one inet_aton part: decimal, 0-prefixed octal or
// 0x-prefixed hex ("0x" alone is 0, as inet_aton has it).
func inetNumber(s string) (uint64, bool) {
	base := 10
	switch {
	case s == "":
		return 0, false
	case strings.HasPrefix(s, "0x"):
		s, base = s[2:], 16
		if s == "" {
			return 0, true
		}
	case len(s) > 1 && s[0] == '0':
		s, base = s[1:], 8
	}
	n, err := strconv.ParseUint(s, base, 32)
	return n, err == nil
}
