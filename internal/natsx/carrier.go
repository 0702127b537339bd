package natsx

import "github.com/nats-io/nats.go"

// HeaderCarrier carries trace context in NATS headers. It keeps keys as
// given ("traceparent"): nats.Header is case-sensitive, and the HTTP
// carrier would canonicalise the key to "Traceparent", which the next hop
// would not find.
type HeaderCarrier nats.Header

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces the values of key.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the keys.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
