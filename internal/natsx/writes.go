package natsx

import (
	"fmt"
	"sync"
	"time"
)

// Writes remembers whether the store has been taking this process's writes:
// the copies the consume loop stores, fan-out's jobs, the gateway's events.
// A store that fails every write (a full or failing disk makes the server
// refuse each one) looks connected and healthy from outside; readiness asks
// Writes instead. The zero value is ready to use; a nil *Writes ignores
// everything.
type Writes struct {
	mu      sync.Mutex
	lastErr error
	errAt   time.Time
	okAt    time.Time
}

// Observe records the outcome of one write: nil for stored. A write the
// caller gave up on for its own reasons (a stop) is not a store failure:
// do not observe it.
func (w *Writes) Observe(err error) {
	if w == nil {
		return
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.okAt = now
		return
	}
	if TooLarge(err) {
		return // the message's fault, not the store's
	}
	w.lastErr, w.errAt = err, now
}

// Failing returns the last write error when writes have been failing: the
// last write within window failed, and none has succeeded since. It
// returns nil otherwise.
func (w *Writes) Failing(window time.Duration) error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lastErr == nil || time.Since(w.errAt) > window || w.okAt.After(w.errAt) {
		return nil
	}
	return fmt.Errorf("the store refuses writes (last %s ago): %w", time.Since(w.errAt).Round(time.Second), w.lastErr)
}
