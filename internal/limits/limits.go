// Package limits caps finding deliveries per (subscription, scan): at most
// findings_per_scan in all and findings_per_type of each finding type, as
// in the Detectify document.
//
// The jobs are the count. A finding admitted for a subscription is its job
// in DELIVERIES, on a subject of its own under the subscription's and
// scan's jobs.LimitFilter, and the admission is that job's publication,
// made on the condition that nothing was stored under the filter since the
// limiter last looked (Nats-Expected-Last-Subject-Sequence with its
// -Subject, docs/design.md). So the decision and the job are one write,
// exact with any number of fan-out replicas, across crashes and
// redeliveries: what is stored is what was admitted. A suppressed finding
// is written down in the limits bucket (for its stats, and so that a
// redelivered one counts once); admitted ones never are.
package limits

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/kvdoc"
	"github.com/scanwire/scanwire/internal/natsx"
)

// maxRemembered bounds how many suppressed event ids a record keeps to make
// a redelivered suppressed event count once. Past it, a suppressed event
// redelivered after a fan-out crash may be counted twice (never delivered).
const maxRemembered = 1_000

// maxConflicts bounds how often one finding is decided again because
// another writer (a replica, a retry of a job of the same scan) stored a
// job under its filter first.
const maxConflicts = 20

// Record is what the limits bucket keeps of one (subscription, scan): its
// suppressed findings.
type Record struct {
	// Admitted maps event ids to their finding type for records written
	// before the jobs became the count; it is read, never written, and
	// counts beside the jobs until the record expires.
	Admitted map[string]string `json:"admitted,omitempty"`
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

// Scope is one subscription's view of one scan: whose subscription, and
// the scan's tenant (Source, the subscription's own tenant or, for a
// partner, a customer) and id.
type Scope struct {
	Tenant, SubscriptionID, Source, ScanID string
}

func (s Scope) key() string    { return Key(s.Tenant, s.SubscriptionID, s.Source, s.ScanID) }
func (s Scope) filter() string { return jobs.LimitFilter(s.Tenant, s.SubscriptionID, s.Source, s.ScanID) }

// Finding is a finding event asked about, with its job for the scope's
// subscription.
type Finding struct {
	EventKey string // events.Key
	Type     string // data.type
	// Job is published when the finding is admitted; its subject
	// (jobs.Job.Subject) lies under the scope's filter.
	Job *nats.Msg
}

// Limiter decides and counts.
//
// The findings of one scan arrive at once, from many fan-out workers: were
// each to publish against the scan's filter on its own, all but one would
// be refused every round and retry. So within a process the requests for
// one scope queue up, and one writer at a time decides them in order, on
// what it knows is stored under the filter (a count, read once and kept
// up to date by its own writes), and writes their suppressions in one
// compare-and-swap. Only replicas contend, one writer each.
type Limiter struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	mu     sync.Mutex
	queues map[string][]*request // by scope; present while a writer runs
	counts map[Scope]*count      // by scope; used only by the scope's writer
	swept  time.Time
}

// request is one event waiting for its decision.
type request struct {
	ctx              context.Context
	scope            Scope
	perScan, perType int
	f                Finding
	d                Decision
	err              error
	done             chan struct{}
}

// count is what is stored under one scope's filter.
type count struct {
	last   uint64            // the filter's last sequence
	jobs   map[string]string // admitted: job subject -> type token
	legacy map[string]bool   // subjects of Record.Admitted entries
	byType map[string]int    // type token -> admitted
	used   time.Time
}

// New returns a limiter that publishes admitted jobs to DELIVERIES with js
// and keeps suppressions in the limits bucket (natsx.BucketLimits).
func New(js jetstream.JetStream, kv jetstream.KeyValue) *Limiter {
	return &Limiter{js: js, kv: kv, queues: map[string][]*request{}, counts: map[Scope]*count{}}
}

// Key is the limits bucket's key of (tenant, subscription, scan):
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

// Admit decides whether a finding passes the limits of one subscription
// for its scan and, if it does, stores its job: the job is the record of
// the admission. Asked again about the same finding (its job's subject is
// stored), it gives the same answer and stores and counts nothing twice.
// Under too much contention the error wraps kvdoc.ErrContention and the
// event should be handled again later. Concurrent calls for one scope are
// decided by one writer (see Limiter).
func (l *Limiter) Admit(ctx context.Context, s Scope, perScan, perType int, f Finding) (Decision, error) {
	r := &request{ctx: ctx, scope: s, perScan: perScan, perType: perType, f: f, done: make(chan struct{})}
	key := s.key()
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
		// Its decision may still be made: asked again, it is the same.
		return Decision{}, fmt.Errorf("limits of %s: %w", key, ctx.Err())
	}
}

// write decides everything queued for key, then hands the requests queued
// meanwhile to a writer of their own, so that no caller waits for more
// than its own batch.
func (l *Limiter) write(key string) {
	l.mu.Lock()
	batch := l.queues[key]
	l.queues[key] = nil // running, nothing queued
	scope := batch[0].scope
	c := l.counts[scope]
	l.mu.Unlock()

	var suppressed []*request
	for _, r := range batch {
		c, r.d, r.err = l.decide(c, r)
		if r.err == nil && !r.d.Admitted {
			suppressed = append(suppressed, r)
		}
	}
	if len(suppressed) > 0 {
		if err := l.suppress(key, suppressed); err != nil {
			for _, r := range suppressed {
				r.d, r.err = Decision{}, err
			}
		}
	}
	for _, r := range batch {
		close(r.done)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if c != nil {
		c.used = now
		l.counts[scope] = c
	} else {
		delete(l.counts, scope)
	}
	l.sweep(now)
	if len(l.queues[key]) == 0 {
		delete(l.queues, key)
		return
	}
	go l.write(key)
}

// decide answers for one finding on c (loading it when nil) and, when the
// finding is admitted, stores its job. It returns c as it stands after,
// or nil when it must be read again.
func (l *Limiter) decide(c *count, r *request) (*count, Decision, error) {
	filter := r.scope.filter()
	subject := r.f.Job.Subject
	for conflicts := 0; ; conflicts++ {
		if err := r.ctx.Err(); err != nil {
			return c, Decision{}, err
		}
		if c == nil {
			var err error
			if c, err = l.load(r.ctx, r.scope); err != nil {
				return nil, Decision{}, err
			}
		}
		tok, admitted := c.jobs[subject]
		if admitted && !c.legacy[subject] {
			return c, Decision{Admitted: true}, nil
		}
		if !admitted {
			tok = jobs.TypeToken(r.f.Type)
			if reason := c.reason(r.perScan, r.perType, tok); reason != "" {
				return c, Decision{Reason: reason}, nil
			}
		}
		m := r.f.Job
		if admitted { // counted by its record: its job is stored once, whatever the filter holds
			jobs.ExpectEmpty(m)
			m.Header.Del(jetstream.ExpectedLastSubjSeqSubjHeader)
		} else {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(c.last, 10))
			m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, filter)
		}
		ack, err := l.js.PublishMsg(r.ctx, m)
		switch {
		case err == nil:
			c.add(subject, tok, ack.Sequence)
			delete(c.legacy, subject)
			return c, Decision{Admitted: true}, nil
		case admitted && jobs.Exists(err):
			delete(c.legacy, subject)
			return c, Decision{Admitted: true}, nil
		case !jobs.Exists(err):
			return nil, Decision{}, fmt.Errorf("store job %s: %w", subject, err)
		case conflicts >= maxConflicts:
			return nil, Decision{}, fmt.Errorf("limits of %s: %w", r.scope.key(), kvdoc.ErrContention)
		}
		c = nil // another writer stored a job under the filter: look again
	}
}

// load reads what is stored under s's filter: its last sequence first,
// then its subjects, so that a job stored in between can only make the
// count larger than at that sequence (and the next publication, expecting
// it, is refused and looks again).
func (l *Limiter) load(ctx context.Context, s Scope) (*count, error) {
	stream, err := l.js.Stream(ctx, natsx.StreamDeliveries)
	if err != nil {
		return nil, fmt.Errorf("limits of %s: %w", s.key(), err)
	}
	c := &count{jobs: map[string]string{}, legacy: map[string]bool{}, byType: map[string]int{}}
	last, err := stream.GetLastMsgForSubject(ctx, s.filter())
	switch {
	case err == nil:
		c.last = last.Sequence
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, fmt.Errorf("limits of %s: %w", s.key(), err)
	}
	subjects, err := subjectsUnder(ctx, stream, s.filter())
	if err != nil {
		return nil, fmt.Errorf("limits of %s: %w", s.key(), err)
	}
	for subj := range subjects {
		c.add(subj, typeOf(subj), 0)
	}
	// Records written before the jobs were the count.
	rec, _, err := kvdoc.Get[Record](ctx, l.kv, s.key())
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimSuffix(s.filter(), "*.*")
	for eventKey, typ := range rec.Admitted {
		tok := jobs.TypeToken(typ)
		subj := prefix + tok + "." + jobs.WebhookID(eventKey, s.SubscriptionID)
		if _, ok := c.jobs[subj]; !ok {
			c.add(subj, tok, 0)
			c.legacy[subj] = true
		}
	}
	return c, nil
}

// subjectsUnder lists the subjects stored under filter.
func subjectsUnder(ctx context.Context, stream jetstream.Stream, filter string) (map[string]uint64, error) {
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, err
	}
	return info.State.Subjects, nil
}

// typeOf is the type token of a finding job's subject.
func typeOf(subject string) string {
	parts := strings.Split(subject, ".")
	return parts[len(parts)-2]
}

func (c *count) add(subject, tok string, seq uint64) {
	if _, ok := c.jobs[subject]; !ok {
		c.jobs[subject] = tok
		c.byType[tok]++
	}
	c.last = max(c.last, seq)
}

// reason says which limit a new finding of type token tok would break, or
// "".
func (c *count) reason(perScan, perType int, tok string) string {
	if len(c.jobs) >= perScan {
		return fmt.Sprintf("findings_per_scan limit of %d reached", perScan)
	}
	if c.byType[tok] >= perType {
		return fmt.Sprintf("findings_per_type limit of %d reached for %q", perType, jobs.TypeName(tok))
	}
	return ""
}

// suppress writes down the suppressed findings of one batch in one
// compare-and-swap; a finding written down already changes nothing.
func (l *Limiter) suppress(key string, batch []*request) error {
	_, _, err := kvdoc.Change(longest(batch), l.kv, key, func(rec *Record, _ bool) error {
		for _, r := range batch {
			if _, ok := rec.Suppressed[r.f.EventKey]; ok {
				continue
			}
			if len(rec.Suppressed) >= maxRemembered {
				rec.SuppressedOverflow++
				continue
			}
			if rec.Suppressed == nil {
				rec.Suppressed = map[string]string{}
			}
			rec.Suppressed[r.f.EventKey] = r.f.Type
		}
		return nil
	})
	return err
}

// idleCount is how long a scope's count is kept after its last use.
const idleCount = 2 * time.Minute

// sweep forgets the counts of scopes idle for idleCount, at most once
// every idleCount/4. l.mu is held.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.swept) < idleCount/4 {
		return
	}
	l.swept = now
	for s, c := range l.counts {
		if now.Sub(c.used) > idleCount {
			delete(l.counts, s)
		}
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
	byKey := map[string]*Stats{}
	stats := func(s Scope) *Stats {
		k := s.key()
		if st := byKey[k]; st != nil {
			return st
		}
		st := &Stats{SubscriptionID: s.SubscriptionID, ScanID: scanID, ByType: map[string]*TypeStats{}}
		if s.Source != tenant {
			st.Customer = s.Source
		}
		byKey[k] = st
		return st
	}
	// Admitted: the jobs, under deliveries.<tenant>.<sub>.<source>.<scan>.<type>.<id>.
	stream, err := l.js.Stream(ctx, natsx.StreamDeliveries)
	if err != nil {
		return nil, fmt.Errorf("read limits: %w", err)
	}
	subjects, err := subjectsUnder(ctx, stream, jobs.LimitFilter(tenant, "*", "*", scanID))
	if err != nil {
		return nil, fmt.Errorf("read limits: %w", err)
	}
	for subj := range subjects {
		t := strings.Split(subj, ".")
		st := stats(Scope{Tenant: tenant, SubscriptionID: t[2], Source: t[3], ScanID: scanID})
		st.Admitted++
		st.typeStats(jobs.TypeName(t[5])).Admitted++
	}
	// Suppressed, and admitted before the jobs were the count: the records.
	lister, err := l.kv.ListKeysFiltered(ctx, tenant+".*."+scanID, tenant+".*.*."+scanID)
	if err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	for k := range lister.Keys() {
		rec, rev, err := kvdoc.Get[Record](ctx, l.kv, k)
		if err != nil || rev == 0 {
			continue // expired or deleted since listed, or corrupt
		}
		sub, source, ok := strings.Cut(k[len(tenant)+1:len(k)-len(scanID)-1], ".")
		if !ok {
			source = tenant
		}
		scope := Scope{Tenant: tenant, SubscriptionID: sub, Source: source, ScanID: scanID}
		st := stats(scope)
		prefix := strings.TrimSuffix(scope.filter(), "*.*")
		for eventKey, typ := range rec.Admitted {
			if _, ok := subjects[prefix+jobs.TypeToken(typ)+"."+jobs.WebhookID(eventKey, sub)]; !ok {
				st.Admitted++
				st.typeStats(typ).Admitted++
			}
		}
		st.Suppressed += len(rec.Suppressed) + rec.SuppressedOverflow
		for _, t := range rec.Suppressed {
			st.typeStats(t).Suppressed++
		}
	}
	keys := slices.Sorted(maps.Keys(byKey))
	out := make([]Stats, 0, len(keys))
	for _, k := range keys {
		out = append(out, *byKey[k])
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
