package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// Control is the net.Dialer Control hook. It runs after the socket is
// created and before connect(2), with the address being connected to, and
// that address is the one the check must be made on: the URL was judged
// when the subscription was written and its name resolved then, but DNS
// answers again at every delivery, and a name that was public yesterday
// (or a millisecond ago, in DialContext's own lookup) can answer
// 169.254.169.254 now (DNS rebinding). Only the address handed to the
// kernel is where the packets go, so only a check on it cannot be talked
// around. It fails closed: an address it cannot read as ip:port is
// blocked.
func (p *Policy) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return blocked("cannot judge the dialed address %q (%s)", address, network)
	}
	return p.CheckIP(ap.Addr())
}

// lookupNetworks maps the networks DialContext dials to the address
// families it resolves. Webhooks go over TCP; anything else is refused.
var lookupNetworks = map[string]string{"tcp": "ip", "tcp4": "ip4", "tcp6": "ip6"}

// DialContext is http.Transport's DialContext under the policy. It
// resolves addr's host with p.Resolver (an IP literal, in any spelling
// CheckURLStatic reads, is taken as the address it spells), drops the
// blocked addresses, and dials the others in order with a dialer whose
// Control re-checks the address actually connected to.
//
// When every address is blocked, the error wraps ErrBlocked (the delivery
// is dead-lettered: no retry makes the address legal). When some address
// was allowed but could not be reached, the error is the dial error, which
// is retryable, and names the blocked addresses it skipped: a receiver
// whose name also has a private address is still delivered to once its
// public one answers. A blocked address is never connected to.
func (p *Policy) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	family, ok := lookupNetworks[network]
	if !ok {
		return nil, blocked("network %q is not allowed; webhooks go over TCP", network)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, blocked("cannot judge the dial address %q: %v", addr, err)
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	ip, isIP, err := parseHost(name)
	var ips []netip.Addr
	switch {
	case err != nil:
		return nil, blocked("%v", err)
	case isIP:
		if v, ok := p.judge(ip.WithZone("")); ok {
			return nil, blocked("%s; %s", v.explain(host, name, ip.WithZone("")), v.hint())
		}
		ips = []netip.Addr{ip}
	default:
		if ips, err = p.resolver().LookupNetIP(ctx, family, host); err != nil {
			return nil, err
		}
		if len(ips) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
		if msg, all := p.judgeAll(ips); all {
			return nil, blocked("%s resolves only to blocked addresses: %s", host, msg)
		}
	}

	d := p.dialer()
	failed := &dialError{addr: addr}
	for _, ip := range ips {
		if v, ok := p.judge(ip.WithZone("")); ok {
			failed.skipped = append(failed.skipped, v.explain(ip.String(), ip.String(), ip.WithZone("")))
			continue
		}
		c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		var op *net.OpError
		if errors.As(err, &op) && errors.Is(op.Err, ErrBlocked) {
			return nil, op.Err // refused at connect time: the reason, unwrapped, starts with the prefix
		}
		failed.errs = append(failed.errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(failed.errs) == 1 && len(failed.skipped) == 0 {
		return nil, failed.errs[0]
	}
	return nil, failed
}

// dialer is p.Dialer, or the default, with the policy's check installed as
// its ControlContext, ahead of the dialer's own Control or ControlContext.
// ControlContext, not Control: net.Dialer ignores Control when
// ControlContext is set, so a caller's ControlContext would otherwise
// switch the check off.
func (p *Policy) dialer() *net.Dialer {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if p.Dialer != nil {
		d = *p.Dialer
	}
	control, controlContext := d.Control, d.ControlContext
	d.Control = nil
	d.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
		if err := p.Control(network, address, c); err != nil {
			return err
		}
		switch {
		case controlContext != nil:
			return controlContext(ctx, network, address, c)
		case control != nil:
			return control(network, address, c)
		}
		return nil
	}
	return &d
}

// dialError is the failure of a dial that had allowed addresses: each
// one's error (so errors.As finds a timeout) and the blocked addresses
// skipped.
type dialError struct {
	addr    string
	errs    []error
	skipped []string
}

func (e *dialError) Error() string {
	var b strings.Builder
	b.WriteString("dial " + e.addr + ": ")
	for i, err := range e.errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	if len(e.skipped) > 0 {
		b.WriteString(" (blocked addresses skipped: " + strings.Join(e.skipped, ", ") + ")")
	}
	return b.String()
}

func (e *dialError) Unwrap() []error { return e.errs }
