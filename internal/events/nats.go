package events

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// This file is the CloudEvents NATS protocol binding (1.0.1) over plain
// nats.go messages. The sdk's own nats_jetstream protocol never acks or
// naks, so scanwire binds sdk-go's binding package to nats.Msg itself and
// keeps ack/nak decisions with the services.

const (
	headerPrefix      = "ce-"
	headerContentType = "content-type"
)

// natsSpecs maps attribute names to header names: "ce-" + name, except
// datacontenttype, which is the message's content-type.
var natsSpecs = spec.WithPrefixMatchExact(
	func(name string) string {
		if name == "datacontenttype" {
			return headerContentType
		}
		return headerPrefix + name
	},
	headerPrefix,
)

// ToMsg encodes e in binary mode on subject: attributes in ce- headers,
// data in the body, as everything published to NATS is (docs/design.md).
func ToMsg(ctx context.Context, subject string, e *event.Event) (*nats.Msg, error) {
	m := &nats.Msg{Subject: subject, Header: nats.Header{}}
	w := (*msgWriter)(m)
	ctx = binding.WithForceBinary(ctx)
	if _, err := binding.Write(ctx, binding.ToMessage(e), w, w); err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID(), err)
	}
	return m, nil
}

// FromMsg decodes a CloudEvent from a NATS message in binary or structured
// mode. It checks the encoding, not the content: call Validate for that.
func FromMsg(header nats.Header, data []byte) (*event.Event, error) {
	m := newMsgReader(header, data)
	if m.ReadEncoding() == binding.EncodingUnknown {
		return nil, fmt.Errorf("not a CloudEvent: no ce-specversion header (binary mode) and content-type %q is not %s (structured mode)",
			m.header(headerContentType), event.ApplicationCloudEventsJSON)
	}
	e, err := binding.ToEvent(context.Background(), m)
	if err != nil {
		return nil, fmt.Errorf("not a valid CloudEvent: %w", err)
	}
	return e, nil
}

// msgReader implements binding.MessageReader over a NATS message.
type msgReader struct {
	headers map[string]string // lower-case name -> first value
	data    []byte
	format  format.Format
	version spec.Version
}

func newMsgReader(h nats.Header, data []byte) *msgReader {
	m := &msgReader{headers: make(map[string]string, len(h)), data: data}
	for k, v := range h {
		if len(v) > 0 {
			m.headers[strings.ToLower(k)] = v[0]
		}
	}
	if v, ok := m.headers[natsSpecs.PrefixedSpecVersionName()]; ok {
		m.version = natsSpecs.Version(v)
	} else {
		m.format = format.Lookup(m.headers[headerContentType])
	}
	return m
}

func (m *msgReader) header(name string) string { return m.headers[name] }

func (m *msgReader) ReadEncoding() binding.Encoding {
	switch {
	case m.version != nil:
		return binding.EncodingBinary
	case m.format != nil && m.format != format.JSONBatch:
		return binding.EncodingStructured
	}
	return binding.EncodingUnknown
}

func (m *msgReader) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	if m.format == nil {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, m.format, bytes.NewReader(m.data))
}

func (m *msgReader) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	if m.version == nil {
		return binding.ErrNotBinary
	}
	for k, v := range m.headers {
		var err error
		if attr := m.version.Attribute(k); attr != nil {
			err = w.SetAttribute(attr, v)
		} else if ext, ok := strings.CutPrefix(k, headerPrefix); ok && ext != "" {
			err = w.SetExtension(ext, v)
		}
		if err != nil {
			return err
		}
	}
	if len(m.data) > 0 {
		return w.SetData(bytes.NewReader(m.data))
	}
	return nil
}

func (m *msgReader) Finish(error) error { return nil }

// GetAttribute and GetExtension make msgReader a MessageMetadataReader,
// which binding requires of every binary-mode message.
func (m *msgReader) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	attr := m.version.AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	if v, ok := m.headers[attr.PrefixedName()]; ok {
		return attr, v
	}
	return attr, nil
}

func (m *msgReader) GetExtension(name string) any {
	if v, ok := m.headers[headerPrefix+strings.ToLower(name)]; ok {
		return v
	}
	return nil
}

// msgWriter implements binding's structured and binary writers on a
// nats.Msg. Header names stay lower case: nats.Header is case-sensitive
// and the binding spec names them in lower case.
type msgWriter nats.Msg

func (w *msgWriter) SetStructuredEvent(_ context.Context, f format.Format, r io.Reader) error {
	w.Header.Set(headerContentType, f.MediaType())
	return w.SetData(r)
}

func (w *msgWriter) Start(context.Context) error { return nil }
func (w *msgWriter) End(context.Context) error   { return nil }

func (w *msgWriter) SetData(r io.Reader) error {
	b, err := io.ReadAll(r)
	w.Data = b
	return err
}

func (w *msgWriter) SetAttribute(attr spec.Attribute, value any) error {
	key := headerPrefix + attr.Name()
	if attr.Kind() == spec.DataContentType {
		key = headerContentType
	}
	if value == nil {
		w.Header.Del(key)
		return nil
	}
	s, err := types.Format(value)
	if err != nil {
		return err
	}
	w.Header.Set(key, s)
	return nil
}

func (w *msgWriter) SetExtension(name string, value any) error {
	key := headerPrefix + strings.ToLower(name)
	if value == nil {
		w.Header.Del(key)
		return nil
	}
	s, err := types.Format(value)
	if err != nil {
		return err
	}
	w.Header.Set(key, s)
	return nil
}

var (
	_ binding.MessageReader         = (*msgReader)(nil)
	_ binding.MessageMetadataReader = (*msgReader)(nil)
	_ binding.StructuredWriter      = (*msgWriter)(nil)
	_ binding.BinaryWriter          = (*msgWriter)(nil)
)
