package delivery

import (
	"context"
	"log/slog"
	"net/url"
	"sync"
	"time"
)

// stuckAfter is how long an endpoint (or a tenant) may go with requests in
// flight and none finishing before it counts as stuck. A healthy endpoint
// with all its slots busy finishes one request every few milliseconds; one
// that finishes none in a quarter second is hung or crawling.
const stuckAfter = 250 * time.Millisecond

// gate decides which jobs may take a worker for a request, so that no
// tenant and no set of slow endpoints can take all the workers. Three
// limits apply to every request, checked in this order:
//
//   - The slow budget. An endpoint is slow while a request to it has been
//     in flight longer than SlowAfter, or when its last attempt took that
//     long or timed out (remembered in slowMemory after its entry here is
//     gone, so a hung host stays known as slow between jobs). Requests to
//     slow endpoints hold at most SlowBudget workers in all, and those of
//     one tenant at most half of that. A job for a slow endpoint never
//     waits: over either bound it is refused at once.
//   - The tenant share. All the endpoints of one tenant (the subscription's
//     owner) hold at most TenantShare workers, however many hosts and ports
//     it points at.
//   - The per-endpoint cap. One host:port holds at most PerEndpoint.
//
// A job over the share or the cap waits for room (up to SlotWait) only
// while the room is coming: the tenant's and the endpoint's requests keep
// finishing, the endpoint is not slow, and fewer of the tenant's jobs wait
// already than its requests finished in the last stuckAfter, or a quarter
// of the share if that is more; one past that bound waits up to stuckAfter
// for a waiter's place. Otherwise it is refused and the worker moves on; a
// refused job is deferred (deferral.go). So the jobs
// that wait are those served within about stuckAfter: a tenant whose
// endpoints answer fast keeps its backlog in the workers, at its
// endpoints' pace, rather than turning it into deferrals that come back
// later and leave the endpoints idle meanwhile; one whose endpoints are
// slower has the rest of its backlog deferred, so that the jobs of others
// behind it in DELIVERIES reach the workers.
//
// A live entry (endpoint or tenant) exists while some worker holds or waits
// for a request of it: the last to leave removes it, so hosts and tenants
// seen once do not pile up. Only the slow memory outlives it, bounded.
type gate struct {
	perEndpoint int
	share       int
	slowBudget  int
	// tenantSlow bounds the requests of one tenant to slow endpoints.
	tenantSlow int
	// tenantWaiters bounds the jobs of one tenant waiting for room.
	tenantWaiters int
	slowAfter     time.Duration
	log           *slog.Logger

	mu      sync.Mutex
	hosts   map[string]*endpoint
	tenants map[string]*tenantLoad
	// slowInFlight counts the requests in flight to slow endpoints.
	slowInFlight int
	slow         *slowMemory
}

// endpoint is one host:port's live entry.
type endpoint struct {
	host     string
	inFlight int
	// byTenant splits inFlight by tenant, so that a change of the
	// endpoint's slowness moves each tenant's slow count.
	byTenant map[*tenantLoad]int
	// overdue counts the requests in flight longer than slowAfter.
	overdue int
	// lagging is set when the last attempt that ended was slow (or, for a
	// new entry, when the slow memory knows the host).
	lagging bool
	// progress is when a request last finished, or the entry was made.
	progress time.Time
	users    int
	waiting  int
	// changed is closed (and replaced) when a request ends while a worker
	// waits.
	changed chan struct{}
}

// slow says whether requests to ep count against the slow budget.
func (ep *endpoint) slow() bool { return ep.overdue > 0 || ep.lagging }

// stuck says that ep has requests in flight and none has finished lately.
func (ep *endpoint) stuck(now time.Time) bool {
	return ep.inFlight > 0 && now.Sub(ep.progress) > stuckAfter
}

// tenantLoad is one tenant's live entry.
type tenantLoad struct {
	inFlight     int
	slowInFlight int
	progress     time.Time
	users        int
	waiting      int
	changed      chan struct{}
	// finished counts the requests that ended since window began;
	// last is that count for the window before (see pace).
	finished, last int
	window         time.Time
}

// pace is how many of the tenant's requests end in stuckAfter: as many as
// in the last whole window, or as the current one is on course for once
// it is a tenth in (so that a burst is measured within milliseconds).
func (t *tenantLoad) pace(now time.Time) int {
	p := t.last
	if since := now.Sub(t.window); since >= stuckAfter/10 && since < stuckAfter {
		p = max(p, int(int64(t.finished)*int64(stuckAfter)/int64(since)))
	}
	return p
}

// ended counts a request that ended at now in the tenant's pace.
func (t *tenantLoad) ended(now time.Time) {
	if since := now.Sub(t.window); since >= stuckAfter {
		t.last = 0
		if since < 2*stuckAfter {
			t.last = t.finished
		}
		t.finished, t.window = 0, now
	}
	t.finished++
}

func (t *tenantLoad) stuck(now time.Time) bool {
	return t.inFlight > 0 && now.Sub(t.progress) > stuckAfter
}

// gateLimits are the gate's bounds, from Config.
type gateLimits struct {
	perEndpoint, share, slowBudget int
	slowAfter                      time.Duration
}

func newGate(l gateLimits, log *slog.Logger) *gate {
	return &gate{perEndpoint: max(1, l.perEndpoint), share: max(1, l.share), slowBudget: max(1, l.slowBudget),
		tenantSlow: max(1, l.slowBudget/2), tenantWaiters: max(1, l.share/4), slowAfter: l.slowAfter, log: log,
		hosts: map[string]*endpoint{}, tenants: map[string]*tenantLoad{}, slow: newSlowMemory(slowMemoryTTL, slowMemoryMax)}
}

// refusal says why a job may not make its request now.
type refusal struct {
	reason deferReason
	// slow is set when the endpoint is slow; slowFor is how long it has
	// been (the deferral grows with it).
	slow    bool
	slowFor time.Duration
}

// verdict is what the gate says of one job at one moment.
type verdict int

const (
	admit verdict = iota
	wait
	// queue: the job would wait, but enough of its tenant's jobs wait
	// already: it waits a moment (stuckAfter) for a waiter's place.
	queue
	refuse
)

// slot is one admitted request; release ends it.
type slot struct {
	g     *gate
	t     *tenantLoad
	ep    *endpoint
	tname string
	// overdue and done are guarded by g.mu.
	overdue, done bool
	timer         *time.Timer
}

// acquire asks for one request of tenant to rawURL's host. Admitted, it
// returns a slot that must be released once the attempt ends. Refused, it
// says why: at once for a slow or stuck endpoint or tenant, or after
// waiting up to maxWait (or until ctx ends) for room that did not come.
func (g *gate) acquire(ctx context.Context, tenant, rawURL string, maxWait time.Duration) (*slot, refusal) {
	h := host(rawURL)
	g.mu.Lock()
	t, ep := g.enter(tenant, h)
	start := time.Now()
	deadline, queueBy := start.Add(maxWait), start.Add(min(maxWait, stuckAfter))
	waiting := false
	var tick *time.Ticker
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		now := time.Now()
		v, why := g.judge(t, ep, now, waiting)
		until := deadline
		if v == queue {
			until = queueBy
		}
		if (v == wait || v == queue) && (!now.Before(until) || ctx.Err() != nil) {
			v = refuse
		}
		if waiting && v != wait {
			waiting = false
			t.waiting--
			ep.waiting--
		}
		switch v {
		case admit:
			s := g.admit(t, ep, tenant, now)
			g.mu.Unlock()
			return s, refusal{}
		case refuse:
			r := refusal{reason: why, slow: ep.slow()}
			if since, ok := g.slow.slowSince(h, now); ok && r.slow {
				r.slowFor = now.Sub(since)
			}
			g.leave(tenant, t, ep)
			g.mu.Unlock()
			return nil, r
		}
		if !waiting && v == wait {
			waiting = true
			t.waiting++
			ep.waiting++
		}
		tc, ec := t.changed, ep.changed
		g.mu.Unlock()
		if tick == nil {
			// Stuck is judged by the clock, not by an event: look again
			// now and then.
			tick = time.NewTicker(stuckAfter / 5)
		}
		timer := time.NewTimer(time.Until(until))
		select {
		case <-tc:
		case <-ec:
		case <-tick.C:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		g.mu.Lock()
	}
}

// judge applies the limits to one job (see gate). waiting says the job
// waits already (it is counted in the tenant's waiters).
func (g *gate) judge(t *tenantLoad, ep *endpoint, now time.Time, waiting bool) (verdict, deferReason) {
	slow := ep.slow()
	if slow && (g.slowInFlight >= g.slowBudget || t.slowInFlight >= g.tenantSlow) {
		return refuse, deferSlow
	}
	why := deferReason("")
	switch {
	case t.inFlight >= g.share:
		why = deferTenantShare
		if slow || ep.stuck(now) || t.stuck(now) {
			return refuse, why
		}
	case ep.inFlight >= g.perEndpoint:
		why = deferCongested
		if slow {
			return refuse, deferSlow
		}
		if ep.stuck(now) {
			return refuse, why
		}
	default:
		return admit, ""
	}
	if !waiting && t.waiting >= max(g.tenantWaiters, t.pace(now)) {
		return queue, why
	}
	return wait, why
}

// enter registers a worker with the tenant's and the host's entries,
// making them if need be. A new endpoint entry starts slow if the slow
// memory knows the host.
func (g *gate) enter(tenant, h string) (*tenantLoad, *endpoint) {
	now := time.Now()
	t := g.tenants[tenant]
	if t == nil {
		t = &tenantLoad{progress: now, window: now, changed: make(chan struct{})}
		g.tenants[tenant] = t
	}
	t.users++
	ep := g.hosts[h]
	if ep == nil {
		_, known := g.slow.slowSince(h, now)
		ep = &endpoint{host: h, byTenant: map[*tenantLoad]int{}, lagging: known, progress: now, changed: make(chan struct{})}
		g.hosts[h] = ep
	}
	ep.users++
	return t, ep
}

// leave unregisters a worker; the last one out removes an entry.
func (g *gate) leave(tenant string, t *tenantLoad, ep *endpoint) {
	if t.users--; t.users == 0 {
		delete(g.tenants, tenant)
	}
	if ep.users--; ep.users == 0 {
		delete(g.hosts, ep.host)
	}
}

// admit counts a request in flight and arms its overdue timer.
func (g *gate) admit(t *tenantLoad, ep *endpoint, tenant string, now time.Time) *slot {
	s := &slot{g: g, t: t, ep: ep, tname: tenant}
	t.inFlight++
	g.change(ep, func() { ep.inFlight++; ep.byTenant[t]++ })
	s.timer = time.AfterFunc(g.slowAfter, s.overdueNow)
	return s
}

// overdueNow runs when a request has been in flight for slowAfter: its
// endpoint is slow from now on, for this request and the next ones.
func (s *slot) overdueNow() {
	g := s.g
	g.mu.Lock()
	if s.done {
		g.mu.Unlock()
		return
	}
	s.overdue = true
	g.change(s.ep, func() { s.ep.overdue++ })
	fresh := g.slow.mark(s.ep.host, time.Now())
	g.mu.Unlock()
	if fresh {
		g.log.Warn("endpoint slow: a request has been in flight past the slow threshold; its jobs now share the slow budget",
			"host", s.ep.host, "tenant", s.tname, "threshold", g.slowAfter)
	}
}

// release ends the request; slow says the attempt took SlowAfter or more,
// or timed out. A quick attempt clears the endpoint's slowness (unless
// other requests to it are overdue).
func (s *slot) release(slow bool) {
	g := s.g
	now := time.Now()
	g.mu.Lock()
	s.done = true
	s.timer.Stop()
	ep, t := s.ep, s.t
	g.change(ep, func() {
		ep.inFlight--
		if ep.byTenant[t]--; ep.byTenant[t] == 0 {
			delete(ep.byTenant, t)
		}
		if s.overdue {
			ep.overdue--
		}
		ep.lagging = slow
	})
	t.inFlight--
	t.ended(now)
	ep.progress, t.progress = now, now
	var fresh, recovered bool
	switch {
	case slow:
		fresh = g.slow.mark(ep.host, now)
	case ep.overdue == 0:
		recovered = g.slow.forget(ep.host)
	}
	if t.waiting > 0 {
		close(t.changed)
		t.changed = make(chan struct{})
	}
	if ep.waiting > 0 {
		close(ep.changed)
		ep.changed = make(chan struct{})
	}
	g.leave(s.tname, t, ep)
	g.mu.Unlock()
	switch {
	case fresh:
		g.log.Warn("endpoint slow: an attempt took past the slow threshold; its jobs now share the slow budget",
			"host", ep.host, "tenant", s.tname, "threshold", g.slowAfter)
	case recovered:
		g.log.Info("endpoint no longer slow", "host", ep.host, "tenant", s.tname)
	}
}

// change applies f to ep and keeps the slow counts (global and per
// tenant) in step with whether ep is slow before and after. Called with
// g.mu held.
func (g *gate) change(ep *endpoint, f func()) {
	g.countSlow(ep, -1)
	f()
	g.countSlow(ep, 1)
}

func (g *gate) countSlow(ep *endpoint, sign int) {
	if !ep.slow() {
		return
	}
	g.slowInFlight += sign * ep.inFlight
	for t, n := range ep.byTenant {
		t.slowInFlight += sign * n
	}
}

// gateState is a snapshot of the gate, for tests.
type gateState struct {
	hosts, tenants, slowInFlight, remembered int
}

func (g *gate) state() gateState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return gateState{hosts: len(g.hosts), tenants: len(g.tenants), slowInFlight: g.slowInFlight, remembered: g.slow.len()}
}

// host is the host:port a URL points at.
func host(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.Host
	}
	return rawURL
}
