package rejected_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/rejected"
)

// rejectedMsg is a copy as fan-out stores it (services/fanout rejectedCopy).
func rejectedMsg(tenant, eventID string, origSeq int, body string) *nats.Msg {
	m := nats.NewMsg(events.RejectedSubject(tenant))
	if eventID != "" {
		m.Header.Set("ce-id", eventID)
	}
	m.Header.Set(events.HeaderRejectReason, "data/cvss_score: 4.1 is below 6.0")
	m.Header.Set(events.HeaderRejectCode, "invalid")
	m.Header.Set(events.HeaderOriginalSubject, "scans."+tenant+".s1.finding.high")
	m.Header.Set(events.HeaderOriginalSeq, strconv.Itoa(origSeq))
	m.Data = []byte(body)
	return m
}

func TestListIsTenantScopedNewestFirst(t *testing.T) {
	t.Parallel()
	js := natsxtest.JetStream(t)
	for i, tenant := range []string{"acme", "globex", "acme", "acme", "_invalid"} {
		if _, err := js.PublishMsg(t.Context(), rejectedMsg(tenant, "e"+strconv.Itoa(i), i+1, `{"n":`+strconv.Itoa(i)+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	st := rejected.New(js)
	tests := []struct {
		name   string
		tenant string
		limit  int
		want   []string // event ids, newest first
	}{
		{"one tenant", "acme", 0, []string{"e3", "e2", "e0"}},
		{"another tenant", "globex", 0, []string{"e1"}},
		{"every tenant", "", 0, []string{"e4", "e3", "e2", "e1", "e0"}},
		{"limit keeps the newest", "acme", 2, []string{"e3", "e2"}},
		{"bad subjects", "_invalid", 0, []string{"e4"}},
		{"a tenant with none", "initech", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := st.List(t.Context(), tt.tenant, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range list {
				got = append(got, e.EventID)
				if tt.tenant != "" && e.Tenant != tt.tenant {
					t.Errorf("entry %d is of tenant %q", e.Seq, e.Tenant)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	list, _ := st.List(t.Context(), "globex", 0)
	e := list[0]
	if e.Seq != 2 || e.Code != "invalid" || e.Reason != "data/cvss_score: 4.1 is below 6.0" || e.OriginalSubject != "scans.globex.s1.finding.high" ||
		e.OriginalSeq != 2 || e.Body != `{"n":1}` || e.BodySize != 7 || e.Time.IsZero() {
		t.Errorf("entry %+v", e)
	}
}

// A tenant that is not a subject token never becomes a filter: "*" or ">"
// would list every tenant's rejections.
func TestListRefusesTenantsThatAreNotTokens(t *testing.T) {
	t.Parallel()
	st := rejected.New(natsxtest.JetStream(t))
	for _, tenant := range []string{"*", ">", "acme.*", "a b", "acme.globex"} {
		if list, err := st.List(t.Context(), tenant, 0); !errors.Is(err, rejected.ErrBadTenant) {
			t.Errorf("List(%q) = %v, %v; want ErrBadTenant", tenant, list, err)
		}
	}
}

func TestEntryBodyAndEventID(t *testing.T) {
	t.Parallel()
	js := natsxtest.JetStream(t)
	long := strings.Repeat("a", rejected.MaxBody-1) + "é and more" // é straddles the cut
	structured := nats.NewMsg(events.RejectedSubject("acme"))
	structured.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	structured.Data = []byte(`{"specversion":"1.0","id":"evt-structured","data":{}}`)
	upper := rejectedMsg("acme", "", 1, "x")
	upper.Header.Set("Ce-Id", "evt-upper")
	for _, m := range []*nats.Msg{
		rejectedMsg("acme", "evt-long", 1, long),
		rejectedMsg("acme", "evt-latin1", 2, "caf\xe9 \xff"),
		structured,
		upper,
	} {
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	list, err := rejected.New(js).List(t.Context(), "acme", 0)
	if err != nil || len(list) != 4 {
		t.Fatalf("%v %+v", err, list)
	}
	byID := map[string]rejected.Entry{}
	for _, e := range list {
		byID[e.EventID] = e
	}
	if e := byID["evt-long"]; e.Body != strings.Repeat("a", rejected.MaxBody-1) || e.BodySize != len(long) {
		t.Errorf("long body: %q (%d bytes of %d)", e.Body, len(e.Body), e.BodySize)
	}
	if e := byID["evt-latin1"]; e.Body != "caf\uFFFD \uFFFD" || !utf8.ValidString(e.Body) {
		t.Errorf("body that is not UTF-8: %q", e.Body)
	}
	if _, ok := byID["evt-structured"]; !ok {
		t.Errorf("structured mode's id not found: %+v", list)
	}
	if _, ok := byID["evt-upper"]; !ok {
		t.Errorf("Ce-Id not found: %+v", list)
	}
}
