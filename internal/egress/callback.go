package egress

import (
	"context"
	"time"
)

// callbackLookup bounds CheckCallbackURL's DNS lookup: it runs inside an
// HTTP request, a CLI command or a fan-out handler, none of which should
// wait on a slow resolver for a check that delivery makes again anyway.
const callbackLookup = 3 * time.Second

// CheckCallbackURL judges the callback_url a scan.started event carries.
// It is the one check fan-out, POST /v1/events and `scanwire publish` all
// make, so that a callback URL is refused at every door with the same
// message: the caller reports it as the problem of data/callback_url.
//
// It is CheckURLStatic plus the host's addresses: a name that resolves only
// to blocked addresses is refused (wrapping ErrBlocked), naming each
// address, its range and the fix. Unlike CheckURL (subscriptions, written
// by hand once), a name that does not resolve, or cannot be resolved now
// (NXDOMAIN, no answer, a timeout, ctx ending), passes: an event must not
// be refused because DNS is down, and delivery resolves the name again and
// judges the address it dials. The lookup lasts at most a few seconds.
func (p *Policy) CheckCallbackURL(ctx context.Context, raw string) error {
	host, isIP, err := p.checkStatic(raw)
	if err != nil || isIP {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callbackLookup)
	defer cancel()
	ips, err := p.resolver().LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil // judged at dial time
	}
	return p.refuseResolved(raw, host, ips)
}
