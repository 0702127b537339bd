package kvdoc_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/kvdoc"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

type note struct {
	Text string   `json:"text"`
	Tags []string `json:"tags,omitempty"`
}

// Documents are stored without HTML escaping: "<" stays "<".
func TestChangeDoesNotEscapeHTML(t *testing.T) {
	t.Parallel()
	kv := natsxtest.KeyValue(t, natsxtest.JetStream(t), natsx.BucketTenants)
	if _, _, err := kvdoc.Change(t.Context(), kv, "html", func(n *note, _ bool) error {
		n.Text = `<script> & "quotes"`
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), "html")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"text":"<script> & \"quotes\""}`; string(e.Value()) != want {
		t.Errorf("stored %s, want %s", e.Value(), want)
	}
}

func TestChange(t *testing.T) {
	t.Parallel()
	kv := natsxtest.KeyValue(t, natsxtest.JetStream(t), natsx.BucketTenants)
	ctx := t.Context()

	t.Run("MissingKeyCreatedAsWritten", func(t *testing.T) {
		t.Parallel()
		var sawExists []bool
		doc, rev, err := kvdoc.Change(ctx, kv, "created", func(n *note, exists bool) error {
			sawExists = append(sawExists, exists)
			n.Text = "a <b> & c"
			return nil
		})
		if err != nil || rev == 0 || doc.Text != "a <b> & c" {
			t.Fatalf("Change = %+v, %d, %v", doc, rev, err)
		}
		if len(sawExists) != 1 || sawExists[0] {
			t.Errorf("edit saw exists %v, want [false]", sawExists)
		}
		e, err := kv.Get(ctx, "created")
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"text":"a <b> & c"}`; string(e.Value()) != want || e.Revision() != rev {
			t.Errorf("stored %s at %d, want %s at %d", e.Value(), e.Revision(), want, rev)
		}
		_, rev2, err := kvdoc.Change(ctx, kv, "created", func(n *note, exists bool) error {
			if !exists || n.Text != "a <b> & c" {
				t.Errorf("edit got %+v, exists %v: not the stored document", n, exists)
			}
			n.Tags = append(n.Tags, "x")
			return nil
		})
		if err != nil || rev2 <= rev {
			t.Errorf("second Change: revision %d after %d, %v", rev2, rev, err)
		}
	})

	t.Run("NoOpOnMissingKeyWritesNothing", func(t *testing.T) {
		t.Parallel()
		doc, rev, err := kvdoc.Change(ctx, kv, "untouched", func(*note, bool) error { return nil })
		if err != nil || rev != 0 || doc.Text != "" {
			t.Errorf("Change = %+v, %d, %v; want the zero document at revision 0", doc, rev, err)
		}
		if _, err := kv.Get(ctx, "untouched"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("key written: %v", err)
		}
	})

	t.Run("NoOpReturnsCurrentRevision", func(t *testing.T) {
		t.Parallel()
		rev, err := kv.Put(ctx, "current", []byte(`{"text":"as is"}`))
		if err != nil {
			t.Fatal(err)
		}
		doc, got, err := kvdoc.Change(ctx, kv, "current", func(*note, bool) error { return nil })
		if err != nil || got != rev || doc.Text != "as is" {
			t.Errorf("Change = %+v, %d, %v; want the stored document at %d", doc, got, err, rev)
		}
	})

	t.Run("GetMissingAndCorrupt", func(t *testing.T) {
		t.Parallel()
		if doc, rev, err := kvdoc.Get[note](ctx, kv, "never"); err != nil || rev != 0 || doc.Text != "" {
			t.Errorf("Get of a missing key = %+v, %d, %v", doc, rev, err)
		}
		if _, err := kv.Put(ctx, "garbled", []byte("<html>")); err != nil {
			t.Fatal(err)
		}
		_, _, err := kvdoc.Get[note](ctx, kv, "garbled")
		if !errors.Is(err, kvdoc.ErrCorrupt) || !strings.Contains(err.Error(), "tenants garbled") || !strings.Contains(err.Error(), "fix or delete") {
			t.Errorf("Get of a corrupt value: %v, want kvdoc.ErrCorrupt naming the bucket and key and the fix", err)
		}
	})
}

// Writers racing to create a key over its delete marker all land. The
// client's Create then retries at the marker's revision and returns
// losing that race as the server's error, unmapped: on this single server
// its code (10071) still matches jetstream.ErrKeyExists; on a replicated
// bucket it is 10164, which only Change's own check of the code catches.
func TestConcurrentCreatesOverDeletedKey(t *testing.T) {
	t.Parallel()
	kv := natsxtest.KeyValue(t, natsxtest.JetStream(t), natsx.BucketTenants)
	ctx := t.Context()
	type counter struct{ N int }
	for _, remove := range []func(context.Context, string, ...jetstream.KVDeleteOpt) error{kv.Delete, kv.Purge} {
		if _, err := kv.Put(ctx, "k", []byte(`{"N":41}`)); err != nil {
			t.Fatal(err)
		}
		if err := remove(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, _, err := kvdoc.Change(ctx, kv, "k", func(c *counter, _ bool) error { c.N++; return nil }); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if c, _, err := kvdoc.Get[counter](ctx, kv, "k"); err != nil || c.N != 8 {
			t.Errorf("count %d, %v; want 8 (the deleted 41 forgotten)", c.N, err)
		}
	}
}
