package limits_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

// BenchmarkAdmitHotScans has two fan-out replicas decide the findings of
// two hot scans arriving at 1,000 a second in all, each on its own worker
// as fan-out's would; it reports the decisions' p50 and p99 latency and how
// many writes they took: the admitted findings' jobs and the suppression
// records' revisions.
func BenchmarkAdmitHotScans(b *testing.B) {
	js := natsxtest.JetStream(b)
	kv := natsxtest.KeyValue(b, js, natsx.BucketLimits)
	replicas := []*limits.Limiter{limits.New(js, kv), limits.New(js, kv)}
	keys := []limits.Scope{limits.Scope{Tenant: "acme", SubscriptionID: "sub_A", Source: "acme", ScanID: "hot-1"}, {Tenant: "acme", SubscriptionID: "sub_A", Source: "acme", ScanID: "hot-2"}}
	latencies := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := range b.N {
		<-tick.C
		wg.Go(func() {
			t0 := time.Now()
			_, err := ask(b.Context(), replicas[i%2], keys[(i/2)%2], 100, 10, fmt.Sprintf("evt-%d", i), fmt.Sprintf("type-%d", i%20))
			latencies[i] = time.Since(t0)
			if err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	// Admitted: its job; suppressed: a share of a record write (every
	// write to the bucket is a message of its stream, compare-and-swap
	// conflicts excluded: a refused write stores nothing).
	var writes uint64
	for _, k := range keys {
		writes += uint64(stored(b, js, k))
	}
	kvStream, err := js.Stream(b.Context(), "KV_"+natsx.BucketLimits) // with its state as of now
	if err != nil {
		b.Fatal(err)
	}
	writes += kvStream.CachedInfo().State.LastSeq
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(writes), "writes")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
}
