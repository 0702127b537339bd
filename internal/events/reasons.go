package events

// RejectReason names why fan-out refused an event. It labels the rejection
// metric and the logs, and travels with the event's copy in REJECTED as
// the HeaderRejectCode header, beside the human-readable
// HeaderRejectReason.
type RejectReason string

// The reasons an event is rejected.
const (
	// RejectBadSubject: the subject is not scans.<tenant>.<scan_id>.<kind>.
	RejectBadSubject RejectReason = "bad_subject"
	// RejectUndecodable: the message is not a CloudEvent.
	RejectUndecodable RejectReason = "undecodable"
	// RejectInvalid: its attributes or data break the event contract.
	RejectInvalid RejectReason = "invalid"
	// RejectCallbackURL: its callback_url is one the egress policy refuses.
	RejectCallbackURL RejectReason = "callback_url_refused"
	// RejectTooLarge: what the event becomes (a job) is larger than any
	// stream takes. Validation's size limit keeps this from happening; it
	// is the backstop that keeps such an event from looping.
	RejectTooLarge RejectReason = "too_large"
	// RejectNoSubscription: a webhook.test event names a subscription of
	// its tenant that does not exist.
	RejectNoSubscription RejectReason = "subscription_not_found"
)

func (r RejectReason) String() string { return string(r) }
