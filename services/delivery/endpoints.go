package delivery

import (
	"net/url"
	"sync"
)

// endpoints caps the requests in flight per host. A slot is taken without
// waiting: a worker that finds its endpoint full hands the job back and
// moves on to other endpoints' jobs.
type endpoints struct {
	max      int
	mu       sync.Mutex
	inFlight map[string]int
}

func newEndpoints(max int) *endpoints { return &endpoints{max: max, inFlight: map[string]int{}} }

// acquire takes a slot for rawURL's host; release gives it back.
func (e *endpoints) acquire(rawURL string) (release func(), ok bool) {
	host := host(rawURL)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inFlight[host] >= e.max {
		return nil, false
	}
	e.inFlight[host]++
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.inFlight[host]--; e.inFlight[host] == 0 {
			delete(e.inFlight, host)
		}
	}, true
}

// host is the host:port a URL points at.
func host(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.Host
	}
	return rawURL
}
