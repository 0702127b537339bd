package natsx

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HeaderSize counts headers as JetStream does: headers of exactly
// MaxHeaderSize bytes are stored, one byte more is refused, and TooLarge
// recognises that refusal (and a body over the stream's cap) as final.
func TestHeaderSizeAndTooLargeMatchTheServer(t *testing.T) {
	t.Parallel()
	js := testJS(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 1024}); err != nil {
		t.Fatal(err)
	}
	withHeaders := func(size int) *nats.Msg {
		m := nats.NewMsg("copies.h")
		m.Header.Set("Pad", "")
		m.Header.Set("Pad", strings.Repeat("p", size-HeaderSize(m.Header)))
		if got := HeaderSize(m.Header); got != size {
			t.Fatalf("built headers of %d bytes, want %d", got, size)
		}
		return m
	}
	if _, err := js.PublishMsg(ctx, withHeaders(MaxHeaderSize)); err != nil {
		t.Errorf("headers of MaxHeaderSize refused: %v", err)
	}
	_, err := js.PublishMsg(ctx, withHeaders(MaxHeaderSize+1))
	if err == nil || !TooLarge(err) {
		t.Errorf("headers of MaxHeaderSize+1: err %v, want one TooLarge recognises", err)
	}
	big := nats.NewMsg("small.x")
	big.Data = make([]byte, 2048)
	if _, err := js.PublishMsg(ctx, big); err == nil || !TooLarge(err) {
		t.Errorf("body over the stream's cap: err %v, want one TooLarge recognises", err)
	}
	if TooLarge(errors.New("nats: timeout")) || TooLarge(context.DeadlineExceeded) {
		t.Error("TooLarge took a passing failure for a final one")
	}
}

// Writes is failing only while the last write within the window failed
// and none has succeeded since; a message too large is not the store's
// fault.
func TestWritesReportsOnlyAFailingStore(t *testing.T) {
	t.Parallel()
	var w Writes
	if err := w.Failing(time.Minute); err != nil {
		t.Errorf("fresh: %v", err)
	}
	w.Observe(&jetstream.APIError{ErrorCode: errCodeMessageTooLarge})
	if err := w.Failing(time.Minute); err != nil {
		t.Errorf("after a message too large: %v, want nil", err)
	}
	w.Observe(errors.New("write: no space left on device"))
	if err := w.Failing(time.Minute); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("after a write error: %v", err)
	}
	if err := w.Failing(0); err != nil {
		t.Errorf("outside the window: %v, want nil", err)
	}
	w.Observe(nil)
	if err := w.Failing(time.Minute); err != nil {
		t.Errorf("after a success: %v, want nil", err)
	}
	var none *Writes
	none.Observe(errors.New("x"))
	if none.Failing(time.Minute) != nil {
		t.Error("a nil Writes reported a failure")
	}
}
