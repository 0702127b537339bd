package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

func newTestGate(l gateLimits) *gate {
	if l.slowAfter == 0 {
		l.slowAfter = time.Hour // no request turns slow unless the test says so
	}
	return newGate(l, slog.New(slog.DiscardHandler))
}

// admitted asks for a request and fails the test unless it is admitted at
// once.
func admitted(t *testing.T, g *gate, tenant, url string) *slot {
	t.Helper()
	s, r := g.acquire(t.Context(), tenant, url, 0)
	if s == nil {
		t.Fatalf("%s -> %s refused (%s), want admitted", tenant, url, r.reason)
	}
	return s
}

// refused asks for a request, waiting up to wait, and fails the test
// unless it is refused for want.
func refused(t *testing.T, g *gate, tenant, url string, wait time.Duration, want deferReason) refusal {
	t.Helper()
	s, r := g.acquire(t.Context(), tenant, url, wait)
	if s != nil {
		s.release(false)
		t.Fatalf("%s -> %s admitted, want refused (%s)", tenant, url, want)
	}
	if r.reason != want {
		t.Fatalf("%s -> %s refused for %s, want %s", tenant, url, r.reason, want)
	}
	return r
}

func hostURL(i int) string { return fmt.Sprintf("http://10.0.0.%d:8080/hook", i) }

// One tenant's endpoints together hold at most its share, however many
// hosts they are on; another tenant is admitted beside it.
func TestTenantShareBoundsAllOfATenantsEndpoints(t *testing.T) {
	t.Parallel()
	g := newTestGate(gateLimits{perEndpoint: 4, share: 4, slowBudget: 4})
	var held []*slot
	for i := range 4 {
		held = append(held, admitted(t, g, "a", hostURL(i))) // four hosts, one request each
	}
	// Over its share, on a fifth host: refused once SlotWait runs out.
	refused(t, g, "a", hostURL(5), 50*time.Millisecond, deferTenantShare)
	// Another tenant, even on one of a's hosts, is not held back.
	held = append(held, admitted(t, g, "b", hostURL(0)))

	// Once a's requests have finished none for stuckAfter, a's next job is
	// refused at once rather than after SlotWait.
	time.Sleep(stuckAfter + 50*time.Millisecond)
	start := time.Now()
	refused(t, g, "a", hostURL(6), 2*time.Second, deferTenantShare)
	if took := time.Since(start); took > time.Second {
		t.Errorf("a stuck tenant's job was refused after %s, want at once", took)
	}
	for _, s := range held {
		s.release(false)
	}
	if st := g.state(); st.hosts != 0 || st.tenants != 0 {
		t.Errorf("entries left after every request ended: %+v", st)
	}
}

// A job over its tenant's share waits while the tenant's requests keep
// finishing, and takes the room one of them leaves.
func TestTenantShareWaitsWhileTheTenantIsBusy(t *testing.T) {
	t.Parallel()
	g := newTestGate(gateLimits{perEndpoint: 4, share: 2, slowBudget: 2})
	s1 := admitted(t, g, "a", hostURL(1))
	s2 := admitted(t, g, "a", hostURL(2))
	got := make(chan *slot)
	go func() {
		s, _ := g.acquire(context.Background(), "a", hostURL(3), 2*time.Second)
		got <- s
	}()
	time.Sleep(50 * time.Millisecond)
	s1.release(false)
	select {
	case s := <-got:
		if s == nil {
			t.Fatal("the waiting job was refused, want admitted into the room s1 left")
		}
		s.release(false)
	case <-time.After(time.Second):
		t.Fatal("the waiting job was not admitted within a second of the room appearing")
	}
	s2.release(false)
}

// Few of one tenant's jobs wait at once: another waits a moment for a
// waiter's place, then is refused, long before its own wait is up, so the
// waiting ones do not take the workers.
func TestTenantWaitersBounded(t *testing.T) {
	t.Parallel()
	g := newTestGate(gateLimits{perEndpoint: 8, share: 4, slowBudget: 2}) // a quarter of the share: one waiter
	var held []*slot
	for i := range 4 {
		held = append(held, admitted(t, g, "a", hostURL(i)))
	}
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		_, _ = g.acquire(context.Background(), "a", hostURL(9), 3*time.Second)
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	refused(t, g, "a", hostURL(9), 3*time.Second, deferTenantShare)
	if took := time.Since(start); took < stuckAfter/2 || took > 4*stuckAfter {
		t.Errorf("a second waiter was refused after %s, want after about %s", took, stuckAfter)
	}
	for _, s := range held {
		s.release(false)
	}
	<-waited
}

// A tenant whose requests finish fast may have as many jobs waiting as it
// finishes in stuckAfter: its backlog waits in the workers, served at its
// endpoints' pace, rather than being deferred.
func TestTenantWaitersFollowThePace(t *testing.T) {
	t.Parallel()
	g := newTestGate(gateLimits{perEndpoint: 8, share: 4, slowBudget: 2})
	held := []*slot{admitted(t, g, "a", hostURL(0))} // keeps the tenant's entry, and its pace
	for range 40 {                                   // 40 requests finished within a moment: the pace
		admitted(t, g, "a", hostURL(1)).release(false)
	}
	time.Sleep(stuckAfter / 5) // long enough into the window to be measured
	for i := 1; i < 4; i++ {
		held = append(held, admitted(t, g, "a", hostURL(i)))
	}
	results := make(chan *slot, 10)
	for range 10 {
		go func() {
			s, _ := g.acquire(context.Background(), "a", hostURL(9), 3*time.Second)
			results <- s
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		g.mu.Lock()
		n := g.tenants["a"].waiting
		g.mu.Unlock()
		if n == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 10 jobs wait, want all: the tenant finished 40 requests in a moment", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, s := range held {
		s.release(false)
	}
	for range 10 {
		if s := <-results; s == nil {
			t.Error("a waiting job was refused")
		} else {
			s.release(false)
		}
	}
}

// A request in flight past SlowAfter makes its endpoint slow. Requests to
// slow endpoints hold at most the slow budget, and one tenant's at most
// half of it; a slow endpoint's job over either is refused at once, and
// says how long the endpoint has been slow.
func TestSlowBudget(t *testing.T) {
	t.Parallel()
	const slowAfter = 50 * time.Millisecond
	g := newTestGate(gateLimits{perEndpoint: 8, share: 8, slowBudget: 4, slowAfter: slowAfter})
	hung := hostURL(1)
	a1 := admitted(t, g, "a", hung)
	a2 := admitted(t, g, "a", hung)
	a3 := admitted(t, g, "a", hung) // before the endpoint is known slow, only the cap and share apply
	time.Sleep(slowAfter + 50*time.Millisecond)
	if n := g.state().slowInFlight; n != 3 {
		t.Fatalf("%d requests counted slow after SlowAfter, want 3", n)
	}
	start := time.Now()
	r := refused(t, g, "a", hung, 2*time.Second, deferSlow) // a holds 3, over its half (2)
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("a slow endpoint's job was refused after %s, want at once", took)
	}
	if !r.slow || r.slowFor < slowAfter/2 {
		t.Errorf("refusal %+v, want slow for about %s", r, slowAfter)
	}
	// Another tenant's job for a healthy host is admitted; for the slow
	// host, it takes the budget's last request; then the budget is spent.
	b1 := admitted(t, g, "b", hostURL(2))
	b2 := admitted(t, g, "b", hung)
	refused(t, g, "c", hung, time.Second, deferSlow)
	if n := g.state().slowInFlight; n != 4 {
		t.Errorf("%d requests counted slow, want 4", n)
	}
	for _, s := range []*slot{a1, a2, a3, b2} {
		s.release(true)
	}
	b1.release(false)
	if st := g.state(); st.slowInFlight != 0 || st.hosts != 0 || st.tenants != 0 {
		t.Errorf("state after every request ended: %+v, want nothing in flight and no entries", st)
	}
}

// A slow endpoint stays known as slow after its last request ends (its
// next job counts against the budget from the start), until an attempt to
// it is quick again.
func TestSlowEndpointRememberedBetweenJobs(t *testing.T) {
	t.Parallel()
	g := newTestGate(gateLimits{perEndpoint: 4, share: 4, slowBudget: 1})
	h := hostURL(1)
	admitted(t, g, "a", h).release(true) // took SlowAfter or timed out
	if st := g.state(); st.hosts != 0 || st.remembered != 1 {
		t.Fatalf("state %+v, want no live entry and one remembered slow host", st)
	}
	s := admitted(t, g, "a", h)
	if n := g.state().slowInFlight; n != 1 {
		t.Errorf("%d requests counted slow, want 1: the host is remembered slow", n)
	}
	r := refused(t, g, "b", h, time.Second, deferSlow) // budget of one, spent
	if !r.slow {
		t.Errorf("refusal %+v, want slow", r)
	}
	s.release(false) // quick again
	if st := g.state(); st.remembered != 0 || st.slowInFlight != 0 {
		t.Errorf("state %+v, want the host forgotten after a quick attempt", st)
	}
	admitted(t, g, "b", h).release(false)
}

// An endpoint at its cap whose requests keep finishing is busy: a job
// waits for its slot. One whose requests finish none is stuck: a job is
// refused at once.
func TestPerEndpointCapBusyOrStuck(t *testing.T) {
	t.Parallel()
	g := newTestGate(gateLimits{perEndpoint: 1, share: 8, slowBudget: 4})
	h := hostURL(1)
	s := admitted(t, g, "a", h)
	go func() { time.Sleep(50 * time.Millisecond); s.release(false) }()
	s2, r := g.acquire(t.Context(), "b", h, 2*time.Second)
	if s2 == nil {
		t.Fatalf("refused (%s), want admitted once the busy endpoint's request ended", r.reason)
	}
	time.Sleep(stuckAfter + 50*time.Millisecond)
	start := time.Now()
	refused(t, g, "c", h, 2*time.Second, deferCongested)
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("a stuck endpoint's job was refused after %s, want at once", took)
	}
	s2.release(false)
}

// The slow memory keeps a streak's start across marks, forgets a host
// after its TTL or when told, and stays within its bound by dropping the
// host seen slow longest ago.
func TestSlowMemory(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	m := newSlowMemory(time.Minute, 3)
	if !m.mark("a", t0) || m.mark("a", t0.Add(10*time.Second)) {
		t.Error("a first mark must start a streak, a second must not")
	}
	if since, ok := m.slowSince("a", t0.Add(20*time.Second)); !ok || !since.Equal(t0) {
		t.Errorf("slowSince = %s, %v; want the streak's start %s", since, ok, t0)
	}
	// Expiry counts from the last mark.
	if _, ok := m.slowSince("a", t0.Add(65*time.Second)); !ok {
		t.Error("forgotten 55s after its last mark, TTL is a minute")
	}
	if _, ok := m.slowSince("a", t0.Add(71*time.Second)); ok {
		t.Error("still known 61s after its last mark, TTL is a minute")
	}
	if m.len() != 0 {
		t.Errorf("%d entries after expiry, want 0", m.len())
	}
	// The bound: the one seen slow longest ago goes first.
	m.mark("b", t0)
	m.mark("c", t0.Add(time.Second))
	m.mark("d", t0.Add(2*time.Second))
	m.mark("b", t0.Add(3*time.Second)) // b seen again: c is now the oldest
	m.mark("e", t0.Add(4*time.Second))
	if m.len() != 3 {
		t.Errorf("%d entries, bound is 3", m.len())
	}
	if _, ok := m.slowSince("c", t0.Add(5*time.Second)); ok {
		t.Error("c kept; it was seen slow longest ago and should have made room")
	}
	if !m.forget("b") || m.forget("b") {
		t.Error("forget must report b known once, then not")
	}
}

// A deferred job waits as long as its endpoint has been slow, between
// DeferDelay and DeferMax plus up to half again of jitter; a job refused
// for another reason waits DeferDelay and a little.
func TestDeferDelayGrowsWithSlowness(t *testing.T) {
	t.Parallel()
	d := &Delivery{cfg: Config{DeferDelay: time.Second, DeferMax: 30 * time.Second}.Defaults()}
	for _, tt := range []struct {
		name     string
		r        refusal
		min, max time.Duration
	}{
		{"not slow", refusal{reason: deferTenantShare}, time.Second, 1500 * time.Millisecond},
		{"slow for a moment", refusal{reason: deferSlow, slow: true, slowFor: 100 * time.Millisecond}, time.Second, 1500 * time.Millisecond},
		{"slow for 8s", refusal{reason: deferSlow, slow: true, slowFor: 8 * time.Second}, 8 * time.Second, 12 * time.Second},
		{"slow for an hour", refusal{reason: deferSlow, slow: true, slowFor: time.Hour}, 30 * time.Second, 45 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for range 100 {
				if got := d.deferDelay(tt.r); got < tt.min || got > tt.max {
					t.Fatalf("delay %s, want within [%s, %s]", got, tt.min, tt.max)
				}
			}
		})
	}
}

// The shares follow the workers unless set, and never exceed them.
func TestConfigDefaultsShares(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name                      string
		in                        Config
		share, budget, perEndpont int
	}{
		{"default", Config{}, 128, 64, 64},
		{"16 workers", Config{Workers: 16}, 8, 4, 4},
		{"one worker", Config{Workers: 1}, 1, 1, 1},
		{"set above the workers", Config{Workers: 8, TenantShare: 20, SlowBudget: 20, PerEndpoint: 20}, 8, 8, 8},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.in.Defaults()
			if c.TenantShare != tt.share || c.SlowBudget != tt.budget || c.PerEndpoint != tt.perEndpont {
				t.Errorf("share %d, slow budget %d, per endpoint %d; want %d, %d, %d",
					c.TenantShare, c.SlowBudget, c.PerEndpoint, tt.share, tt.budget, tt.perEndpont)
			}
			if c.SlowAfter != time.Second || c.DeferMax != 30*time.Second {
				t.Errorf("slow after %s, defer max %s; want 1s and 30s", c.SlowAfter, c.DeferMax)
			}
		})
	}
}
