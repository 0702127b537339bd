package events

import "fmt"

// RejectReason names why fan-out refused an event. It labels the rejection
// metric and the logs, and travels with the event's copy in REJECTED as
// the HeaderRejectCode header, beside the human-readable
// HeaderRejectReason.
type RejectReason int

// The reasons an event is rejected.
const (
	// RejectBadSubject: the subject is not scans.<tenant>.<scan_id>.<kind>.
	RejectBadSubject RejectReason = iota + 1
	// RejectUndecodable: the message is not a CloudEvent.
	RejectUndecodable
	// RejectInvalid: its attributes or data break the event contract.
	RejectInvalid
	// RejectCallbackURL: its callback_url is one the egress policy refuses.
	RejectCallbackURL
)

func (r RejectReason) String() string {
	switch r {
	case RejectBadSubject:
		return "bad_subject"
	case RejectUndecodable:
		return "undecodable"
	case RejectInvalid:
		return "invalid"
	case RejectCallbackURL:
		return "callback_url_refused"
	}
	return fmt.Sprintf("reject(%d)", int(r))
}
