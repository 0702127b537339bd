package delivery

import (
	"context"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// stuckAfter is how long an endpoint may go with every slot taken and no
// request finishing before it counts as stuck. A healthy endpoint with all
// its slots busy finishes one request every few milliseconds; one that
// finishes none in a quarter second is hung or crawling.
const stuckAfter = 250 * time.Millisecond

// endpoints caps the requests in flight per host, so that a slow or hung
// endpoint holds at most its cap of workers.
//
// A full endpoint whose requests keep finishing is merely busy: a worker
// waits for its slot (up to SlotWait), as deferring would only add a
// second of latency to a healthy endpoint's burst. A full endpoint where
// nothing has finished for stuckAfter is stuck: its jobs are handed back
// to JetStream at once, and the workers move on to other endpoints.
//
// An endpoint's entry lives while some worker holds or waits for one of its
// slots: the last to leave removes it, so hosts seen once do not pile up.
type endpoints struct {
	max   int
	mu    sync.Mutex
	hosts map[string]*endpoint
}

type endpoint struct {
	slots chan struct{}
	// progress is when a request last finished (or the endpoint was first
	// seen), in Unix nanoseconds.
	progress atomic.Int64
	// users counts the workers holding or waiting for a slot; guarded by
	// endpoints.mu.
	users int
}

func newEndpoints(max int) *endpoints { return &endpoints{max: max, hosts: map[string]*endpoint{}} }

// acquire takes a slot for rawURL's host; release gives it back.
func (e *endpoints) acquire(ctx context.Context, rawURL string, wait time.Duration) (release func(), ok bool) {
	h := host(rawURL)
	ep := e.enter(h)
	release = func() {
		ep.progress.Store(time.Now().UnixNano())
		<-ep.slots
		e.leave(h, ep)
	}
	if e.take(ctx, ep, wait) {
		return release, true
	}
	e.leave(h, ep)
	return nil, false
}

// enter registers a worker with h's entry, creating it if need be.
func (e *endpoints) enter(h string) *endpoint {
	e.mu.Lock()
	defer e.mu.Unlock()
	ep := e.hosts[h]
	if ep == nil {
		ep = &endpoint{slots: make(chan struct{}, e.max)}
		ep.progress.Store(time.Now().UnixNano())
		e.hosts[h] = ep
	}
	ep.users++
	return ep
}

// leave unregisters a worker; the last one out removes the entry.
func (e *endpoints) leave(h string, ep *endpoint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ep.users--; ep.users == 0 {
		delete(e.hosts, h)
	}
}

// size is how many endpoints have an entry.
func (e *endpoints) size() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.hosts)
}

// take waits for one of ep's slots: at once if one is free, else while the
// endpoint keeps making progress, giving up as soon as it looks stuck,
// after wait, or when ctx ends.
func (e *endpoints) take(ctx context.Context, ep *endpoint, wait time.Duration) bool {
	select {
	case ep.slots <- struct{}{}:
		return true
	default:
	}
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(stuckAfter / 5)
	defer tick.Stop()
	for time.Since(time.Unix(0, ep.progress.Load())) <= stuckAfter && time.Now().Before(deadline) {
		select {
		case ep.slots <- struct{}{}:
			return true
		case <-tick.C:
		case <-ctx.Done():
			return false
		}
	}
	return false
}

// host is the host:port a URL points at.
func host(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.Host
	}
	return rawURL
}
