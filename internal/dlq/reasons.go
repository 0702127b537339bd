package dlq

// Reason names why a job was dead-lettered. It is stored with every dead
// letter (field "code"), labels the dead-letter metric and the delivery
// logs, and lets a program tell dead letters apart without reading the
// human-readable DeadLetter.Reason.
type Reason string

// The reasons a job is given up on.
const (
	// ReasonRetriesExhausted: every attempt of the schedule failed.
	ReasonRetriesExhausted Reason = "retries_exhausted"
	// ReasonGone: the endpoint answered 410 Gone (the subscription is
	// disabled with it).
	ReasonGone Reason = "gone"
	// ReasonEgressBlocked: the endpoint's address is one the egress policy
	// never allows.
	ReasonEgressBlocked Reason = "egress_blocked"
	// ReasonSubscriptionDeleted: the job's subscription no longer exists.
	ReasonSubscriptionDeleted Reason = "subscription_deleted"
	// ReasonSubscriptionDisabled: the job's subscription is disabled.
	ReasonSubscriptionDisabled Reason = "subscription_disabled"
	// ReasonSubscriptionInvalid: the job's subscription document is stored
	// but invalid (edited by hand), so the pipeline does not serve it.
	ReasonSubscriptionInvalid Reason = "subscription_invalid"
	// ReasonUnsendable: no request can be made of the job (its stored event
	// is unreadable, its profile unknown, or rendering failed).
	ReasonUnsendable Reason = "unsendable"
	// ReasonUndecodable: the message in DELIVERIES is not a job at all.
	ReasonUndecodable Reason = "undecodable"
)

// String is the reason's label; a dead letter written before codes
// existed has none and reads "unknown".
func (r Reason) String() string {
	if r == "" {
		return "unknown"
	}
	return string(r)
}
