package delivery

import "testing"

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
