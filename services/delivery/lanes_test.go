package delivery

import (
	"errors"
	"fmt"
	"testing"

	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

// A lane owns its subscription's jobs from its first sequence on, and only
// those on its filter's subjects: a job stored before it, another
// subscription's, or one on an earlier release's subject stays with the
// delivery consumer, so that none is left to neither; and a process that
// does not run lanes leaves no job to one.
func TestLaneOwns(t *testing.T) {
	l := &lanes{from: map[string]uint64{laneKey("acme", "sub_A"): 100}}
	if l.owns("acme", "sub_A", 150, "deliveries.acme.sub_A.acme.s1.xss") {
		t.Error("a process that does not watch the lanes left a job to one")
	}
	l.start = func(string, laneRecord) {}
	for _, c := range []struct {
		sub     string
		seq     uint64
		subject string
		want    bool
	}{
		{"sub_A", 100, "deliveries.acme.sub_A.acme.s1.%scan~started", true},
		{"sub_A", 150, "deliveries.acme.sub_A.acme.s1.xss.r", true},
		{"sub_A", 99, "deliveries.acme.sub_A.acme.s1.xss", false},
		{"sub_A", 150, "deliveries.acme.sub_A", false}, // an earlier release's job: not in the lane's filter
		{"sub_B", 150, "deliveries.acme.sub_B.acme.s1.xss", false},
	} {
		if got := l.owns("acme", c.sub, c.seq, c.subject); got != c.want {
			t.Errorf("owns(%s, %d, %s) = %v, want %v", c.sub, c.seq, c.subject, got, c.want)
		}
	}
	var none *lanes
	if none.owns("acme", "sub_A", 150, "deliveries.acme.sub_A.acme.s1.xss") {
		t.Error("no lanes own a job")
	}
	if a, b := LaneConsumer("a.b-c"), LaneConsumer("a-b.c"); a == b {
		t.Errorf("two lanes share the consumer %s", a)
	}
}

// A tenant's lanes are bounded: past tenantLanes its slow endpoints' jobs
// are deferred as before, while another tenant still gets one.
func TestLanesPerTenantBounded(t *testing.T) {
	js := natsxtest.JetStream(t)
	l := &lanes{kv: natsxtest.KeyValue(t, js, natsx.BucketLanes), from: map[string]uint64{}, start: func(string, laneRecord) {}}
	for i := range tenantLanes {
		l.from[laneKey("greedy", fmt.Sprintf("sub_%d", i))] = 1
	}
	if _, _, err := l.open(t.Context(), "greedy", "sub_more", 10, "slow"); !errors.Is(err, errTooManyLanes) {
		t.Errorf("lane %d of one tenant: %v, want errTooManyLanes", tenantLanes+1, err)
	}
	if owned, opened, err := l.open(t.Context(), "other", "sub_0", 10, "slow"); err != nil || !owned || !opened {
		t.Errorf("another tenant's first lane: owned %v, opened %v, %v", owned, opened, err)
	}
}
