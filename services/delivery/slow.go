package delivery

import "time"

// What the slow memory keeps, and for how long. An entry outlives the
// endpoint's live entry in the gate (which goes with its last request), so
// a hung host stays known as slow between its jobs: a deferred job comes
// back after at most DeferMax and a half, well within the TTL. The bound
// keeps a tenant who points at thousands of hosts from growing the map
// without end; past it, the host seen slow longest ago is forgotten first.
const (
	slowMemoryTTL = 5 * time.Minute
	slowMemoryMax = 10_000
)

// slowMemory remembers the endpoints (host:port) found slow: a request to
// them stayed in flight past SlowAfter, or an attempt took that long or
// timed out. An endpoint is forgotten when an attempt to it completes
// quickly again, or slowMemoryTTL after it was last found slow. Not safe
// for concurrent use: the gate guards it.
type slowMemory struct {
	ttl   time.Duration
	max   int
	hosts map[string]slowRecord
}

// slowRecord is one slow endpoint: since when it has been slow (the start
// of this streak, which sets how long its jobs are deferred) and when it
// was last found slow (which sets when it is forgotten).
type slowRecord struct {
	since, seen time.Time
}

func newSlowMemory(ttl time.Duration, max int) *slowMemory {
	return &slowMemory{ttl: ttl, max: max, hosts: map[string]slowRecord{}}
}

// mark records h as slow at now; fresh says a new streak began.
func (m *slowMemory) mark(h string, now time.Time) (fresh bool) {
	r, ok := m.lookup(h, now)
	if !ok {
		m.makeRoom(now)
		r.since = now
	}
	r.seen = now
	m.hosts[h] = r
	return !ok
}

// slowSince is when h's current slow streak began, if h is known slow.
func (m *slowMemory) slowSince(h string, now time.Time) (time.Time, bool) {
	r, ok := m.lookup(h, now)
	return r.since, ok
}

// forget drops h: it answered quickly. known says it was known slow.
func (m *slowMemory) forget(h string) (known bool) {
	_, known = m.hosts[h]
	delete(m.hosts, h)
	return known
}

func (m *slowMemory) len() int { return len(m.hosts) }

// lookup returns h's record, dropping it if it has expired.
func (m *slowMemory) lookup(h string, now time.Time) (slowRecord, bool) {
	r, ok := m.hosts[h]
	if ok && now.Sub(r.seen) > m.ttl {
		delete(m.hosts, h)
		return slowRecord{}, false
	}
	return r, ok
}

// makeRoom keeps the map under its bound before an insert: expired
// entries go first, then the one seen slow longest ago. Both are scans,
// made only when the map is full.
func (m *slowMemory) makeRoom(now time.Time) {
	if len(m.hosts) < m.max {
		return
	}
	for h, r := range m.hosts {
		if now.Sub(r.seen) > m.ttl {
			delete(m.hosts, h)
		}
	}
	for len(m.hosts) >= m.max {
		var oldest string
		var at time.Time
		for h, r := range m.hosts {
			if oldest == "" || r.seen.Before(at) {
				oldest, at = h, r.seen
			}
		}
		delete(m.hosts, oldest)
	}
}
