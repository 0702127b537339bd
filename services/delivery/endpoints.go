package delivery

import (
	"context"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// endpoints caps the requests in flight per host. A worker waits a little
// for a slot, then gives up: the job is handed back to JetStream and the
// worker moves on to other endpoints' jobs, so a slow or hung endpoint
// holds at most its cap of workers.
type endpoints struct {
	max   int
	mu    sync.Mutex
	hosts map[string]*endpoint
}

// endpoint is one host's slots. congested is set when a worker waited for
// a slot in vain and cleared when one is released: while it is set,
// workers do not wait at all, so a hung endpoint's queued jobs are handed
// back at once instead of costing every worker a wait each.
type endpoint struct {
	slots     chan struct{}
	congested atomic.Bool
}

func newEndpoints(max int) *endpoints { return &endpoints{max: max, hosts: map[string]*endpoint{}} }

// acquire takes a slot for rawURL's host within wait; release gives it
// back.
func (e *endpoints) acquire(ctx context.Context, rawURL string, wait time.Duration) (release func(), ok bool) {
	e.mu.Lock()
	h := host(rawURL)
	ep := e.hosts[h]
	if ep == nil {
		ep = &endpoint{slots: make(chan struct{}, e.max)}
		e.hosts[h] = ep
	}
	e.mu.Unlock()
	release = func() {
		<-ep.slots
		ep.congested.Store(false)
	}
	select {
	case ep.slots <- struct{}{}:
		return release, true
	default:
	}
	if ep.congested.Load() {
		return nil, false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case ep.slots <- struct{}{}:
		return release, true
	case <-t.C:
		ep.congested.Store(true)
	case <-ctx.Done():
	}
	return nil, false
}

// host is the host:port a URL points at.
func host(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.Host
	}
	return rawURL
}
