// Package limits caps finding deliveries per (subscription, scan): at most
// findings_per_scan in all and findings_per_type of each finding type, as
// in the Detectify document. The state lives in a NATS KV bucket and every
// change is a compare-and-swap, so the caps are exact with any number of
// fan-out replicas, across crashes and redeliveries; a record expires on
// its own some time after its scan's last finding.
package limits

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/kvdoc"
)

// maxRemembered bounds how many suppressed event ids a record keeps to make
// a redelivered suppressed event count once. Past it, a suppressed event
// redelivered after a fan-out crash may be counted twice (never delivered).
const maxRemembered = 1_000

// Record is the state of one (subscription, scan).
type Record struct {
	// Admitted maps each admitted event id to its finding type. An event
	// in it stays admitted whenever it is seen again.
	Admitted map[string]string `json:"admitted"`
	// Suppressed maps suppressed event ids to their finding type.
	Suppressed map[string]string `json:"suppressed"`
	// SuppressedOverflow counts suppressions past maxRemembered.
	SuppressedOverflow int `json:"suppressed_overflow,omitempty"`
}

// Decision is the answer for one event.
type Decision struct {
	Admitted bool
	// Reason says which limit suppressed the event.
	Reason string
}

// Limiter decides and counts.
//
// The findings of one scan arrive at once, from many fan-out workers: were
// each to compare-and-swap the scan's record on its own, all but one would
// lose every round and retry, and a hot scan would turn into a storm of
// retries that holds fan-out's workers from every other tenant. So within
// a process the requests for one record queue up, and one of them writes
// the decisions of everyone queued at that moment in a single
// compare-and-swap (a group commit). Only replicas contend, one writer
// each.
type Limiter struct {
	kv     jetstream.KeyValue
	mu     sync.Mutex
	queues map[string][]*request // by record key; present while a writer runs
}

// request is one event waiting for its decision.
type request struct {
	ctx              context.Context
	perScan, perType int
	eventID, typ     string
	d                Decision
	err              error
	done             chan struct{}
}

// New returns a limiter over the limits bucket (natsx.BucketLimits).
func New(kv jetstream.KeyValue) *Limiter {
	return &Limiter{kv: kv, queues: map[string][]*request{}}
}

// Key is the record key of (tenant, subscription, scan):
// <tenant>.<subscription_id>.<scan_id>. A partner's subscription hears its
// customers' scans, and two customers may use the same scan id: their
// findings are counted apart, under
// <tenant>.<subscription_id>.<customer>.<scan_id>, where source is the
// event's tenant.
func Key(tenant, subscriptionID, source, scanID string) string {
	if source == "" || source == tenant {
		return tenant + "." + subscriptionID + "." + scanID
	}
	return tenant + "." + subscriptionID + "." + source + "." + scanID
}

// Admit decides whether a finding event passes the limits of one
// subscription for its scan, and records the decision. Asked again about
// the same event, it gives the same answer and counts nothing twice. The
// decision is made on the record as stored and written with
// compare-and-swap (kvdoc.Change): when another replica decided meanwhile,
// it is made again on that replica's record. Under too much contention the
// error wraps kvdoc.ErrContention and the event should be handled again
// later. Concurrent calls for one key share one write (see Limiter).
func (l *Limiter) Admit(ctx context.Context, key string, perScan, perType int, eventID, findingType string) (Decision, error) {
	r := &request{ctx: ctx, perScan: perScan, perType: perType, eventID: eventID, typ: findingType, done: make(chan struct{})}
	l.mu.Lock()
	q, running := l.queues[key]
	l.queues[key] = append(q, r)
	l.mu.Unlock()
	if !running {
		l.write(key)
	}
	select {
	case <-r.done:
		return r.d, r.err
	case <-ctx.Done():
		// Its decision may still be written: asked again, it is the same.
		return Decision{}, fmt.Errorf("limits of %s: %w", key, ctx.Err())
	}
}

// write decides everything queued for key in one compare-and-swap, then
// hands the requests queued meanwhile to a writer of their own, so that
// no caller waits for more than its own batch.
func (l *Limiter) write(key string) {
	l.mu.Lock()
	batch := l.queues[key]
	l.queues[key] = nil // running, nothing queued
	l.mu.Unlock()

	_, _, err := kvdoc.Change(longest(batch), l.kv, key, func(rec *Record, _ bool) error {
		for _, r := range batch {
			r.d = rec.decide(r.perScan, r.perType, r.eventID, r.typ)
		}
		return nil
	})
	for _, r := range batch {
		r.err = err
		close(r.done)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queues[key]) == 0 {
		delete(l.queues, key)
		return
	}
	go l.write(key)
}

// decide answers for one event and records a new decision in r. An event
// already decided keeps its answer and leaves r as it is.
func (r *Record) decide(perScan, perType int, eventID, findingType string) Decision {
	if _, ok := r.Admitted[eventID]; ok {
		return Decision{Admitted: true}
	}
	if t, ok := r.Suppressed[eventID]; ok {
		return Decision{Reason: r.reason(perScan, perType, t)}
	}
	d := Decision{Admitted: true}
	if reason := r.reason(perScan, perType, findingType); reason != "" {
		d = Decision{Reason: reason}
	}
	r.add(eventID, findingType, d.Admitted)
	return d
}

// reason says which limit a new event of findingType would break, or "".
func (r *Record) reason(perScan, perType int, findingType string) string {
	if len(r.Admitted) >= perScan {
		return fmt.Sprintf("findings_per_scan limit of %d reached", perScan)
	}
	n := 0
	for _, t := range r.Admitted {
		if t == findingType {
			n++
		}
	}
	if n >= perType {
		return fmt.Sprintf("findings_per_type limit of %d reached for %q", perType, findingType)
	}
	return ""
}

func (r *Record) add(eventID, findingType string, admitted bool) {
	switch {
	case admitted:
		if r.Admitted == nil {
			r.Admitted = map[string]string{}
		}
		r.Admitted[eventID] = findingType
	case len(r.Suppressed) >= maxRemembered:
		r.SuppressedOverflow++
	default:
		if r.Suppressed == nil {
			r.Suppressed = map[string]string{}
		}
		r.Suppressed[eventID] = findingType
	}
}

// ErrBadID is returned by ScanStats for a tenant or scan id that is not a
// valid subject token.
var ErrBadID = errors.New("invalid id")

// longest is the context of the request that may wait longest: a caller
// that has given up does not cut the others' write short.
func longest(batch []*request) context.Context {
	best := batch[0].ctx
	for _, r := range batch[1:] {
		if r.ctx.Err() != nil {
			continue
		}
		d, ok := r.ctx.Deadline()
		if bd, bok := best.Deadline(); best.Err() != nil || !ok || (bok && d.After(bd)) {
			best = r.ctx
		}
	}
	return best
}

// Stats is what the limits did for one (subscription, scan).
type Stats struct {
	SubscriptionID string `json:"subscription_id"`
	// Customer is set on a partner's subscription: the customer tenant
	// whose scan this is, counted apart from other customers' scans.
	Customer   string                `json:"customer,omitempty"`
	ScanID     string                `json:"scan_id"`
	Admitted   int                   `json:"admitted"`
	Suppressed int                   `json:"suppressed"`
	ByType     map[string]*TypeStats `json:"by_type"`
}

// TypeStats splits Stats by finding type.
type TypeStats struct {
	Admitted   int `json:"admitted"`
	Suppressed int `json:"suppressed"`
}

// ScanStats returns the stats of every subscription of tenant for a scan:
// the tenant's own scan, and for a partner each customer's scan of that id.
// A tenant or scan id that is not a subject token is refused with
// ErrBadID: either would become part of a subject filter (a "*" would read
// other scans' records).
func (l *Limiter) ScanStats(ctx context.Context, tenant, scanID string) ([]Stats, error) {
	if p := events.BadToken(tenant); p != "" {
		return nil, fmt.Errorf("%w: tenant %s", ErrBadID, p)
	}
	if p := events.BadToken(scanID); p != "" {
		return nil, fmt.Errorf("%w: scan id %s", ErrBadID, p)
	}
	lister, err := l.kv.ListKeysFiltered(ctx, tenant+".*."+scanID, tenant+".*.*."+scanID)
	if err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := []Stats{}
	for _, k := range keys {
		rec, rev, err := kvdoc.Get[Record](ctx, l.kv, k)
		if err != nil || rev == 0 {
			continue // expired or deleted since listed, or corrupt
		}
		sub, customer, _ := strings.Cut(k[len(tenant)+1:len(k)-len(scanID)-1], ".")
		st := Stats{SubscriptionID: sub, Customer: customer, ScanID: scanID, ByType: map[string]*TypeStats{},
			Admitted: len(rec.Admitted), Suppressed: len(rec.Suppressed) + rec.SuppressedOverflow}
		for _, t := range rec.Admitted {
			st.typeStats(t).Admitted++
		}
		for _, t := range rec.Suppressed {
			st.typeStats(t).Suppressed++
		}
		out = append(out, st)
	}
	return out, nil
}

func (s *Stats) typeStats(t string) *TypeStats {
	ts := s.ByType[t]
	if ts == nil {
		ts = &TypeStats{}
		s.ByType[t] = ts
	}
	return ts
}
