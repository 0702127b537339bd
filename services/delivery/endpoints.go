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
}

func newEndpoints(max int) *endpoints { return &endpoints{max: max, hosts: map[string]*endpoint{}} }

// acquire takes a slot for rawURL's host; release gives it back.
func (e *endpoints) acquire(ctx context.Context, rawURL string, wait time.Duration) (release func(), ok bool) {
	e.mu.Lock()
	h := host(rawURL)
	ep := e.hosts[h]
	if ep == nil {
		ep = &endpoint{slots: make(chan struct{}, e.max)}
		ep.progress.Store(time.Now().UnixNano())
		e.hosts[h] = ep
	}
	e.mu.Unlock()
	release = func() {
		ep.progress.Store(time.Now().UnixNano())
		<-ep.slots
	}
	select {
	case ep.slots <- struct{}{}:
		return release, true
	default:
	}
	// Wait while the endpoint keeps making progress; give up as soon as it
	// looks stuck, or after wait.
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(stuckAfter / 5)
	defer tick.Stop()
	for time.Since(time.Unix(0, ep.progress.Load())) <= stuckAfter && time.Now().Before(deadline) {
		select {
		case ep.slots <- struct{}{}:
			return release, true
		case <-tick.C:
		case <-ctx.Done():
			return nil, false
		}
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
