package kvdoc_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/callbacks"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/kvdoc"
	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/tenants"
)

// The contract every store that keeps JSON documents in KV passes, as one
// suite run against every backend. Each store keeps its own kind of
// document, so an adapter (ops) maps the contract's operations onto the
// store's own API: "change n" is the store's own operation, made distinct
// by n, and "holds n" reads the document back through the store.

// Concurrency of the lost-update case: writers, and changes each makes.
const (
	writers       = 8
	changesPerOne = 10
)

// ops is one store, as the contract drives it.
type ops struct {
	// create makes document doc exist, for a store that changes only
	// existing documents; nil when changing a missing document creates it.
	create func(ctx context.Context, doc string) error
	// notFound is what a change of a missing document returns when create
	// is set.
	notFound error
	// key is the KV key of document doc (once created, if create is set).
	key func(doc string) string
	// change applies the store's change number n to doc. Changes are
	// distinct and commute: applying 0..n-1 in any order, at once, must
	// leave a document holding each of them once.
	change func(ctx context.Context, doc string, n int) error
	// holds says how doc differs from a document holding changes 0..n-1
	// (each once), or nil.
	holds func(ctx context.Context, doc string, n int) error
	// noop applies a change that leaves a document holding change 0 as it
	// is.
	noop func(ctx context.Context, doc string) error
	// failing are operations whose edit fails on a document holding
	// change 0; none when the store's edits cannot fail.
	failing map[string]func(ctx context.Context, doc string) error
}

// storeCase opens a store over kv: the bucket itself, or one wrapped so
// that a rival writer always gets in first. ids is state shared by every
// ops of one run (documents whose key the store chooses).
type storeCase struct {
	name   string
	bucket string
	open   func(kv jetstream.KeyValue, js jetstream.JetStream, ids *sync.Map) ops
}

var errEdit = errors.New("edit refused on purpose")

func TestContract(t *testing.T) {
	t.Parallel()
	for _, sc := range []storeCase{plainDocs, limitsStore, callbacksStore, tenantsStore, subscriptionsStore} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runContract(t, sc)
		})
	}
}

func runContract(t *testing.T, sc storeCase) {
	js := natsxtest.JetStream(t)
	kv := natsxtest.KeyValue(t, js, sc.bucket)
	ids := &sync.Map{}
	o := sc.open(kv, js, ids)
	ctx := t.Context()

	// given makes doc hold changes 0..n-1.
	given := func(t *testing.T, doc string, n int) {
		t.Helper()
		if o.create != nil {
			if err := o.create(ctx, doc); err != nil {
				t.Fatalf("create %s: %v", doc, err)
			}
		}
		for i := range n {
			if err := o.change(ctx, doc, i); err != nil {
				t.Fatalf("change %d of %s: %v", i, doc, err)
			}
		}
		if err := o.holds(ctx, doc, n); err != nil {
			t.Fatalf("after %d changes: %v", n, err)
		}
	}
	// unchanged fails t unless doc's key is still at rev (0: missing).
	unchanged := func(t *testing.T, doc string, rev uint64, what string) {
		t.Helper()
		if got := revision(t, kv, o.key(doc)); got != rev {
			t.Errorf("%s wrote: revision %d, want %d", what, got, rev)
		}
	}

	t.Run("ConcurrentChangesAllLand", func(t *testing.T) {
		t.Parallel()
		given(t, "concurrent", 0)
		var wg sync.WaitGroup
		errs := make(chan error, writers*changesPerOne)
		for w := range writers {
			wg.Go(func() {
				for i := range changesPerOne {
					if err := o.change(ctx, "concurrent", w*changesPerOne+i); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if err := o.holds(ctx, "concurrent", writers*changesPerOne); err != nil {
			t.Errorf("after %d writers made %d changes each: %v", writers, changesPerOne, err)
		}
	})

	t.Run("FailingEditWritesNothing", func(t *testing.T) {
		t.Parallel()
		if len(o.failing) == 0 {
			t.Skip("this store's edits cannot fail")
		}
		given(t, "failing", 1)
		rev := revision(t, kv, o.key("failing"))
		for name, f := range o.failing {
			if err := f(ctx, "failing"); err == nil {
				t.Errorf("%s: no error", name)
			}
			unchanged(t, "failing", rev, name)
		}
		if err := o.holds(ctx, "failing", 1); err != nil {
			t.Error(err)
		}
	})

	t.Run("NoOpWritesNothing", func(t *testing.T) {
		t.Parallel()
		given(t, "noop", 1)
		rev := revision(t, kv, o.key("noop"))
		if err := o.noop(ctx, "noop"); err != nil {
			t.Fatal(err)
		}
		unchanged(t, "noop", rev, "a change that changes nothing")
	})

	t.Run("DoneContextStops", func(t *testing.T) {
		t.Parallel()
		given(t, "done", 1)
		rev := revision(t, kv, o.key("done"))
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if err := o.change(cancelled, "done", 1); !errors.Is(err, context.Canceled) {
			t.Errorf("with a cancelled context: %v, want context.Canceled", err)
		}
		expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
		defer cancel()
		if err := o.change(expired, "done", 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("with an expired context: %v, want context.DeadlineExceeded", err)
		}
		unchanged(t, "done", rev, "a change under a done context")
	})

	t.Run("ContentionGivesUp", func(t *testing.T) {
		t.Parallel()
		given(t, "contended", 1)
		before := value(t, kv, o.key("contended"))
		r := &rival{KeyValue: kv}
		err := sc.open(r, js, ids).change(ctx, "contended", 1)
		if !errors.Is(err, kvdoc.ErrContention) || !strings.Contains(err.Error(), "try again") {
			t.Errorf("losing every compare-and-swap: %v, want kvdoc.ErrContention", err)
		}
		if n := r.writes.Load(); n != kvdoc.MaxAttempts {
			t.Errorf("%d writes tried, want kvdoc.MaxAttempts = %d", n, kvdoc.MaxAttempts)
		}
		if after := value(t, kv, o.key("contended")); after != before {
			t.Errorf("stored %s, want %s as it was (the rival rewrites it as it is)", after, before)
		}
		if err := o.holds(ctx, "contended", 1); err != nil {
			t.Error(err)
		}
	})

	t.Run("DeadlineStopsRetries", func(t *testing.T) {
		t.Parallel()
		given(t, "deadline", 1)
		r := &rival{KeyValue: kv}
		dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := sc.open(r, js, ids).change(dctx, "deadline", 1)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("losing every compare-and-swap until the deadline: %v, want context.DeadlineExceeded", err)
		}
		if n := r.writes.Load(); n >= kvdoc.MaxAttempts {
			t.Errorf("%d writes tried: the retries ran to the end of their budget, not to the deadline", n)
		}
		if took := time.Since(start); took > 50*time.Millisecond+kvdoc.MaxBackoff+time.Second {
			t.Errorf("returned %s after a 50ms deadline", took)
		}
		if err := o.holds(ctx, "deadline", 1); err != nil {
			t.Error(err)
		}
	})

	t.Run("CorruptValueIsReportedAndKept", func(t *testing.T) {
		t.Parallel()
		given(t, "corrupt", 0)
		key := o.key("corrupt")
		rev, err := kv.Put(ctx, key, []byte("{not json"))
		if err != nil {
			t.Fatal(err)
		}
		err = o.change(ctx, "corrupt", 0)
		if !errors.Is(err, kvdoc.ErrCorrupt) || !strings.Contains(err.Error(), key) {
			t.Errorf("change of a corrupt document: %v, want kvdoc.ErrCorrupt naming %s", err, key)
		}
		unchanged(t, "corrupt", rev, "a change of a corrupt document")
		if e, err := kv.Get(ctx, key); err != nil || string(e.Value()) != "{not json" {
			t.Errorf("the corrupt value was not left as it was")
		}
	})

	for _, remove := range []string{"Delete", "Purge"} {
		t.Run(remove+"dKeyIsMissing", func(t *testing.T) {
			t.Parallel()
			doc := strings.ToLower(remove) + "d"
			given(t, doc, 2)
			key := o.key(doc)
			var err error
			if remove == "Delete" {
				err = kv.Delete(ctx, key)
			} else {
				err = kv.Purge(ctx, key)
			}
			if err != nil {
				t.Fatal(err)
			}
			err = o.change(ctx, doc, 0)
			if o.create != nil {
				if !errors.Is(err, o.notFound) {
					t.Errorf("change of a %sd document: %v, want %v", strings.ToLower(remove), err, o.notFound)
				}
				unchanged(t, doc, 0, "a change of a missing document")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := o.holds(ctx, doc, 1); err != nil {
				t.Errorf("after %s and one change, the document should hold just that one: %v", strings.ToLower(remove), err)
			}
		})
	}
}

// revision is key's revision, 0 when missing or deleted.
func revision(t *testing.T, kv jetstream.KeyValue, key string) uint64 {
	t.Helper()
	e, err := kv.Get(t.Context(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return e.Revision()
}

// value is key's stored value.
func value(t *testing.T, kv jetstream.KeyValue, key string) string {
	t.Helper()
	e, err := kv.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(e.Value())
}

// rival is a bucket in which another writer always gets in first: before
// each Update it rewrites the key with its current value, so the Update's
// compare-and-swap fails. writes counts the Creates and Updates tried.
type rival struct {
	jetstream.KeyValue
	writes atomic.Int64
}

func (r *rival) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	r.writes.Add(1)
	e, err := r.KeyValue.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if _, err := r.KeyValue.Put(ctx, key, e.Value()); err != nil {
		return 0, err
	}
	return r.KeyValue.Update(ctx, key, value, rev)
}

func (r *rival) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	r.writes.Add(1)
	return r.KeyValue.Create(ctx, key, value, opts...)
}

// plainDocs is kvdoc.Change itself, on a document that counts.
var plainDocs = storeCase{name: "kvdoc", bucket: natsx.BucketTenants, open: func(kv jetstream.KeyValue, _ jetstream.JetStream, _ *sync.Map) ops {
	type counter struct {
		N int `json:"n"`
	}
	change := func(ctx context.Context, doc string, edit func(*counter) error) error {
		_, _, err := kvdoc.Change(ctx, kv, "counter-"+doc, func(c *counter, _ bool) error { return edit(c) })
		return err
	}
	return ops{
		key: func(doc string) string { return "counter-" + doc },
		change: func(ctx context.Context, doc string, _ int) error {
			return change(ctx, doc, func(c *counter) error { c.N++; return nil })
		},
		holds: func(ctx context.Context, doc string, n int) error {
			c, _, err := kvdoc.Get[counter](ctx, kv, "counter-"+doc)
			if err != nil {
				return err
			}
			if c.N != n {
				return fmt.Errorf("count %d, want %d", c.N, n)
			}
			return nil
		},
		noop: func(ctx context.Context, doc string) error {
			return change(ctx, doc, func(*counter) error { return nil })
		},
		failing: map[string]func(context.Context, string) error{
			"edit error": func(ctx context.Context, doc string) error {
				err := change(ctx, doc, func(c *counter) error { c.N++; return errEdit })
				if !errors.Is(err, errEdit) {
					return fmt.Errorf("want errEdit as it is, got %w", err)
				}
				return err
			},
		},
	}
}}

// limitsStore is limits.Limiter's record of suppressions (admissions are
// jobs, not documents): change n asks about event evt-n with
// findings_per_scan 0, which suppresses it; the document holds the
// suppressions.
var limitsStore = storeCase{name: "limits", bucket: natsx.BucketLimits, open: func(kv jetstream.KeyValue, js jetstream.JetStream, _ *sync.Map) ops {
	l := limits.New(js, kv)
	admit := func(ctx context.Context, doc string, n int) error {
		s := limits.Scope{Tenant: "acme", SubscriptionID: "sub_" + doc, Source: "acme", ScanID: "scan"}
		id, typ := fmt.Sprintf("evt-%d", n), fmt.Sprintf("type-%d", n%7)
		j := jobs.Job{WebhookID: jobs.WebhookID(id, s.SubscriptionID), Tenant: "acme", SubscriptionID: s.SubscriptionID, EventID: id,
			EventType: events.TypeFindingHigh, ScanID: "scan", FindingType: typ, Event: []byte(`{}`)}
		m, err := j.Msg()
		if err != nil {
			return err
		}
		d, err := l.Admit(ctx, s, 0, 1000, limits.Entry{EventKey: id, Type: typ, Job: m})
		if err == nil && d.Admitted {
			err = fmt.Errorf("evt-%d admitted over findings_per_scan 0", n)
		}
		return err
	}
	return ops{
		key:    func(doc string) string { return limits.Key("acme", "sub_"+doc, "acme", "scan") },
		change: admit,
		holds: func(ctx context.Context, doc string, n int) error {
			stats, err := l.ScanStats(ctx, "acme", "scan")
			if err != nil {
				return err
			}
			i := slices.IndexFunc(stats, func(s limits.Stats) bool { return s.SubscriptionID == "sub_"+doc })
			switch {
			case i < 0 && n == 0:
				return nil
			case i < 0:
				return fmt.Errorf("no stats, want %d suppressed", n)
			case stats[i].Admitted != 0 || stats[i].Suppressed != n:
				return fmt.Errorf("%d admitted and %d suppressed, want 0 and %d", stats[i].Admitted, stats[i].Suppressed, n)
			}
			return nil
		},
		// An event seen again is decided again, the same way.
		noop: func(ctx context.Context, doc string) error { return admit(ctx, doc, 0) },
	}
}}

// callbacksStore is callbacks.Registry: even changes are a scan.started
// with a callback URL, odd ones a scan.finished; a document holding both
// has queued its callback job.
var callbacksStore = storeCase{name: "callbacks", bucket: natsx.BucketCallbacks, open: func(kv jetstream.KeyValue, js jetstream.JetStream, _ *sync.Map) ops {
	reg := callbacks.New(kv, js)
	url := func(n int) string { return fmt.Sprintf("https://hooks.example.com/%d", n) }
	id := func(n int) string { return fmt.Sprintf("evt-%d", n) }
	event := func(n int) []byte { return fmt.Appendf(nil, `{"id":%q}`, id(n)) }
	change := func(ctx context.Context, reg *callbacks.Registry, doc string, n int) error {
		if n%2 == 0 {
			return reg.Started(ctx, "acme", doc, url(n))
		}
		return reg.Finished(ctx, "acme", doc, id(n), event(n))
	}
	return ops{
		key:    func(doc string) string { return "acme." + doc },
		change: func(ctx context.Context, doc string, n int) error { return change(ctx, reg, doc, n) },
		holds: func(ctx context.Context, doc string, n int) error {
			rec, rev, err := kvdoc.Get[callbacks.Record](ctx, kv, "acme."+doc)
			if err != nil {
				return err
			}
			switch n {
			case 0:
				if rev != 0 {
					return fmt.Errorf("record %+v, want none", rec)
				}
			case 1:
				if rec.URL != url(0) || rec.Finished != nil || rec.Queued {
					return fmt.Errorf("record %+v, want only the URL %s", rec, url(0))
				}
			default:
				k, err := strconv.Atoi(strings.TrimPrefix(rec.FinishedID, "evt-"))
				switch {
				case err != nil || k%2 == 0 || k >= n:
					return fmt.Errorf("finished event %q is none of the scan.finished events given", rec.FinishedID)
				case string(rec.Finished) != string(event(k)):
					return fmt.Errorf("finished event %s does not go with its id %s", rec.Finished, rec.FinishedID)
				case !strings.HasPrefix(rec.URL, "https://hooks.example.com/"):
					return fmt.Errorf("record %+v lost its URL", rec)
				case !rec.Queued:
					return fmt.Errorf("record %+v has both halves but was not queued", rec)
				}
			}
			return nil
		},
		// The first URL stays.
		noop: func(ctx context.Context, doc string) error { return reg.Started(ctx, "acme", doc, url(2)) },
		// No failing edit: the record is stored first and the job published
		// from it afterwards, so a failed publish leaves a stored, unqueued
		// record (see the callbacks package's own tests).
	}
}}

// tenantsStore is tenants.Store: change n counts up the number kept in
// the partner's name (p1, p2, ...), a read-modify-write that a lost update
// would show.
var tenantsStore = storeCase{name: "tenants", bucket: natsx.BucketTenants, open: func(kv jetstream.KeyValue, _ jetstream.JetStream, _ *sync.Map) ops {
	s := tenants.NewStore(kv)
	count := func(t *tenants.Tenant) int {
		n, _ := strconv.Atoi(strings.TrimPrefix(t.Partner, "p"))
		return n
	}
	change := func(ctx context.Context, doc string, edit func(*tenants.Tenant) error) error {
		_, err := s.Change(ctx, doc, edit)
		return err
	}
	return ops{
		key: func(doc string) string { return doc },
		change: func(ctx context.Context, doc string, _ int) error {
			return change(ctx, doc, func(t *tenants.Tenant) error { t.Partner = fmt.Sprintf("p%d", count(t)+1); return nil })
		},
		holds: func(ctx context.Context, doc string, n int) error {
			t, _, err := s.Get(ctx, doc)
			switch {
			case errors.Is(err, tenants.ErrNotFound) && n == 0:
				return nil
			case err != nil:
				return err
			case count(t) != n || t.Tenant != doc:
				return fmt.Errorf("record %+v, want tenant %s with partner p%d", t, doc, n)
			}
			return nil
		},
		noop: func(ctx context.Context, doc string) error {
			return change(ctx, doc, func(*tenants.Tenant) error { return nil })
		},
		failing: map[string]func(context.Context, string) error{
			"edit error": func(ctx context.Context, doc string) error {
				err := change(ctx, doc, func(t *tenants.Tenant) error { t.Partner = "p9"; return errEdit })
				if !errors.Is(err, errEdit) {
					return fmt.Errorf("want errEdit as it is, got %w", err)
				}
				return err
			},
			"invalid result": func(ctx context.Context, doc string) error {
				err := change(ctx, doc, func(t *tenants.Tenant) error { t.Partner = t.Tenant; return nil })
				var fe *tenants.FieldError
				if !errors.As(err, &fe) || fe.Field != "partner" {
					return fmt.Errorf("want a FieldError naming partner, got %w", err)
				}
				return err
			},
		},
	}
}}

// subscriptionsStore is subscriptions.Store.Change, the read-modify-write
// of secret rotations and of delivery health: change n adds a target glob
// to the filter.
var subscriptionsStore = storeCase{name: "subscriptions", bucket: natsx.BucketSubscriptions, open: func(kv jetstream.KeyValue, _ jetstream.JetStream, ids *sync.Map) ops {
	st := subscriptions.NewStore(kv, nil)
	id := func(doc string) string {
		v, _ := ids.Load(doc)
		s, _ := v.(string)
		return s
	}
	change := func(ctx context.Context, doc string, edit func(*subscriptions.Subscription) error) error {
		_, err := st.Change(ctx, "acme", id(doc), edit)
		return err
	}
	target := func(n int) string { return fmt.Sprintf("t%d.example.com", n) }
	return ops{
		create: func(ctx context.Context, doc string) error {
			s, err := st.Create(ctx, subscriptions.Subscription{Tenant: "acme", URL: "https://hooks.example.com/" + doc, Events: []string{"finding.*"}})
			if err == nil {
				ids.Store(doc, s.ID)
			}
			return err
		},
		notFound: subscriptions.ErrNotFound,
		key:      func(doc string) string { return subscriptions.Key("acme", id(doc)) },
		change: func(ctx context.Context, doc string, n int) error {
			return change(ctx, doc, func(s *subscriptions.Subscription) error {
				s.Filter.Targets = append(s.Filter.Targets, target(n))
				return nil
			})
		},
		holds: func(ctx context.Context, doc string, n int) error {
			s, _, err := st.Get(ctx, "acme", id(doc))
			if err != nil {
				return err
			}
			got := slices.Sorted(slices.Values(s.Filter.Targets))
			want := make([]string, n)
			for i := range n {
				want[i] = target(i)
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				return fmt.Errorf("%d targets %v, want %d", len(got), got, n)
			}
			return nil
		},
		noop: func(ctx context.Context, doc string) error {
			return change(ctx, doc, func(*subscriptions.Subscription) error { return nil })
		},
		failing: map[string]func(context.Context, string) error{
			"edit error": func(ctx context.Context, doc string) error {
				err := change(ctx, doc, func(s *subscriptions.Subscription) error { s.Disabled = true; return errEdit })
				if !errors.Is(err, errEdit) {
					return fmt.Errorf("want errEdit as it is, got %w", err)
				}
				return err
			},
			"invalid result": func(ctx context.Context, doc string) error {
				err := change(ctx, doc, func(s *subscriptions.Subscription) error { s.URL = "ftp://hooks.example.com"; return nil })
				var ve *subscriptions.ValidationError
				if !errors.As(err, &ve) {
					return fmt.Errorf("want a ValidationError, got %w", err)
				}
				return err
			},
		},
	}
}}

// Rotations, the read-modify-write of subscriptions.Store besides delivery
// health, beyond the contract: concurrent rotations all land, each new
// secret first in the document its caller gets back.
func TestSubscriptionRotations(t *testing.T) {
	t.Parallel()
	kv := natsxtest.KeyValue(t, natsxtest.JetStream(t), natsx.BucketSubscriptions)
	st := subscriptions.NewStore(kv, nil)
	ctx := t.Context()
	create := func() *subscriptions.Subscription {
		s, err := st.Create(ctx, subscriptions.Subscription{Tenant: "acme", URL: "https://hooks.example.com/r", Events: []string{"scan.*"}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("ConcurrentRotationsAllLand", func(t *testing.T) {
		t.Parallel()
		s := create()
		secrets := make([]string, 8)
		var wg sync.WaitGroup
		for i := range secrets {
			secrets[i] = fmt.Sprintf("whsec_%s", strings.Repeat(strconv.Itoa(i), 32))
			wg.Go(func() {
				got, err := st.Rotate(ctx, "acme", s.ID, time.Hour, secrets[i])
				if err != nil {
					t.Error(err)
					return
				}
				if got.Secrets[0].Secret != secrets[i] {
					t.Errorf("rotation to secret %d returned %s first", i, got.Secrets[0].Secret)
				}
			})
		}
		wg.Wait()
		got, _, err := st.Get(ctx, "acme", s.ID)
		if err != nil {
			t.Fatal(err)
		}
		var stored []string
		for _, sec := range got.Secrets {
			stored = append(stored, sec.Secret)
		}
		want := append([]string{s.Secrets[0].Secret}, secrets...)
		slices.Sort(stored)
		slices.Sort(want)
		if !slices.Equal(stored, want) {
			t.Errorf("stored secrets %v, want the first and the 8 rotated in", stored)
		}
	})

	t.Run("ZeroOverlapKeepsOnlyTheNewSecret", func(t *testing.T) {
		t.Parallel()
		s := create()
		got, err := st.Rotate(ctx, "acme", s.ID, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Secrets) != 1 || got.Secrets[0].Secret == s.Secrets[0].Secret || !strings.HasPrefix(got.Secrets[0].Secret, "whsec_") {
			t.Errorf("secrets after rotating with no overlap: %+v", got.Secrets)
		}
	})

	t.Run("DeletedSubscriptionIsNotFound", func(t *testing.T) {
		t.Parallel()
		s := create()
		if err := st.Delete(ctx, "acme", s.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Rotate(ctx, "acme", s.ID, time.Hour, ""); !errors.Is(err, subscriptions.ErrNotFound) {
			t.Errorf("rotating a deleted subscription: %v, want ErrNotFound", err)
		}
	})

	t.Run("ContentionIsAConflict", func(t *testing.T) {
		t.Parallel()
		s := create()
		_, err := subscriptions.NewStore(&rival{KeyValue: kv}, nil).Rotate(ctx, "acme", s.ID, time.Hour, "")
		if !errors.Is(err, subscriptions.ErrConflict) || !errors.Is(err, kvdoc.ErrContention) {
			t.Errorf("rotation losing every compare-and-swap: %v, want ErrConflict and kvdoc.ErrContention", err)
		}
	})
}
