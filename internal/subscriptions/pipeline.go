package subscriptions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// The egress policy is the running pipeline's, not each command's: whether
// subscriptions may reach private targets is decided by `scanwire run
// --allow-private-targets`, and a subscription the pipeline would not
// serve must not be written (or listed as valid) by a client that guessed
// otherwise. So every pipeline process answers, on PipelineSubject, what
// policy it applies, and clients that write subscriptions ask before they
// write (AskPipeline).

// PipelineSubject is where every running scanwire process answers with
// its Announcement. It is the one endpoint of the NATS micro service
// PipelineService, so `nats micro info scanwire` lists the processes and
// their policy too.
const PipelineSubject = "scanwire.pipeline.info"

// PipelineService is the name of the NATS micro service each process runs.
const PipelineService = "scanwire"

// Announcement is what one running process says of itself.
type Announcement struct {
	// AllowPrivateTargets is the process's egress policy: `scanwire run
	// --allow-private-targets`.
	AllowPrivateTargets bool `json:"allow_private_targets"`
	// Services are the services the process runs (fanout, delivery,
	// gateway).
	Services []string `json:"services"`
}

// Announce serves a on PipelineSubject until the returned service is
// stopped. Every process answers (no queue group), so that a client can
// tell when processes disagree.
func Announce(nc *nats.Conn, a Announcement, version string) (micro.Service, error) {
	body, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        PipelineService,
		Version:     version,
		Description: "a running scanwire process: its egress policy and services",
		Metadata: map[string]string{
			"allow_private_targets": strconv.FormatBool(a.AllowPrivateTargets),
			"services":              strings.Join(a.Services, ","),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("announce the pipeline: %w", err)
	}
	err = svc.AddEndpoint("info", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(body) }),
		micro.WithEndpointSubject(PipelineSubject), micro.WithEndpointQueueGroupDisabled())
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("announce the pipeline: %w", err)
	}
	return svc, nil
}

// Errors of AskPipeline.
var (
	// ErrNoPipeline: no scanwire process answered; nothing says what
	// policy URLs will be held to.
	ErrNoPipeline = errors.New("no running scanwire pipeline answered")
	// ErrPipelineDisagrees: the running processes apply different egress
	// policies, so a URL one accepts another refuses.
	ErrPipelineDisagrees = errors.New("the running scanwire processes disagree on --allow-private-targets")
)

// Pipeline is what the running processes said, together.
type Pipeline struct {
	// AllowPrivateTargets is the policy they all apply.
	AllowPrivateTargets bool
	// Services is every service some process runs, sorted.
	Services []string
	// Processes is how many answered.
	Processes int
}

// Runs reports whether some process runs service.
func (p *Pipeline) Runs(service string) bool { return slices.Contains(p.Services, service) }

// pipelineLinger is how long AskPipeline waits for more answers after the
// first: processes on one NATS answer within milliseconds of each other.
const pipelineLinger = 100 * time.Millisecond

// AskPipeline asks every running scanwire process on nc what it applies,
// waiting up to wait for the first answer. It returns ErrNoPipeline when
// none answers and an error wrapping ErrPipelineDisagrees, with the
// numbers, when their policies differ.
func AskPipeline(ctx context.Context, nc *nats.Conn, wait time.Duration) (*Pipeline, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("ask the pipeline: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(PipelineSubject, inbox, nil); err != nil {
		return nil, fmt.Errorf("ask the pipeline: %w", err)
	}
	var answers []Announcement
	deadline := time.Now().Add(wait)
	for {
		mctx, cancel := context.WithDeadline(ctx, deadline)
		m, err := sub.NextMsgWithContext(mctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			break // the wait (or the linger) is over
		}
		if m.Header.Get("Status") == "503" { // no responders
			break
		}
		var a Announcement
		if err := json.Unmarshal(m.Data, &a); err != nil {
			continue // not one of ours
		}
		if len(answers) == 0 {
			deadline = time.Now().Add(pipelineLinger)
		}
		answers = append(answers, a)
	}
	if len(answers) == 0 {
		return nil, ErrNoPipeline
	}
	p := &Pipeline{AllowPrivateTargets: answers[0].AllowPrivateTargets, Processes: len(answers)}
	allowing := 0
	for _, a := range answers {
		if a.AllowPrivateTargets {
			allowing++
		}
		for _, s := range a.Services {
			if !slices.Contains(p.Services, s) {
				p.Services = append(p.Services, s)
			}
		}
	}
	slices.Sort(p.Services)
	if allowing != 0 && allowing != len(answers) {
		return nil, fmt.Errorf("%w: %d of %d run with it; restart them with the same flag, since a subscription one accepts another refuses",
			ErrPipelineDisagrees, allowing, len(answers))
	}
	return p, nil
}
