package tests

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scanwire/scanwire/internal/natsx"
)

// What counts as a write, read in nats-server v2.15.2's filestore.go:
//
//   - A stored message. storeRawMsg appends it with
//     mb.writeMsgRecord(rl, seq, subj, hdr, msg, ts, fs.fip), and the flush
//     (flushPendingMsgsLocked) ends in
//     "if mb.fs.syncAlways.Load() { if err = mb.mfd.Sync() ...": one fsync
//     per message with sync_interval always, none with 2m (the same write
//     reaches the page cache and is synced with the rest every two minutes).
//     A stream's LastSeq advances by one per stored message, KV buckets
//     included (they are streams KV_<bucket>).
//   - The removal of an acknowledged job from a work queue. The ack reaches
//     stream.ackMsg, which calls store.RemoveMsg(seq), that is
//     removeMsg(seq, secure=false, viaLimits=false), and removeMsgFromBlock
//     then writes a delete record:
//
//     // If not via limits and not empty (empty writes tombstone below if last) write tombstone.
//     if !viaLimits && !isEmpty && sm != nil { ... lmb.writeTombstone(seq, ts) ... }
//
//     writeTombstone is writeMsgRecord(emptyRecordLen, seq|tbit, ...,
//     flush=true): the same append and the same fsync as a message. (When
//     the removal empties its block, removeMsgBlock writes the tombstone
//     instead, if that block is the last.) So a removal from DELIVERIES
//     costs what a stored message costs, though it takes no sequence:
//     removed = stored - (messages now - messages before).
//   - Not counted: a KV update replacing the previous revision of its key
//     (history 1). storeRawMsg enforces MaxMsgsPer with
//     fs.removeMsgViaLimits(fseq), viaLimits=true, which writes no tombstone:
//     only the new revision is written. Nor consumer state: a consumer's
//     acks and deliveries only kick consumerFileStore.flushLoop, which
//     "maintain[s] approximately 10 updates per second per consumer under
//     load" (one O_SYNC rewrite of its state file each), so at most 10 a
//     second per durable consumer, not one per message, and no server
//     statistic counts them.
//
// A write is an fsync (with sync_interval always) for a message published
// on its own, which is every write of the pipeline before issue 12's
// redesign. The messages of one atomic batch (AllowAtomicPublish) are
// still one write each here, but share their fsync: on commit, stream.go
// switches a SyncAlways store to sync-on-flush (coalesceSync), stores the
// batch, then syncs once (fs.FlushAllPending), after the batch's staging
// store (jetstream_batching.go newBatchStore, SyncOnFlush) synced once.
// Writes count the disk's work either way; fsyncs are fewer with batches.

// storeStats is the server's own account of its streams at one moment,
// read from the embedded server's monitoring (Jsz, the /jsz endpoint)
// rather than through the JetStream API, so that reading it adds no API
// call: each stream's (and bucket's) state and retention, and the
// accounts' JetStream API calls.
type storeStats struct {
	streams map[string]streamStat
	api     uint64
}

type streamStat struct {
	retention     server.RetentionPolicy
	lastSeq, msgs uint64
}

func readStoreStats(t testing.TB, ns *server.Server) storeStats {
	t.Helper()
	if ns == nil {
		t.Fatal("the server's statistics need the embedded server")
	}
	jsz, err := ns.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Config: true})
	if err != nil {
		t.Fatal(err)
	}
	s := storeStats{streams: map[string]streamStat{}}
	for _, acc := range jsz.AccountDetails {
		s.api += acc.API.Total
		for _, st := range acc.Streams {
			s.streams[st.Name] = streamStat{retention: st.Config.Retention, lastSeq: st.State.LastSeq, msgs: st.State.Msgs}
		}
	}
	return s
}

// streamWrites is what one stream stored and removed between two
// snapshots. removed is counted only where a removal writes a tombstone
// (work-queue and interest streams: removal by ack); removals by limits
// (a KV key's previous revision, age) write nothing. A message of a work
// queue expiring by age or TTL within the run would be counted as a
// removal too; none does in the benchmarks (TTLs are days).
type streamWrites struct {
	stream            string
	stored, removed   uint64
	removalsTombstone bool
}

// storeWrites is the difference between two snapshots.
type storeWrites struct {
	streams []streamWrites // by name
	api     uint64
}

func diffStoreStats(before, after storeStats) storeWrites {
	var w storeWrites
	for name, a := range after.streams {
		b := before.streams[name] // zero for a stream created in between
		sw := streamWrites{stream: name, stored: a.lastSeq - b.lastSeq, removalsTombstone: a.retention != server.LimitsPolicy}
		if sw.removalsTombstone && b.msgs+sw.stored >= a.msgs {
			sw.removed = b.msgs + sw.stored - a.msgs
		}
		w.streams = append(w.streams, sw)
	}
	slices.SortFunc(w.streams, func(x, y streamWrites) int { return strings.Compare(x.stream, y.stream) })
	w.api = after.api - before.api
	return w
}

// total is every write the server made to its streams: each one an fsync
// with sync_interval always, unless it was part of an atomic batch.
func (w storeWrites) total() uint64 {
	var n uint64
	for _, s := range w.streams {
		n += s.stored + s.removed
	}
	return n
}

// hotPathStreams are reported on every run, even at zero; any other stream
// is reported when it stored or removed something.
var hotPathStreams = []string{natsx.StreamScanEvents, "KV_" + natsx.BucketLimits, natsx.StreamDeliveries, natsx.StreamAttempts}

// report reports w per delivery: <stream>-stored/delivery for each stream,
// <stream>-removed/delivery for each work queue, writes/delivery in all,
// and the account's api-calls/delivery.
func (w storeWrites) report(b *testing.B, deliveries int) {
	per := func(n uint64) float64 { return float64(n) / float64(deliveries) }
	for _, s := range w.streams {
		hot := slices.Contains(hotPathStreams, s.stream)
		if hot || s.stored > 0 {
			b.ReportMetric(per(s.stored), s.stream+"-stored/delivery")
		}
		if (hot && s.removalsTombstone) || s.removed > 0 {
			b.ReportMetric(per(s.removed), s.stream+"-removed/delivery")
		}
	}
	b.ReportMetric(per(w.total()), "writes/delivery")
	b.ReportMetric(per(w.api), "api-calls/delivery")
}

// settle waits until the pipeline has finished with what the run left
// behind once the last webhook arrived: every consumer with nothing
// pending and nothing awaiting its ack (every job acked out of
// DELIVERIES), and nothing stored or removed for half a second (the
// attempt log is flushed every 200 ms). It returns the statistics then.
func settle(t testing.TB, ns *server.Server) storeStats {
	t.Helper()
	last := readStoreStats(t, ns)
	quietSince := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		time.Sleep(100 * time.Millisecond)
		now := readStoreStats(t, ns)
		if diffStoreStats(last, now).total() > 0 {
			quietSince = time.Now()
		}
		last = now
		busy := busyConsumers(t, ns)
		if busy == "" && time.Since(quietSince) >= 500*time.Millisecond {
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline did not settle in 30s: %s", busy)
		}
	}
}

// busyConsumers names the consumers with messages pending or awaiting
// their ack, "" when there is none.
func busyConsumers(t testing.TB, ns *server.Server) string {
	t.Helper()
	jsz, err := ns.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true})
	if err != nil {
		t.Fatal(err)
	}
	var busy []string
	for _, acc := range jsz.AccountDetails {
		for _, st := range acc.Streams {
			for _, c := range st.Consumer {
				if c.NumPending > 0 || c.NumAckPending > 0 {
					busy = append(busy, fmt.Sprintf("%s/%s: %d pending, %d awaiting ack", st.Name, c.Name, c.NumPending, c.NumAckPending))
				}
			}
		}
	}
	return strings.Join(busy, "; ")
}
