// Package natsauth closes NATS as the HTTP API is closed: who may connect,
// and what each connection may publish and subscribe to.
//
// A scanner connects as its tenant, with the tenant's API key as its
// password, and may only publish events of that tenant and read its own
// publish acknowledgements. The operator connects as "admin" with the
// admin key, and may do everything in the scanwire account. Both are
// answered by scanwire's auth callout (callout.go), from the keys the
// gateway uses, so a key changed in scanwire takes effect at the next
// connection without touching the server. Each service connects as a user
// of its own, defined in the server's configuration (the top-level
// nats.conf, or the embedded server's, server.go), whose permissions are
// what that service uses and nothing more (Service).
package natsauth

import (
	"slices"
	"strings"

	"github.com/scanwire/scanwire/internal/natsx"
)

// Accounts of the server configuration.
const (
	// Account holds scanwire's streams and buckets, its services and the
	// scanners.
	Account = "SCANWIRE"
	// AuthAccount holds only the auth callout's own user.
	AuthAccount = "AUTH"
	// SystemAccount is the server's system account; nobody logs into it.
	SystemAccount = "SYS"
)

// Users. A tenant id cannot contain a dot, so no tenant can take the name
// of a service user.
const (
	UserFanout   = "scanwire.fanout"
	UserDelivery = "scanwire.delivery"
	UserGateway  = "scanwire.gateway"
	// UserPipeline is the user of a process that runs more than one
	// service (as `scanwire run` does by default): the three services'
	// permissions together.
	UserPipeline = "scanwire.pipeline"
	// UserAuth answers the auth callout, from the AUTH account.
	UserAuth = "scanwire.auth"
	// UserOperator is the user name of the admin key.
	UserOperator = "admin"
)

// ServiceUsers are the users a server configuration defines (besides
// UserAuth), in the order they are listed.
var ServiceUsers = []string{UserFanout, UserDelivery, UserGateway, UserPipeline}

// Permissions are what a user may do: subjects it may publish and
// subscribe to, and whether it may answer requests sent to it (a reply to
// any inbox, once per request).
type Permissions struct {
	Publish   []string
	Subscribe []string
	Responses bool
}

// InboxPrefix is the prefix of a user's reply subjects (nats.go
// nats.CustomInboxPrefix): each user reads the replies to its own
// requests and no one else's. A tenant's is "_INBOX_<tenant>", outside the
// services' "_INBOX.<user>".
func InboxPrefix(user string) string {
	if strings.HasPrefix(user, "scanwire.") {
		return "_INBOX." + user
	}
	return "_INBOX_" + user
}

// Tenant is what a scanner of tenant may do: publish its tenant's events,
// and receive the acknowledgements of its publishes.
func Tenant(tenant string) Permissions {
	return Permissions{
		Publish:   []string{"scans." + tenant + ".>"},
		Subscribe: []string{InboxPrefix(tenant) + ".>"},
	}
}

// Operator is what the admin key may do: everything in the scanwire
// account (the CLI reads and writes every stream and bucket).
func Operator() Permissions {
	return Permissions{Publish: []string{">"}, Subscribe: []string{">"}, Responses: true}
}

// Service returns the permissions of a service user, and false for a name
// that is not one.
func Service(user string) (Permissions, bool) {
	var g grants
	switch user {
	case UserFanout:
		g.fanout()
	case UserDelivery:
		g.delivery()
	case UserGateway:
		g.gateway()
	case UserPipeline:
		g.fanout()
		g.delivery()
		g.gateway()
	default:
		return Permissions{}, false
	}
	g.common(user)
	return g.permissions(), true
}

// ForServices is the user a process running services connects as: the
// service's own user for one, UserPipeline for more.
func ForServices(services []string) string {
	if len(services) == 1 {
		switch services[0] {
		case "fanout":
			return UserFanout
		case "delivery":
			return UserDelivery
		case "gateway":
			return UserGateway
		}
	}
	return UserPipeline
}

// CanSetUp reports whether user may create and update the streams and
// buckets (natsx.Topology.Ensure): the gateway's users. Fan-out and
// delivery find them made (natsx.Topology.Check).
func CanSetUp(user string) bool { return user == UserGateway || user == UserPipeline }

// grants collects a service's subjects, in JetStream's terms.
type grants struct{ pub, sub []string }

func (g *grants) publish(subjects ...string) { g.pub = append(g.pub, subjects...) }

// common is what every service does: learn about JetStream and the
// streams, report the backlog of the pipeline's consumers and lanes in
// its metrics (their info, not their messages), answer who asks what the
// pipeline is (subscriptions.Announce, a micro service) and read its own
// replies.
func (g *grants) common(user string) {
	g.publish("$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "scanwire.pipeline.info",
		"$JS.API.CONSUMER.INFO."+natsx.StreamScanEvents+".*", "$JS.API.CONSUMER.INFO."+natsx.StreamDeliveries+".*")
	g.kvRead(natsx.BucketLanes)
	g.sub = append(g.sub, InboxPrefix(user)+".>", "$SRV.>", "scanwire.pipeline.>")
}

// read lets the user read a stream: get messages by sequence or subject,
// and read it through ordered (ephemeral) consumers, as natsx.ReadAll and
// a KV watch do.
func (g *grants) read(stream string) {
	g.publish(
		"$JS.API.STREAM.MSG.GET."+stream,
		"$JS.API.DIRECT.GET."+stream,
		"$JS.API.DIRECT.GET."+stream+".>",
		"$JS.API.CONSUMER.CREATE."+stream+".>",
		"$JS.API.CONSUMER.DELETE."+stream+".>",
		"$JS.API.CONSUMER.INFO."+stream+".>",
		"$JS.API.CONSUMER.MSG.NEXT."+stream+".>",
		"$JS.FC."+stream+".>",
	)
}

// get lets the user get messages of a stream by sequence or subject, and
// nothing else of it: no consumer, so no way to take its jobs.
func (g *grants) get(stream string) {
	g.publish("$JS.API.STREAM.MSG.GET."+stream, "$JS.API.DIRECT.GET."+stream, "$JS.API.DIRECT.GET."+stream+".>")
}

// consume lets the user read a stream through durable consumers and
// acknowledge what it read.
func (g *grants) consume(stream string) {
	g.read(stream)
	g.publish("$JS.ACK."+stream+".>", "$JS.API.CONSUMER.DURABLE.CREATE."+stream+".>")
}

func kvStream(bucket string) string { return "KV_" + bucket }

// kvRead lets the user get and watch a bucket's keys.
func (g *grants) kvRead(buckets ...string) {
	for _, b := range buckets {
		g.read(kvStream(b))
	}
}

// kvWrite lets the user put and delete a bucket's keys (and read them).
func (g *grants) kvWrite(buckets ...string) {
	for _, b := range buckets {
		g.read(kvStream(b))
		g.publish("$KV." + b + ".>")
	}
}

// fanout consumes events, reads the subscriptions and tenants, keeps the
// limits and callbacks, reads each scope's jobs and publishes jobs and
// rejections. It cannot write a subscription or a tenant.
func (g *grants) fanout() {
	g.consume(natsx.StreamScanEvents)
	g.get(natsx.StreamDeliveries)
	g.publish("deliveries.>", "rejected.>")
	g.kvRead(natsx.BucketSubscriptions, natsx.BucketTenants)
	g.kvWrite(natsx.BucketLimits, natsx.BucketCallbacks)
}

// delivery consumes jobs (its consumer and the lanes'), publishes their
// copies, retries, dead letters and attempts, disables a failing
// subscription, creates a tenant's callback secret and keeps the lanes.
func (g *grants) delivery() {
	g.consume(natsx.StreamDeliveries)
	g.publish("deliveries.>", "retries.>", "dlq.>", "attempts.>")
	g.kvRead(natsx.BucketSubscriptions)
	g.kvWrite(natsx.BucketSubscriptions, natsx.BucketTenants, natsx.BucketLanes)
}

// gateway serves the API: it publishes events, reads and writes
// subscriptions and tenants, reads the dead letters, rejections and
// attempts, replays and deletes dead letters, and reads each scope's jobs
// and limits. It creates the streams and buckets at start. It takes no
// job: it has no consumer on DELIVERIES and cannot acknowledge one.
func (g *grants) gateway() {
	g.publish("scans.>", "deliveries.>")
	g.get(natsx.StreamDeliveries)
	g.read(natsx.StreamDLQ)
	g.read(natsx.StreamRejected)
	g.read(natsx.StreamAttempts)
	g.publish("$JS.API.STREAM.MSG.DELETE." + natsx.StreamDLQ)
	g.kvWrite(natsx.BucketSubscriptions, natsx.BucketTenants)
	g.kvRead(natsx.BucketLimits, natsx.BucketLanes)
	// Setting up the topology: creating and updating the streams and
	// buckets, and moving DELIVERIES out of a work queue of an earlier
	// release to a holding stream and back (natsx/migrate.go): its jobs
	// and retries are published again and deleted where they were.
	const holding = natsx.StreamDeliveries + "_MIGRATION"
	g.publish("$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.UPDATE.*",
		"$JS.API.STREAM.DELETE."+natsx.StreamDeliveries, "$JS.API.STREAM.DELETE."+holding,
		"$JS.API.STREAM.MSG.DELETE."+natsx.StreamDeliveries, "$JS.API.STREAM.MSG.DELETE."+holding,
		"scanwire.migration.deliveries", "retries.>")
	g.get(holding)
}

func (g *grants) permissions() Permissions {
	return Permissions{Publish: dedupe(g.pub), Subscribe: dedupe(g.sub), Responses: true}
}

func dedupe(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
