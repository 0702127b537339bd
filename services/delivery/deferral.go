package delivery

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
)

// deferReason names why a job was deferred (not attempted) by the gate;
// the label is the reason attribute of scanwire.deliveries.deferred and of
// the logs.
type deferReason string

const (
	// deferSlow: the job's endpoint is slow and the slow budget (all
	// tenants', or the job's tenant's half of it) is spent, or the slow
	// endpoint is at its cap.
	deferSlow deferReason = "endpoint_slow"
	// deferTenantShare: the job's tenant holds its share of the workers and
	// its requests are not finishing (or enough of its jobs wait already).
	deferTenantShare deferReason = "tenant_share"
	// deferCongested: the job's endpoint is at its cap and stuck (or still
	// full after SlotWait).
	deferCongested deferReason = "endpoint_congested"
)

func (r deferReason) String() string { return string(r) }

// scheduledDeferralRate bounds how many of one tenant's deferred jobs
// stored as scheduled messages fall due a second, per delivery process (see
// deferJob): about 200 synchronous writes a second for a tenant with a
// backlog (the scheduled message, and the job it becomes), a tenth of what
// a disk that fsyncs every write in half a millisecond can do.
const scheduledDeferralRate = 100

// deferrals counts the deferred jobs whose delay has not run out: naked
// (handed back with a nak) and scheduled (stored as scheduled messages),
// in all and per tenant. One tenant's backlog must not spend another's
// naked budget, nor push another's scheduled jobs behind its own.
type deferrals struct {
	mu      sync.Mutex
	naked   int
	nakedBy map[string]int
	// nextDue is, per tenant, the earliest time its next scheduled
	// deferral may fall due: a slot time, not a timer per deferral, so a
	// backlog of a million costs one map entry.
	nextDue map[string]time.Time
}

// takeNaked reserves a naked deferral for tenant, if fewer than limit are
// out in all and fewer than a quarter of limit are the tenant's.
func (c *deferrals) takeNaked(tenant string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.naked >= limit || c.nakedBy[tenant] >= max(1, limit/4) {
		return false
	}
	if c.nakedBy == nil {
		c.nakedBy = map[string]int{}
	}
	c.naked++
	c.nakedBy[tenant]++
	return true
}

func (c *deferrals) releaseNaked(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.naked--
	if c.nakedBy[tenant]--; c.nakedBy[tenant] <= 0 {
		delete(c.nakedBy, tenant)
	}
}

// takeSlot returns when tenant's next scheduled deferral may fall due, at
// the earliest: its slots are 1/scheduledDeferralRate apart, from now on.
// Tenants whose slots are all past are forgotten.
func (c *deferrals) takeSlot(tenant string, now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nextDue == nil {
		c.nextDue = map[string]time.Time{}
	}
	if len(c.nextDue) > 1000 { // keep only tenants with slots ahead
		for t, due := range c.nextDue {
			if due.Before(now) {
				delete(c.nextDue, t)
			}
		}
	}
	slot := now
	if due := c.nextDue[tenant]; due.After(now) {
		slot = due
	}
	c.nextDue[tenant] = slot.Add(time.Second / scheduledDeferralRate)
	return slot
}

// deferJob hands a job the gate refused back for later, without spending
// an attempt. It waits as long as its endpoint has been slow (DeferDelay
// up to DeferMax, plus up to half again of jitter; DeferDelay and a little
// for a job refused for a passing reason), so each wave of a hung
// endpoint's backlog comes back about twice as late as the one before. It
// is handed back in one of two ways:
//
//   - Naked with that delay, while fewer than MaxNaked deferred jobs are
//     out, and fewer than a quarter of that are the job's tenant's: no
//     message is written (the consumer's state is written at most
//     ten times a second whatever the naks), so deferring a backlog costs
//     the disk nothing, and the jobs refused again when they come back
//     are refused at once. Naked jobs count against MaxAckPending, hence
//     the bound, well under it.
//   - Beyond that, stored again as a scheduled message (as a retry is,
//     with the same attempt number) and acked: it waits in the stream, not
//     in the consumer's ack-pending set, so however large a hostile
//     backlog, it cannot fill MaxAckPending and stop the consumer handing
//     out everyone's jobs. It comes back behind the jobs queued meanwhile.
//     The price is about four synchronous writes per deferral (the copy,
//     the original's removal, and when it falls due the job and the
//     schedule's removal), so each tenant's are spread out to fall due at
//     most scheduledDeferralRate a second: one slot time per tenant, each
//     deferral taking the next slot. However large a tenant's
//     backlog, it costs about 4×scheduledDeferralRate writes a second once
//     it has been stored, and another tenant's deferred job is not spaced
//     behind it.
func (d *Delivery) deferJob(msg jetstream.Msg, meta *jetstream.MsgMetadata, job *jobs.Job, r refusal) natsx.Outcome {
	delay, tenant := d.deferDelay(r), job.Tenant
	if d.deferred.takeNaked(tenant, d.cfg.MaxNaked) {
		time.AfterFunc(delay, func() { d.deferred.releaseNaked(tenant) })
		return natsx.DeferFor(delay, r.reason)
	}
	now := time.Now()
	delay = max(delay, d.deferred.takeSlot(tenant, now).Sub(now))
	m, opts, err := scheduledCopy(msg, meta, job, delay)
	if err != nil {
		return natsx.RetryAfter(delay, r.reason, err, nil)
	}
	return natsx.RetryAfter(delay, r.reason, nil, m, opts...)
}

// deferDelay is how long a refused job waits: as long as its endpoint has
// been slow, between DeferDelay and DeferMax, plus up to half again of
// jitter so that a backlog does not come back all at once.
func (d *Delivery) deferDelay(r refusal) time.Duration {
	base := d.cfg.DeferDelay
	if r.slow {
		base = min(max(r.slowFor, d.cfg.DeferDelay), d.cfg.DeferMax)
	}
	return base + time.Duration(rand.Int64N(int64(base)/2+1))
}
