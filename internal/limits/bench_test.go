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
// many record writes they took (compare-and-swap retries included).
func BenchmarkAdmitHotScans(b *testing.B) {
	kv := natsxtest.KeyValue(b, natsxtest.JetStream(b), natsx.BucketLimits)
	replicas := []*limits.Limiter{limits.New(kv), limits.New(kv)}
	keys := []string{limits.Key("acme", "sub_A", "acme", "hot-1"), limits.Key("acme", "sub_A", "acme", "hot-2")}
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
			_, err := replicas[i%2].Admit(b.Context(), keys[(i/2)%2], 100, 10, fmt.Sprintf("evt-%d", i), fmt.Sprintf("type-%d", i%20))
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
	var writes uint64
	for _, k := range keys {
		h, err := kv.History(b.Context(), k)
		if err == nil && len(h) > 0 {
			writes = max(writes, h[len(h)-1].Revision())
		}
	}
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(writes), "writes")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
}
