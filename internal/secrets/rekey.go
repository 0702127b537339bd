package secrets

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Rekey seals again, under the keyring's current key, every secret of
// bucket that is in plain text or sealed under another key. Each document
// is rewritten with compare-and-swap (one changed meanwhile is read
// again), and its earlier revisions, which hold the secret as it was, are
// purged, so that the old key opens nothing the store still serves. It returns how many documents it
// rewrote and how many it read.
func Rekey(ctx context.Context, js jetstream.JetStream, bucket string, k *Keyring, fields Fields) (rewritten, read int, err error) {
	if !k.Enabled() {
		return 0, 0, fmt.Errorf("%s is not set: there is no key to seal with", EnvKey)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return 0, 0, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return 0, 0, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return 0, 0, nil
		}
		return 0, 0, fmt.Errorf("list %s: %w", kv.Bucket(), err)
	}
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	for _, key := range keys {
		done, err := rekeyOne(ctx, kv, k, fields, key)
		if err == nil {
			err = eraseHistory(ctx, kv, stream, key)
		}
		if err != nil {
			return rewritten, read, err
		}
		read++
		if done {
			rewritten++
		}
	}
	return rewritten, read, nil
}

// rekeyOne rewrites one document if it needs it, and says whether it did.
func rekeyOne(ctx context.Context, kv jetstream.KeyValue, k *Keyring, fields Fields, key string) (bool, error) {
	where := kv.Bucket() + "/" + key
	for range 10 {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read %s: %w", where, err)
		}
		if !k.NeedsRekey(e.Value(), fields) {
			return false, nil
		}
		plain, err := k.OpenDoc(e.Value(), where, fields)
		if err != nil {
			return false, fmt.Errorf("%s: %w", where, err)
		}
		sealed, err := k.SealDoc(plain, where, fields)
		if err != nil {
			return false, fmt.Errorf("%s: %w", where, err)
		}
		if _, err := kv.Update(ctx, key, sealed, e.Revision()); err == nil {
			return true, nil
		} else if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return false, fmt.Errorf("write %s: %w", where, err)
		}
	}
	return false, fmt.Errorf("%s: changed too often meanwhile; run rekey again", where)
}

// eraseHistory purges every revision of key but the latest: the history
// of a bucket keeps the secrets as they were, in plain text or under the
// old key.
func eraseHistory(ctx context.Context, kv jetstream.KeyValue, stream jetstream.Stream, key string) error {
	err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+kv.Bucket()+"."+key), jetstream.WithPurgeKeep(1))
	if err != nil {
		return fmt.Errorf("purge the history of %s %s: %w", kv.Bucket(), key, err)
	}
	return nil
}
