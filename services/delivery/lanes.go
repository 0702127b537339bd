package delivery

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/natsx"
)

// Lanes. The delivery consumer hands out jobs in stream order, so to reach
// the jobs behind a hung endpoint's backlog it must take every job of that
// backlog and defer it, again and again, while the endpoint stays hung:
// writes for the deferrals past the naked budget, the server's memory for
// the blocks it reads back, and a healthy tenant's jobs queued behind it
// all the while. So once an endpoint has been slow for LaneAfter, the
// subscription whose job found it so gets a lane: a consumer of its own,
// on its jobs only (deliveries.<tenant>.<subscription>.>), from that job's
// sequence on. The delivery consumer acks the jobs the lane owns as it
// meets them, which writes nothing and reads each once, and the lane
// delivers them at its endpoint's pace, deferring with a nak within a
// small MaxAckPending of its own.
//
// A lane is a record in the lanes bucket, key <tenant>.<subscription>,
// with the first sequence it owns; every delivery process watches the
// bucket and runs the lanes it holds. A lane is never closed: a job the
// delivery consumer acked as the lane's is delivered by the lane only, so
// closing one would need the two to agree on where the lane ends. A job a
// process handled before it saw a new lane may be delivered by both (the
// receiver sees its webhook-id twice); none is left to neither.

// A tenant gets at most tenantLanes lanes and all tenants maxLanes: a
// lane is a consumer, a loop in every delivery process and up to 4 ×
// LaneWorkers jobs naked at once, and a tenant with many hung endpoints
// must not multiply that. Past either, its slow endpoints' jobs are
// deferred as they were before lanes. The counts are this process's view
// of the bucket, so replicas opening lanes at the same moment may pass
// them by a few.
const (
	tenantLanes = 8
	maxLanes    = 256
)

// errTooManyLanes refuses a lane past tenantLanes or maxLanes.
var errTooManyLanes = errors.New("too many lanes")

// laneRecord is a lane as the lanes bucket keeps it.
type laneRecord struct {
	// From is the first DELIVERIES sequence the lane owns.
	From    uint64    `json:"from"`
	Created time.Time `json:"created"`
	// Reason says why the lane was opened, for an operator.
	Reason string `json:"reason"`
}

// lanes is what one delivery process knows of the lanes, and runs.
type lanes struct {
	kv      jetstream.KeyValue
	mu      sync.Mutex
	from    map[string]uint64             // by key, the first sequence each lane owns
	running map[string]context.CancelFunc // by key, the lane loops of this process
	// start runs a lane in this process; nil until the process watches
	// the bucket, and until then no lane is opened and no job is left to
	// one (see runLanes).
	start func(key string, rec laneRecord)
}

func laneKey(tenant, subscriptionID string) string { return tenant + "." + subscriptionID }

// LaneConsumer is the durable consumer of the lane key
// (<tenant>.<subscription_id>): a hash of the key, so that no two keys
// share one whatever their characters.
func LaneConsumer(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "lane-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]))
}

// owns reports whether a job of (tenant, subscription), stored at seq on
// subject, is its lane's: the delivery consumer acks it and leaves it to
// the lane. A job on another subject (of an earlier release's form) is
// not in the lane's filter, so it is never the lane's.
func (l *lanes) owns(tenant, subscriptionID string, seq uint64, subject string) bool {
	if l == nil || !strings.HasPrefix(subject, "deliveries."+tenant+"."+subscriptionID+".") {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	from, ok := l.from[laneKey(tenant, subscriptionID)]
	return ok && seq >= from && l.start != nil
}

// open records a lane for (tenant, subscription) from seq, unless it has
// one, and says whether the job at seq is now the lane's and whether this
// call opened the lane.
func (l *lanes) open(ctx context.Context, tenant, subscriptionID string, seq uint64, reason string) (owned, opened bool, err error) {
	key := laneKey(tenant, subscriptionID)
	l.mu.Lock()
	start := l.start
	from, exists := l.from[key]
	ofTenant := 0
	for k := range l.from {
		if strings.HasPrefix(k, tenant+".") {
			ofTenant++
		}
	}
	all := len(l.from)
	l.mu.Unlock()
	switch {
	case start == nil:
		return false, false, fmt.Errorf("open lane %s: the lanes are not watched", key)
	case exists: // a job from before the lane: the delivery consumer's
		return seq >= from, false, nil
	case ofTenant >= tenantLanes:
		return false, false, fmt.Errorf("open lane %s: %w (tenant %s has %d)", key, errTooManyLanes, tenant, ofTenant)
	case all >= maxLanes:
		return false, false, fmt.Errorf("open lane %s: %w (%d in all)", key, errTooManyLanes, all)
	}
	b, err := json.Marshal(laneRecord{From: seq, Created: time.Now().UTC(), Reason: reason})
	if err != nil {
		return false, false, err
	}
	_, err = l.kv.Create(ctx, key, b)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return false, false, fmt.Errorf("open lane %s: %w", key, err)
	}
	opened = err == nil
	rec, err := l.read(ctx, key)
	if err != nil {
		return false, false, err
	}
	start(key, rec) // here at once, whenever the watch tells
	return seq >= rec.From, opened, nil
}

func (l *lanes) read(ctx context.Context, key string) (laneRecord, error) {
	var rec laneRecord
	e, err := l.kv.Get(ctx, key)
	if err != nil {
		return rec, fmt.Errorf("read lane %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.From == 0 {
		return rec, fmt.Errorf("lane %s: not a lane record: %q", key, e.Value())
	}
	return rec, nil
}

// runLanes keeps this process's lane loops as the lanes bucket says, until
// ctx ends.
func (d *Delivery) runLanes(ctx context.Context) {
	w, err := d.lanes.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		d.log.Error("lanes not watched; jobs of hung endpoints stay in the delivery consumer", "err", err)
		return
	}
	defer func() { _ = w.Stop() }()
	d.lanes.mu.Lock()
	d.lanes.start = func(key string, rec laneRecord) { d.startLane(ctx, key, rec) }
	d.lanes.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // the end of the initial values, or a deletion
			}
			var rec laneRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.From == 0 {
				d.log.Error("not a lane record; ignored", "key", e.Key(), "err", err)
				continue
			}
			d.startLane(ctx, e.Key(), rec)
		}
	}
}

// startLane runs the lane key from rec.From in this process, unless it
// runs already.
func (d *Delivery) startLane(ctx context.Context, key string, rec laneRecord) {
	l := d.lanes
	l.mu.Lock()
	l.from[key] = rec.From
	if _, ok := l.running[key]; ok {
		l.mu.Unlock()
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	l.running[key] = cancel
	l.mu.Unlock()
	tenant, sub, _ := strings.Cut(key, ".")
	d.laneLoops.Go(func() {
		defer cancel()
		d.log.Info("lane running", "tenant", tenant, "subscription_id", sub, "from_seq", rec.From, "reason", rec.Reason)
		for lctx.Err() == nil {
			err := d.runLane(lctx, key, tenant, sub, rec.From)
			if lctx.Err() == nil {
				d.log.Error("lane stopped; starting it again", "tenant", tenant, "subscription_id", sub, "err", err)
				select {
				case <-lctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	})
}

// runLane consumes one lane until ctx ends.
func (d *Delivery) runLane(ctx context.Context, key, tenant, sub string, from uint64) error {
	cons, err := natsx.Bind(ctx, d.js, natsx.StreamDeliveries, jetstream.ConsumerConfig{
		Durable:       LaneConsumer(key),
		Description:   "scanwire delivery lane of " + key,
		FilterSubject: "deliveries." + tenant + "." + sub + ".>",
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.ackWait(),
		MaxDeliver:    -1,
		// Its deferrals are naks: this bounds them, and what the server
		// reads back for them.
		MaxAckPending: 4 * d.cfg.LaneWorkers,
	}, d.log)
	if err != nil {
		return fmt.Errorf("lane consumer: %w", err)
	}
	// An idle lane (its endpoint's backlog delivered) asks once a second.
	return natsx.Consume(ctx, cons, d.handleLane, natsx.Options{Workers: d.cfg.LaneWorkers, JS: d.js, Log: d.log, Settled: d.settled,
		Writes: d.writes, FetchWait: time.Second})
}
