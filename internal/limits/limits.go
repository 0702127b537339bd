// Package limits keeps the record of the jobs fan-out queues for each
// (subscription, scan), and holds findings to their per-scan limits: at
// most findings_per_scan in all and findings_per_type of each finding type,
// as in the Detectify document.
//
// The jobs are the record. Fan-out stores a (subscription, scan)'s jobs
// under its scope, the subjects jobs.ScopeFilter matches, one subject per
// finding type or event kind, each job carrying its webhook id; storing
// one is conditional on nothing having been stored in the scope since the
// limiter last read it (Nats-Expected-Last-Subject-Sequence with its
// -Subject, docs/design.md). So a job is stored at most once, across
// restarts and redeliveries, and a finding's admission is its job: exact
// with any number of fan-out replicas, and no write of its own. A
// suppressed finding is written down in the limits bucket (for its stats,
// and so that a redelivered one counts once); admitted ones never are.
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

// maxConflicts bounds how often one job is decided again because another
// writer (a replica's) stored a job in its scope first.
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

func (s Scope) key() string { return Key(s.Tenant, s.SubscriptionID, s.Source, s.ScanID) }
func (s Scope) filter() string {
	return jobs.ScopeFilter(s.Tenant, s.SubscriptionID, s.Source, s.ScanID)
}

// Entry is an event asked about, with its job for the scope's
// subscription (jobs.Job.Msg: on its Subject, with its webhook id).
type Entry struct {
	EventKey string // events.Key
	Type     string // a finding's data.type
	Job      *nats.Msg
}

// Limiter keeps the record of each scope: it stores jobs (Queue), and
// decides and counts findings (Admit).
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
	// deliveries is DELIVERIES once looked up (see stream).
	deliveries jetstream.Stream
}

// request is one event waiting for its decision.
type request struct {
	ctx   context.Context
	scope Scope
	// limited is set for a finding, held to perScan and perType.
	limited          bool
	perScan, perType int
	f                Entry
	d                Decision
	err              error
	done             chan struct{}
}

// count is what one scope holds: the jobs stored in it, as read from the
// stream and kept up to date by the scope's writer.
type count struct {
	last     uint64            // the sequence of the last job read
	jobs     map[string]string // webhook id -> type token
	legacy   map[string]bool   // webhook ids of Record.Admitted with no job read
	findings int               // jobs of finding types, legacy ones included
	byType   map[string]int    // finding type token -> jobs
	used     time.Time
}

// New returns a limiter that stores jobs in DELIVERIES with js and keeps
// suppressions in the limits bucket (natsx.BucketLimits).
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
// the admission. Asked again about the same finding (its webhook id is in
// the scope), it gives the same answer and stores and counts nothing
// twice. Under too much contention the error wraps kvdoc.ErrContention and
// the event should be handled again later. Concurrent calls for one scope
// are decided by one writer (see Limiter).
func (l *Limiter) Admit(ctx context.Context, s Scope, perScan, perType int, f Entry) (Decision, error) {
	return l.ask(ctx, &request{ctx: ctx, scope: s, limited: true, perScan: perScan, perType: perType, f: f, done: make(chan struct{})})
}

// Queue stores the job of an event that is not held to limits (a scan's
// start or end, a per-scan callback) in its scope, unless the scope holds
// it already: once, whoever asks and however often.
func (l *Limiter) Queue(ctx context.Context, s Scope, f Entry) error {
	_, err := l.ask(ctx, &request{ctx: ctx, scope: s, f: f, done: make(chan struct{})})
	return err
}

func (l *Limiter) ask(ctx context.Context, r *request) (Decision, error) {
	key := r.scope.key()
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
		return Decision{}, fmt.Errorf("jobs of %s: %w", key, ctx.Err())
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

// decide answers for one request on c (reading the scope when nil) and,
// when its job is to be stored, stores it. It returns c as it stands
// after, or nil when it must be read again.
func (l *Limiter) decide(c *count, r *request) (*count, Decision, error) {
	m := r.f.Job
	id, tok := m.Header.Get(jobs.HeaderWebhookID), lastToken(m.Subject)
	// A count kept from earlier decisions is read again only when the
	// store says it is behind (a conflict below).
	stale := c == nil
	for conflicts := 0; ; conflicts++ {
		if err := r.ctx.Err(); err != nil {
			return c, Decision{}, err
		}
		if c == nil {
			c = &count{jobs: map[string]string{}, legacy: map[string]bool{}, byType: map[string]int{}}
			if _, err := l.readLegacy(r.ctx, r.scope, c); err != nil {
				return nil, Decision{}, err
			}
		}
		if stale {
			if err := l.read(r.ctx, r.scope, c); err != nil {
				return nil, Decision{}, err
			}
			stale = false
		}
		_, stored := c.jobs[id]
		if stored && !c.legacy[id] {
			return c, Decision{Admitted: true}, nil
		}
		if !stored && r.limited {
			if reason := c.reason(r.perScan, r.perType, tok); reason != "" {
				return c, Decision{Reason: reason}, nil
			}
		}
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(c.last, 10))
		m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, r.scope.filter())
		ack, err := l.js.PublishMsg(r.ctx, m)
		switch {
		case err == nil:
			c.add(id, tok)
			delete(c.legacy, id)
			c.last = ack.Sequence
			return c, Decision{Admitted: true}, nil
		case !jobs.Exists(err):
			return nil, Decision{}, fmt.Errorf("store job %s: %w", m.Subject, err)
		case conflicts >= maxConflicts:
			return nil, Decision{}, fmt.Errorf("jobs of %s: %w", r.scope.key(), kvdoc.ErrContention)
		}
		// Another writer stored a job in the scope: read it, decide again.
		stale = true
	}
}

// read brings c up to date with the scope: the jobs stored after the last
// one c has read, in order, to the end.
func (l *Limiter) read(ctx context.Context, s Scope, c *count) error {
	stream, err := l.stream(ctx)
	if err != nil {
		return err
	}
	for {
		m, err := stream.GetMsg(ctx, c.last+1, jetstream.WithGetMsgSubject(s.filter()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read jobs of %s: %w", s.key(), err)
		}
		id := m.Header.Get(jobs.HeaderWebhookID)
		if id == "" { // not stored by scanwire: one job of its own
			id = "seq:" + strconv.FormatUint(m.Sequence, 10)
		}
		c.add(id, lastToken(m.Subject))
		delete(c.legacy, id)
		c.last = m.Sequence
	}
}

// readLegacy reads the scope's record in the limits bucket and adds to c
// the findings it admitted before the jobs were the record: they count,
// and a redelivered one gets its job stored. It returns the record.
func (l *Limiter) readLegacy(ctx context.Context, s Scope, c *count) (Record, error) {
	rec, _, err := kvdoc.Get[Record](ctx, l.kv, s.key())
	if err != nil {
		return rec, err
	}
	for eventKey, typ := range rec.Admitted {
		id := jobs.WebhookID(eventKey, s.SubscriptionID)
		c.add(id, jobs.TypeToken(typ))
		c.legacy[id] = true
	}
	return rec, nil
}

// stream is DELIVERIES, looked up once.
func (l *Limiter) stream(ctx context.Context) (jetstream.Stream, error) {
	l.mu.Lock()
	s := l.deliveries
	l.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := l.js.Stream(ctx, natsx.StreamDeliveries)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.deliveries = s
	l.mu.Unlock()
	return s, nil
}

// lastToken is the last token of a subject: a job's type token.
func lastToken(subject string) string { return subject[strings.LastIndexByte(subject, '.')+1:] }

func (c *count) add(id, tok string) {
	if _, ok := c.jobs[id]; ok {
		return
	}
	c.jobs[id] = tok
	if jobs.IsFindingToken(tok) {
		c.findings++
		c.byType[tok]++
	}
}

// reason says which limit a new finding of type token tok would break, or
// "".
func (c *count) reason(perScan, perType int, tok string) string {
	if c.findings >= perScan {
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
	// The scopes: those with jobs (deliveries.<tenant>.<sub>.<source>.<scan>.<type>)
	// and those with a record.
	scopes := map[Scope]bool{}
	stream, err := l.stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("read limits: %w", err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(jobs.ScopeFilter(tenant, "*", "*", scanID)))
	if err != nil {
		return nil, fmt.Errorf("read limits: %w", err)
	}
	for subj := range info.State.Subjects {
		if t := strings.Split(subj, "."); jobs.IsFindingToken(t[5]) {
			scopes[Scope{Tenant: tenant, SubscriptionID: t[2], Source: t[3], ScanID: scanID}] = true
		}
	}
	lister, err := l.kv.ListKeysFiltered(ctx, tenant+".*."+scanID, tenant+".*.*."+scanID)
	if err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	for k := range lister.Keys() {
		sub, source, ok := strings.Cut(k[len(tenant)+1:len(k)-len(scanID)-1], ".")
		if !ok {
			source = tenant
		}
		scopes[Scope{Tenant: tenant, SubscriptionID: sub, Source: source, ScanID: scanID}] = true
	}
	out := []Stats{}
	for _, s := range slices.SortedFunc(maps.Keys(scopes), func(a, b Scope) int { return strings.Compare(a.key(), b.key()) }) {
		c := &count{jobs: map[string]string{}, legacy: map[string]bool{}, byType: map[string]int{}}
		rec, err := l.readLegacy(ctx, s, c)
		if err != nil {
			continue // a record that does not decode is left out
		}
		if err := l.read(ctx, s, c); err != nil {
			return nil, err
		}
		st := Stats{SubscriptionID: s.SubscriptionID, ScanID: scanID, ByType: map[string]*TypeStats{},
			Admitted: c.findings, Suppressed: len(rec.Suppressed) + rec.SuppressedOverflow}
		if s.Source != tenant {
			st.Customer = s.Source
		}
		for tok, n := range c.byType {
			st.typeStats(jobs.TypeName(tok)).Admitted += n
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
