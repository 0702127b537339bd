package delivery

import (
	"context"
	"net/url"
	"sync"
	"time"
)

// endpoints caps the requests in flight per host. A worker waits a little
// for a slot, then gives up: the job is handed back to JetStream and the
// worker moves on to other endpoints' jobs, so a slow or hung endpoint
// holds at most its cap of workers.
type endpoints struct {
	max   int
	mu    sync.Mutex
	slots map[string]chan struct{}
}

func newEndpoints(max int) *endpoints { return &endpoints{max: max, slots: map[string]chan struct{}{}} }

// acquire takes a slot for rawURL's host within wait; release gives it
// back.
func (e *endpoints) acquire(ctx context.Context, rawURL string, wait time.Duration) (release func(), ok bool) {
	e.mu.Lock()
	h := host(rawURL)
	slots := e.slots[h]
	if slots == nil {
		slots = make(chan struct{}, e.max)
		e.slots[h] = slots
	}
	e.mu.Unlock()
	release = func() { <-slots }
	select {
	case slots <- struct{}{}:
		return release, true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return release, true
	case <-t.C:
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
