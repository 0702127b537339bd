// Package kvdoc reads and changes JSON documents kept in a NATS KV bucket,
// one document per key, with compare-and-swap. It is the one
// read-modify-write loop, and the one retry policy, of every store that
// keeps documents in KV (subscriptions, tenants, limits, callbacks,
// delivery health).
package kvdoc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/jsonx"
)

var (
	// ErrContention is wrapped by the error of a Change whose every
	// attempt lost its compare-and-swap to another writer. Nothing was
	// written; the caller may run the whole operation again later.
	ErrContention = errors.New("changed concurrently too often; try again")

	// ErrCorrupt is wrapped by the error of a Get or Change that found a
	// value it cannot decode into the document type. The value is left as
	// it is: fix it, or delete the key, by hand.
	ErrCorrupt = errors.New("stored value is not a valid document")
)

// The retry policy of Change, the same for every caller. A lost
// compare-and-swap means another writer has just changed the document, so
// the first retries follow at once; when many writers contend for one key
// (every fan-out worker deciding the limits of one busy scan) the waits
// grow and spread them out. The waits are random between zero and
// min(MaxBackoff, MinBackoff<<n) before the n-th retry ("full jitter"), so
// a Change that spends its whole budget waits about 1.2s in all; the
// caller's context cuts any wait short.
const (
	// MaxAttempts is how many times Change reads the document and tries
	// to write it before it gives up with ErrContention.
	MaxAttempts = 30
	// MinBackoff is the unit the waits double from: the n-th retry waits
	// up to MinBackoff<<n.
	MinBackoff = time.Millisecond
	// MaxBackoff bounds every wait between two attempts.
	MaxBackoff = 100 * time.Millisecond
)

// Get reads and decodes the document at key. A missing key, or one whose
// latest entry is a delete or purge marker, is the zero T at revision 0
// (KV revisions start at 1). A value that does not decode into T is an
// error wrapping ErrCorrupt and naming the bucket and the key.
func Get[T any](ctx context.Context, kv jetstream.KeyValue, key string) (T, uint64, error) {
	var doc T
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return doc, 0, nil
	case err != nil:
		return doc, 0, fmt.Errorf("read %s %s: %w", kv.Bucket(), key, err)
	}
	if err := json.Unmarshal(e.Value(), &doc); err != nil {
		return doc, 0, fmt.Errorf("%s %s: %w (revision %d: %w); fix or delete the key, it was left unchanged",
			kv.Bucket(), key, ErrCorrupt, e.Revision(), err)
	}
	return doc, e.Revision(), nil
}

// Change reads the document at key, lets edit change it, and writes the
// result back with compare-and-swap: Create when the key is missing, else
// Update at the revision read. It returns the document as stored and its
// revision.
//
//   - A missing key, or a deleted or purged one, is the zero T and
//     exists is false; writing it creates the key again.
//   - An error from edit aborts Change and is returned as it is; nothing
//     is written.
//   - When edit leaves the document as it was (byte for byte, as jsonx.Marshal
//     encodes it) nothing is written, and the revision returned is the
//     current one (0 for a missing key).
//   - When another writer changed the document since it was read, Change
//     reads it again and runs edit again on the newer document, up to
//     MaxAttempts times with a short random wait in between (see
//     MaxBackoff); then it gives up with an error wrapping ErrContention.
//     edit must therefore decide from the document it is given, keep no
//     state between runs, and may do only I/O that is safe to repeat.
//   - When ctx is done Change stops at once, even in a wait, with an error
//     wrapping ctx.Err(); it never waits past ctx's deadline.
//   - A stored value that does not decode into T is an error wrapping
//     ErrCorrupt and naming the key; it is never overwritten.
//
// Documents are written as jsonx.Marshal encodes them.
func Change[T any](ctx context.Context, kv jetstream.KeyValue, key string, edit func(doc *T, exists bool) error) (T, uint64, error) {
	var zero T
	for attempt := range MaxAttempts {
		if attempt > 0 {
			if err := wait(ctx, attempt); err != nil {
				return zero, 0, fmt.Errorf("change %s %s: %w (after %d conflicting writes; nothing was written)", kv.Bucket(), key, err, attempt)
			}
		}
		if err := ctx.Err(); err != nil {
			return zero, 0, fmt.Errorf("change %s %s: %w (nothing was written)", kv.Bucket(), key, err)
		}
		doc, rev, err := Get[T](ctx, kv, key)
		if err != nil {
			return zero, 0, err
		}
		after, changed, err := edited(&doc, func(d *T) error { return edit(d, rev != 0) })
		switch {
		case err != nil:
			return zero, 0, err
		case !changed:
			return doc, rev, nil
		}
		if rev == 0 {
			rev, err = kv.Create(ctx, key, after)
		} else {
			rev, err = kv.Update(ctx, key, after, rev)
		}
		switch {
		case err == nil:
			return doc, rev, nil
		case !conflict(err):
			return zero, 0, fmt.Errorf("write %s %s: %w", kv.Bucket(), key, err)
		}
		// Another writer got in first: decide again on its document.
	}
	return zero, 0, fmt.Errorf("%s %s: %w (gave up after %d attempts, nothing was written)", kv.Bucket(), key, ErrContention, MaxAttempts)
}

// conflict reports whether a Create or Update lost its compare-and-swap.
// Besides the two errors the client documents, it takes the server's
// wrong-last-sequence codes as they are: Create over a deleted key retries
// at the delete marker's revision and returns that attempt's error
// unmapped (10164 on a replicated bucket).
func conflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// wait sleeps before retry number n (1 for the first) as the retry policy
// says, or until ctx is done, and then returns ctx.Err().
func wait(ctx context.Context, n int) error {
	ceiling := MaxBackoff
	if n < 16 && MinBackoff<<n < MaxBackoff {
		ceiling = MinBackoff << n
	}
	t := time.NewTimer(rand.N(ceiling))
	defer t.Stop()
	select {
	case <-t.C:
		return ctx.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Edited runs edit on doc and reports whether it changed it, as Change
// tells a no-op (byte for byte, as jsonx.Marshal encodes it). A store whose
// documents record when they last changed uses it inside its edit to stamp
// only real changes.
func Edited[T any](doc *T, edit func(*T) error) (changed bool, err error) {
	_, changed, err = edited(doc, edit)
	return changed, err
}

// edited is Edited that also returns the document as encoded after edit.
func edited[T any](doc *T, edit func(*T) error) (after []byte, changed bool, err error) {
	before, err := jsonx.Marshal(doc)
	if err != nil {
		return nil, false, fmt.Errorf("encode: %w", err)
	}
	if err := edit(doc); err != nil {
		return nil, false, err
	}
	if after, err = jsonx.Marshal(doc); err != nil {
		return nil, false, fmt.Errorf("encode: %w", err)
	}
	return after, !bytes.Equal(before, after), nil
}
