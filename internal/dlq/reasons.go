package dlq

import "fmt"

// Reason names why a job was dead-lettered. It is stored with every dead
// letter (as its String, field "code"), labels the dead-letter metric and
// the delivery logs, and lets a program tell dead letters apart without
// reading the human-readable DeadLetter.Reason.
type Reason int

// The reasons a job is given up on.
const (
	// ReasonUnknown is a dead letter written before codes existed.
	ReasonUnknown Reason = iota
	// ReasonRetriesExhausted: every attempt of the schedule failed.
	ReasonRetriesExhausted
	// ReasonGone: the endpoint answered 410 Gone (the subscription is
	// disabled with it).
	ReasonGone
	// ReasonEgressBlocked: the endpoint's address is one the egress policy
	// never allows.
	ReasonEgressBlocked
	// ReasonSubscriptionDeleted: the job's subscription no longer exists.
	ReasonSubscriptionDeleted
	// ReasonSubscriptionDisabled: the job's subscription is disabled.
	ReasonSubscriptionDisabled
	// ReasonSubscriptionInvalid: the job's subscription document is stored
	// but invalid (edited by hand), so the pipeline does not serve it.
	ReasonSubscriptionInvalid
	// ReasonUnsendable: no request can be made of the job (its stored event
	// is unreadable, its profile unknown, or rendering failed).
	ReasonUnsendable
	// ReasonUndecodable: the message in DELIVERIES is not a job at all.
	ReasonUndecodable
)

var reasonNames = [...]string{
	ReasonUnknown:              "unknown",
	ReasonRetriesExhausted:     "retries_exhausted",
	ReasonGone:                 "gone",
	ReasonEgressBlocked:        "egress_blocked",
	ReasonSubscriptionDeleted:  "subscription_deleted",
	ReasonSubscriptionDisabled: "subscription_disabled",
	ReasonSubscriptionInvalid:  "subscription_invalid",
	ReasonUnsendable:           "unsendable",
	ReasonUndecodable:          "undecodable",
}

// String is the reason's stable label: "retries_exhausted".
func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// MarshalText writes the label.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a label; one this version does not know reads as
// ReasonUnknown rather than failing the whole dead letter.
func (r *Reason) UnmarshalText(b []byte) error {
	*r = ReasonUnknown
	for i, n := range reasonNames {
		if n == string(b) {
			*r = Reason(i)
		}
	}
	return nil
}
