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
	"syscall"
	"testing"
)

// errNoNetwork is what the fuzz targets' dialer answers instead of
// connecting: the address reached connect(2), and no further.
var errNoNetwork = errors.New("no network in fuzz tests")

// dialed runs p.DialContext for addr as http.Transport would, and returns
// the addresses it handed to connect(2), after the policy's own Control
// hook passed them. Names resolve to nothing (the static check is what is
// fuzzed), so only IP literals are dialed.
func dialed(p *Policy, addr string) ([]netip.Addr, error) {
	var got []netip.Addr
	q := *p
	q.Resolver = fakeResolver{}
	q.Dialer = &net.Dialer{ControlContext: func(_ context.Context, _, address string, _ syscall.RawConn) error {
		if ap, err := netip.ParseAddrPort(address); err == nil {
			got = append(got, ap.Addr())
		}
		return errNoNetwork
	}}
	_, err := q.DialContext(context.Background(), "tcp", addr)
	return got, err
}

// transportAddr is the address http.Transport dials for u: its host as
// written (CheckURLStatic accepts only ASCII hosts, which IDNA leaves
// alone) and its port or the scheme's.
func transportAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// Whatever the string, CheckURLStatic does not panic, and what it accepts
// is an http(s) URL without userinfo or zone whose host, if it is an IP
// address in any spelling, is allowed: by CheckIP of every parser's
// reading, and at dial time, where DialContext reads the host as the HTTP
// transport hands it over and the Control hook judges the address actually
// connected to. URL parsing and the dial-time judgement cannot disagree. A
// refusal of a destination carries the prefix the dead-letter reason
// relies on, and CheckCallbackURL judges an IP literal as CheckURLStatic
// does.
func FuzzCheckURL(f *testing.F) {
	for _, h := range hostile {
		f.Add(h.url)
	}
	for _, u := range []string{"https://[::ffff:0:7f00:1]/", "https://[::ffff:0:127.0.0.1]/", "https://0x7f.1/", "https://2130706433/",
		"https://[fe80::1%25eth0]/", "https://[0000:0000:0000:0000:0000:ffff:7f00:0001]/", "https://0177.0.0.01/", "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
		"http://[64:ff9b:1::808:808]:8080/x", "https://%31%32%37.0.0.1/", "https://8.8.8.8:0443/", "https://[::ffff:8.8.8.8]/"} {
		f.Add(u)
	}
	policies := []*Policy{{Resolver: panicResolver{}}, {AllowPrivate: true, Resolver: panicResolver{}}}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, p := range policies {
			err := p.CheckURLStatic(raw)
			if errors.Is(err, ErrBlocked) && !strings.HasPrefix(err.Error(), "egress blocked: ") {
				t.Fatalf("%q: blocked without the prefix: %v", raw, err)
			}
			host, isIP, _ := p.checkStatic(raw)
			if isIP {
				if cerr := p.CheckCallbackURL(context.Background(), raw); fmt.Sprint(cerr) != fmt.Sprint(err) {
					t.Fatalf("%q: CheckURLStatic said %v, CheckCallbackURL %v", raw, err, cerr)
				}
			}
			if err != nil {
				continue
			}
			u, perr := url.Parse(raw)
			if perr != nil {
				t.Fatalf("accepted %q, which url.Parse refuses: %v", raw, perr)
			}
			if u.Scheme != "https" && (u.Scheme != "http" || !p.AllowPrivate) {
				t.Fatalf("accepted %q, scheme %q (allow private: %v)", raw, u.Scheme, p.AllowPrivate)
			}
			if u.User != nil || u.Hostname() == "" || u.Opaque != "" {
				t.Fatalf("accepted %q: userinfo %v, host %q, opaque %q", raw, u.User, u.Hostname(), u.Opaque)
			}
			if strings.Contains(u.Hostname(), "%") {
				t.Fatalf("accepted %q, whose host carries a zone", raw)
			}
			lower := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
			if lower != host {
				t.Fatalf("accepted %q as host %q, but the URL's host is %q", raw, host, lower)
			}
			if ip, err := netip.ParseAddr(lower); err == nil && p.CheckIP(ip) != nil {
				t.Fatalf("accepted %q, an IP literal that is blocked: %v", raw, p.CheckIP(ip))
			}
			if ip := net.ParseIP(lower); ip != nil {
				if a, _ := netip.AddrFromSlice(ip); p.CheckIP(a) != nil {
					t.Fatalf("accepted %q, an IP literal that is blocked", raw)
				}
			}
			addrs, derr := dialed(p, transportAddr(u))
			if errors.Is(derr, ErrBlocked) {
				t.Fatalf("accepted %q, which DialContext refuses: %v", raw, derr)
			}
			if isIP && len(addrs) != 1 {
				t.Fatalf("accepted %q, an IP literal, but DialContext connected to %v (%v)", raw, addrs, derr)
			}
			for _, a := range addrs {
				if err := p.CheckIP(a); err != nil {
					t.Fatalf("accepted %q, but the address dialed is blocked: %v", raw, err)
				}
			}
		}
	})
}

// spellings are textual forms of ip that every resolver and the HTTP
// transport read as ip itself, each as it appears in a URL's host and as
// it reaches DialContext. zoned marks a form with an IPv6 zone, which is
// never on the public internet.
type spelling struct {
	url, dial string
	zoned     bool
}

func spellingsOf(ip netip.Addr) []spelling {
	var out []spelling
	plain := func(forms ...string) {
		for _, s := range forms {
			out = append(out, spelling{url: s, dial: s})
		}
	}
	v6 := func(forms ...string) {
		for _, s := range forms {
			out = append(out, spelling{url: "[" + s + "]", dial: s})
			out = append(out, spelling{url: "[" + s + "%25eth0]", dial: s + "%eth0", zoned: true})
		}
	}
	if ip.Is4() {
		b := ip.As4()
		n := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
		oct := func(v uint64) string { return "0" + strconv.FormatUint(v, 8) }
		hex := func(v uint64) string { return "0x" + strconv.FormatUint(v, 16) }
		d := func(i int) string { return strconv.Itoa(int(b[i])) }
		plain(
			ip.String(), ip.String()+".",
			strconv.FormatUint(n, 10), hex(n), strings.ToUpper(hex(n)), fmt.Sprintf("0x%08x", n), oct(n),
			hex(uint64(b[0]))+"."+hex(uint64(b[1]))+"."+hex(uint64(b[2]))+"."+hex(uint64(b[3])),
			oct(uint64(b[0]))+"."+oct(uint64(b[1]))+"."+oct(uint64(b[2]))+"."+oct(uint64(b[3])),
			// Zero-padded parts: octal stays octal, hex stays hex.
			"00"+oct(uint64(b[0]))+".000"+oct(uint64(b[1]))+".0"+oct(uint64(b[2]))+"."+oct(uint64(b[3])),
			fmt.Sprintf("0x%04x.0x%02x.0X%03X.0x%x", b[0], b[1], b[2], b[3]),
			d(0)+"."+d(1)+"."+strconv.FormatUint(n&0xffff, 10),
			d(0)+"."+hex(n&0xffffff),
			d(0)+"."+d(1)+"."+oct(n&0xffff),
		)
		hi, lo := n>>16, n&0xffff
		v6("::ffff:"+ip.String(), fmt.Sprintf("::ffff:%x:%x", hi, lo), fmt.Sprintf("0000:0000:0000:0000:0000:FFFF:%04X:%04X", hi, lo),
			"0:0:0:0:0:ffff:"+ip.String())
		return out
	}
	b := ip.As16()
	var words [8]uint16
	for i := range words {
		words[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	full, short := make([]string, 8), make([]string, 8)
	for i, w := range words {
		full[i], short[i] = fmt.Sprintf("%04x", w), fmt.Sprintf("%x", w)
	}
	v6(ip.String(), strings.Join(full, ":"), strings.ToUpper(strings.Join(full, ":")), strings.Join(short, ":"),
		strings.Join(short[:6], ":")+":"+netip.AddrFrom4([4]byte(b[12:16])).String())
	return out
}

// inside is the address of prefix whose host bits are fill's (zero where
// fill runs out).
func inside(prefix netip.Prefix, fill []byte) netip.Addr {
	b := prefix.Addr().As16()
	start := 0
	if prefix.Addr().Is4() {
		start = 12
	}
	for i := start; i < 16; i++ {
		var r byte
		if k := i - start; k < len(fill) {
			r = fill[k]
		}
		bit := (i - start) * 8 // the first bit of byte i within the address
		switch keep := prefix.Bits() - bit; {
		case keep >= 8:
		case keep <= 0:
			b[i] = r
		default:
			mask := byte(0xff) << (8 - keep)
			b[i] = b[i]&mask | r&^mask
		}
	}
	if prefix.Addr().Is4() {
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	return netip.AddrFrom16(b)
}

// Every address of every range in the table, in every textual form a
// resolver reads as that address (decimal, octal, hex, short and
// zero-padded IPv4; IPv4-mapped; compressed, expanded, zero-padded and
// upper-case IPv6; a zone), is judged as the address itself: refused by
// CheckURLStatic and by DialContext, before any connect, exactly when
// CheckIP refuses the address, and dialed as that very address otherwise.
// An IPv4 address that is refused is refused in each IPv6 form that carries
// it (translated, compatible, NAT64, 6to4, Teredo), and the always-blocked
// ranges are refused under every policy.
func FuzzSpellings(f *testing.F) {
	for i, e := range table {
		f.Add(uint16(i), []byte{})
		f.Add(uint16(i), []byte{0x7f, 0, 0, 1, byte(i), 0xff, 0xfe})
		if e.embeds != nil {
			f.Add(uint16(i), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa9, 0xfe, 0xa9, 0xfe})
		}
	}
	policies := []*Policy{{Resolver: panicResolver{}}, {AllowPrivate: true, Resolver: panicResolver{}}}
	f.Fuzz(func(t *testing.T, pick uint16, fill []byte) {
		e := table[int(pick)%len(table)]
		ip := inside(e.prefix, fill)
		if !e.prefix.Contains(ip) {
			t.Fatalf("%s is not in %s", ip, e.prefix)
		}
		for _, p := range policies {
			verdict := p.CheckIP(ip)
			if e.tier == always && verdict == nil {
				t.Fatalf("%s, in the always-blocked %s, is allowed (allow private: %v)", ip, e.prefix, p.AllowPrivate)
			}
			for _, s := range spellingsOf(ip) {
				judgeSpelling(t, p, ip, s, verdict != nil, true)
			}
			if !ip.Is4() || verdict == nil {
				continue
			}
			for name, form := range embeddings(ip) {
				if name == "compatible" && ip.As4()[0] == 0 && ip.As4()[1] == 0 && ip.As4()[2] == 0 && ip.As4()[3] <= 1 {
					continue // ::0.0.0.0 and ::0.0.0.1 are :: and ::1, judged as themselves
				}
				judgeSpelling(t, p, ip, spelling{url: "[" + form + "]", dial: form}, true, false)
			}
		}
	})
}

// judgeSpelling checks that s is refused in a URL and at dial time when
// blocked, and otherwise (for a spelling of ip itself) accepted and dialed
// as ip.
func judgeSpelling(t *testing.T, p *Policy, ip netip.Addr, s spelling, blocked, same bool) {
	t.Helper()
	raw := "https://" + s.url + "/"
	uerr := p.CheckURLStatic(raw)
	addrs, derr := dialed(p, net.JoinHostPort(s.dial, "443"))
	switch {
	case blocked && !errors.Is(uerr, ErrBlocked):
		t.Fatalf("%s is blocked, but %q is not refused as such (allow private: %v): %v", ip, raw, p.AllowPrivate, uerr)
	case blocked && (!errors.Is(derr, ErrBlocked) || len(addrs) > 0):
		t.Fatalf("%s is blocked, but dialing %s connected to %v (allow private: %v): %v", ip, s.dial, addrs, p.AllowPrivate, derr)
	case blocked || !same:
	case s.zoned && uerr == nil:
		t.Fatalf("%q, with a zone, is accepted", raw)
	case s.zoned:
	case uerr != nil:
		t.Fatalf("%s is allowed, but %q is refused (allow private: %v): %v", ip, raw, p.AllowPrivate, uerr)
	case len(addrs) != 1 || addrs[0] != ip.Unmap(): // a mapped address is dialed as IPv4
		t.Fatalf("%s is allowed, but dialing %s connected to %v: %v", ip, s.dial, addrs, derr)
	}
}
