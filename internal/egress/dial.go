package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Control is a net.Dialer Control hook: it runs after the address is
// resolved and before the connection is made, so it judges the IP that is
// actually dialed. Checking the URL's host at write time is not enough: a
// name can resolve to a public address then and to 169.254.169.254 at
// delivery time (DNS rebinding). Anything it cannot parse is blocked.
func (p *Policy) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot judge dial address %q", ErrBlocked, address)
	}
	return p.CheckIP(ap.Addr())
}

// DialContext is http.Transport's DialContext under the policy: it
// resolves addr's host, skips the blocked addresses, and dials the others
// in order with the Control check as a second line. When every address is
// blocked it returns the ErrBlocked error, so the delivery is dead-lettered
// as "egress blocked" rather than retried.
func (p *Policy) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, ok, perr := parseHostIP(host); perr != nil {
		return nil, fmt.Errorf("%w: %v", ErrBlocked, perr)
	} else if ok {
		ips = []netip.Addr{ip}
	} else if ips, err = p.resolver().LookupNetIP(ctx, "ip", host); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if p.Dialer != nil {
		d = *p.Dialer
	}
	d.Control = p.Control
	var blocked, failed []error
	for _, ip := range ips {
		if err := p.CheckIP(ip); err != nil {
			blocked = append(blocked, err)
			continue
		}
		c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		failed = append(failed, err)
	}
	if len(failed) == 0 && len(blocked) > 0 {
		return nil, errors.Join(blocked...)
	}
	// Some address was allowed and could not be reached: a retryable
	// failure. The blocked ones are named, not wrapped.
	msg := fmt.Sprintf("dial %s: %v", addr, errors.Join(failed...))
	if len(blocked) > 0 {
		msg += fmt.Sprintf(" (and %d blocked address(es) skipped: %v)", len(blocked), errors.Join(blocked...))
	}
	return nil, errors.New(msg)
}
