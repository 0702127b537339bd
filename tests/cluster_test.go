package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// cluster is three `scanwire run` processes whose embedded servers form
// one JetStream cluster on loopback (--server-name, --cluster-listen,
// --routes), running no service: the services join it from other
// processes, as with an external NATS.
type cluster struct {
	t        testing.TB
	opts     []pipelineOpt // of every node
	replicas int           // of the nodes' streams
	sync     time.Duration // the nodes' fsync interval; 0: every write
	names    []string
	client   []string // client host:port of each node
	routes   []string // cluster host:port of each node
	dirs     []string
	nodes    []*pipeline
	mu       sync.Mutex
}

// freeAddrs returns n ports of 127.0.0.1 nothing listens on (a moment
// ago).
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// startCluster starts three nodes at once (each waits for the others
// before its streams can have three replicas), whose streams have
// replicas. The tests' nodes fsync every minute, which faults of a
// process, not of a machine, do not need; startClusterSync sets it.
func startCluster(t testing.TB, replicas int) *cluster {
	return startClusterSync(t, replicas, time.Minute)
}

func startClusterSync(t testing.TB, replicas int, every time.Duration, opts ...pipelineOpt) *cluster {
	t.Helper()
	addrs := freeAddrs(t, 6)
	c := &cluster{t: t, replicas: replicas, sync: every, opts: opts, names: []string{"n1", "n2", "n3"}, client: addrs[:3], routes: addrs[3:], nodes: make([]*pipeline, 3)}
	for range 3 {
		c.dirs = append(c.dirs, t.TempDir())
	}
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { c.start(i) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return c
}

// start starts node i (again) on its data directory and ports.
func (c *cluster) start(i int) {
	var routes []string
	for j, r := range c.routes {
		if j != i {
			routes = append(routes, r)
		}
	}
	cfg := baseConfig(c.t)
	cfg.Services = nil
	cfg.Topology.Replicas = c.replicas
	cfg.Server = natsx.ServerConfig{DataDir: c.dirs[i], Listen: c.client[i], Name: c.names[i], ClusterListen: c.routes[i], Routes: routes,
		SyncInterval: c.sync}
	for _, o := range c.opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a, err := app.Start(ctx, cfg)
	if err != nil {
		c.t.Errorf("start node %s: %v", c.names[i], err)
		return
	}
	p := &pipeline{App: a, dataDir: c.dirs[i]}
	c.mu.Lock()
	c.nodes[i] = p
	c.mu.Unlock()
	c.t.Cleanup(func() { p.stop(c.t) })
}

// stop stops node name.
func (c *cluster) stop(name string) {
	for i, n := range c.names {
		if n == name {
			c.nodes[i].stop(c.t)
			return
		}
	}
	c.t.Fatalf("no node %s", name)
}

// restart starts node name again.
func (c *cluster) restart(name string) {
	for i, n := range c.names {
		if n == name {
			c.start(i)
			return
		}
	}
}

// url is every node's client URL, as --nats takes them.
func (c *cluster) url() string {
	var urls []string
	for _, a := range c.client {
		urls = append(urls, "nats://"+a)
	}
	return strings.Join(urls, ",")
}

// join starts a process of services joined to the cluster, as `scanwire
// run --nats <the nodes> --replicas <replicas>` does (0: not given).
func (c *cluster) join(replicas int, services ...string) *pipeline {
	c.t.Helper()
	cfg := baseConfig(c.t)
	cfg.NATSURL, cfg.Services, cfg.HTTPAddr = c.url(), services, "127.0.0.1:0"
	cfg.Topology.Replicas = replicas
	return start(c.t, cfg, "", nil)
}

// leader is the name of the server leading stream.
func leader(t *testing.T, js jetstream.JetStream, stream string) string {
	t.Helper()
	var name string
	eventually(t, 30*time.Second, func() bool {
		s, err := js.Stream(context.Background(), stream)
		if err != nil {
			return false
		}
		info, err := s.Info(context.Background())
		if err != nil || info.Cluster == nil {
			return false
		}
		name = info.Cluster.Leader
		return name != ""
	})
	return name
}

// caughtUp waits until every replica of stream is current.
func caughtUp(t *testing.T, js jetstream.JetStream, stream string) {
	t.Helper()
	eventually(t, 60*time.Second, func() bool {
		s, err := js.Stream(context.Background(), stream)
		if err != nil {
			return false
		}
		info, err := s.Info(context.Background())
		if err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Lag != 0 || r.Offline {
				return false
			}
		}
		return true
	})
}

// flow publishes findings of scans, a few a second, as a scanner fleet
// would: each one until the cluster acknowledges it (a failed publish is
// sent again with the same dedupe id), through a connection of its own
// that fails over between the nodes.
type flow struct {
	published atomic.Int64
	done      chan struct{}
}

func startFlow(t *testing.T, url string, scans, perScan int, every time.Duration) *flow {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	f := &flow{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer nc.Close()
		for i := range perScan {
			for s := range scans {
				scan := fmt.Sprintf("scan-%d", s)
				data := map[string]any{"scan_id": scan, "target": "app.example.com", "finding_id": fmt.Sprintf("f-%d", i),
					"type": fmt.Sprintf("type-%d", i%3), "title": "finding", "cvss_score": 7.5}
				m := eventMsg(t, "acme", events.TypeFindingHigh, scan, data)
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err := js.PublishMsg(ctx, m)
					cancel()
					if err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				f.published.Add(1)
				time.Sleep(every)
			}
		}
	}()
	return f
}

// Issue 14: a three-node cluster of embedded servers, streams with three
// replicas, and the services in a process of their own. A steady flow of
// findings under limits goes on while the leader of SCAN_EVENTS stops, and
// then the node the services are connected to; both start again. Every
// admitted finding is delivered (repeats only with the same webhook-id),
// the limits are exact, the stopped nodes catch up, and a subscription
// made after the faults is served (the KV watch resumed).
func TestClusterSurvivesLeaderAndNodeLoss(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := startCluster(t, 3)
	t.Logf("%s: cluster formed", time.Since(start))
	svc := c.join(3, app.ServiceFanout, app.ServiceDelivery, app.ServiceGateway)
	rec := newReceiver(t, nil)
	svc.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rec.URL, Events: []string{"finding.*"},
		Limits: subscriptions.Limits{FindingsPerScan: 12, FindingsPerType: 100}})

	const scans, perScan = 4, 20
	f := startFlow(t, c.url(), scans, perScan, 100*time.Millisecond)
	eventually(t, 30*time.Second, func() bool { return f.published.Load() >= 10 })

	first := leader(t, svc.JS, natsx.StreamScanEvents)
	c.stop(first)
	t.Logf("%s: stopped %s, the leader of %s", time.Since(start), first, natsx.StreamScanEvents)
	eventually(t, 30*time.Second, func() bool { return f.published.Load() >= 30 })
	second := svc.NC.ConnectedServerName()
	if second == first || second == "" {
		t.Fatalf("the services are connected to %q after %s stopped", second, first)
	}
	c.stop(second)
	t.Logf("%s: stopped %s, the services' node", time.Since(start), second)
	// No quorum: publishes wait, nothing is taken, and /readyz says why.
	var why string
	eventually(t, 30*time.Second, func() bool {
		code, body := readyz(t, svc)
		why = body
		return code == 503 && strings.Contains(body, "quorum")
	})
	t.Logf("/readyz: %s", why)
	var wg sync.WaitGroup
	for _, n := range []string{first, second} {
		wg.Go(func() { c.restart(n) })
	}
	wg.Wait()
	t.Logf("%s: both restarted", time.Since(start))
	<-f.done
	t.Logf("%s: every finding published", time.Since(start))
	eventually(t, 60*time.Second, func() bool { code, _ := readyz(t, svc); return code == 200 })

	// 4 scans of 20 findings each: 12 admitted per scan, each delivered,
	// repeated only with the same webhook-id, and none of the other 8.
	eventually(t, 60*time.Second, func() bool { return len(distinctWebhooks(rec)) >= scans*12 })
	time.Sleep(500 * time.Millisecond) // anything over the limits would arrive now
	perScanGot := map[string]map[string]bool{}
	for _, r := range rec.requests() {
		for s := range scans {
			scan := fmt.Sprintf("scan-%d", s)
			if strings.Contains(string(r.Body), `"scan_id":"`+scan+`"`) {
				if perScanGot[scan] == nil {
					perScanGot[scan] = map[string]bool{}
				}
				perScanGot[scan][r.Header.Get("webhook-id")] = true
			}
		}
	}
	for s := range scans {
		if n := len(perScanGot[fmt.Sprintf("scan-%d", s)]); n != 12 {
			t.Errorf("scan-%d: %d findings delivered, want 12 (its limit)", s, n)
		}
	}
	t.Logf("%s: every admitted finding delivered", time.Since(start))
	for _, stream := range []string{natsx.StreamScanEvents, natsx.StreamDeliveries, "KV_" + natsx.BucketSubscriptions} {
		caughtUp(t, svc.JS, stream)
	}
	t.Logf("%s: the stopped nodes caught up", time.Since(start))

	// The KV watch resumed: a subscription made now is served.
	rec2 := newReceiver(t, nil)
	svc.subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rec2.URL, Events: []string{"scan.started"}})
	svc.publish(t, "acme", events.TypeScanStarted, "after", map[string]any{"scan_id": "after", "target": "t"})
	eventually(t, 30*time.Second, func() bool { return rec2.count() == 1 })
}

// readyz is the answer of p's /readyz.
func readyz(t *testing.T, p *pipeline) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTPAddr() + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// distinctWebhooks is the set of webhook-ids r received.
func distinctWebhooks(r *receiver) map[string]int {
	out := map[string]int{}
	for _, req := range r.requests() {
		out[req.Header.Get("webhook-id")]++
	}
	return out
}

// Issue 14: two fan-out and two delivery replicas, each a process of its
// own, against a three-node cluster share the work: each event is fanned
// out once (one job per event), each job delivered by one of them once,
// and both replicas of each service take a part. The cluster's streams
// were made with one replica: the first process given --replicas 3 makes
// them three, and those not given it leave them so.
func TestClusterReplicasShareTheWork(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 1)
	fanouts := []*pipeline{c.join(3, app.ServiceFanout), c.join(0, app.ServiceFanout)}
	deliveries := []*pipeline{c.join(0, app.ServiceDelivery), c.join(0, app.ServiceDelivery)}
	for _, stream := range []string{natsx.StreamScanEvents, natsx.StreamDeliveries, "KV_" + natsx.BucketSubscriptions} {
		s, err := fanouts[0].JS.Stream(context.Background(), stream)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s has %d replicas after processes with --replicas 3 and without started, want 3", stream, r)
		}
	}
	rec := newReceiver(t, nil)
	fanouts[0].subscribe(t, subscriptions.Subscription{Tenant: "acme", URL: rec.URL, Events: []string{"finding.*"}})
	for _, p := range append(fanouts[1:], deliveries...) {
		eventually(t, 10*time.Second, func() bool { return p.Subs.Len() == 1 })
	}

	const n = 300
	var msgs []*nats.Msg
	for i := range n {
		scan := fmt.Sprintf("scan-%d", i%30)
		msgs = append(msgs, eventMsg(t, "acme", events.TypeFindingHigh, scan, map[string]any{"scan_id": scan, "target": "t",
			"finding_id": fmt.Sprint("f-", i), "type": fmt.Sprint("type-", i), "title": "finding", "cvss_score": 7.5}))
	}
	publishBurst(t, fanouts[0].JS, msgs)
	eventually(t, 60*time.Second, func() bool { return rec.count() >= n })
	time.Sleep(500 * time.Millisecond) // a second delivery of any, were there one, arrives now
	if got := distinctWebhooks(rec); len(got) != n || rec.count() != n {
		t.Errorf("%d requests for %d webhooks, want %d of each", rec.count(), len(got), n)
	}
	if jobs := streamState(t, fanouts[0], natsx.StreamDeliveries).Msgs; jobs != n {
		t.Errorf("%d jobs stored for %d events, want one each", jobs, n)
	}
	for i, p := range fanouts {
		if v := metricSum(p, "scanwire_events_accepted_total"); v == 0 {
			t.Errorf("fan-out replica %d fanned out nothing", i)
		}
	}
	delivered := 0.0
	for i, p := range deliveries {
		v := metricSum(p, `scanwire_deliveries_total{outcome="delivered"`)
		if v == 0 {
			t.Errorf("delivery replica %d delivered nothing", i)
		}
		delivered += v
	}
	if delivered != n {
		t.Errorf("the delivery replicas delivered %v in all, want %d", delivered, n)
	}
	// A process without the gateway serves its probes and nothing else.
	for _, p := range []*pipeline{fanouts[1], deliveries[0]} {
		if code, body := readyz(t, p); code != 200 {
			t.Errorf("/readyz of a %v replica: %d %s", p.services, code, body)
		}
		resp, err := http.Get("http://" + p.HTTPAddr() + "/v1/subscriptions")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("/v1 on a %v replica: %d, want 404", p.services, resp.StatusCode)
		}
	}
}

// Issue 14.1: replicas a server cannot have are an error at start naming
// both numbers, at once on a server that is not part of a cluster.
func TestClusterReplicasNeedTheServers(t *testing.T) {
	t.Parallel()
	cfg := baseConfig(t)
	cfg.Server = natsx.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	cfg.Topology.Replicas = 3
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := app.Start(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "--replicas 3") || !strings.Contains(err.Error(), "1 server(s)") {
		t.Fatalf("three replicas on one server: %v", err)
	}
}

// Issue 13 on a cluster: the embedded servers of a cluster with keys close
// NATS with the credentials they share, every node answers a scanner, and
// their routes take only each other: a server without the route password
// does not join.
func TestClusterWithKeysClosesItsRoutes(t *testing.T) {
	t.Parallel()
	creds := natsauth.Credentials{}.Complete()
	c := startClusterSync(t, 1, time.Minute, withNATSKeys(), func(cfg *app.Config) { cfg.NATSAuth = creds })
	for i, addr := range c.client {
		nc, err := nats.Connect("nats://"+addr, nats.UserInfo("acme", acmeKey), nats.MaxReconnects(0))
		if err != nil {
			t.Errorf("acme on node %s: %v", c.names[i], err)
			continue
		}
		nc.Close()
	}
	rogue, err := server.NewServer(&server.Options{ServerName: "rogue", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true,
		Cluster: server.ClusterOpts{Name: natsx.ClusterName, Host: "127.0.0.1", Port: server.RANDOM_PORT},
		Routes:  server.RoutesFromStr("nats://" + c.routes[0])})
	if err != nil {
		t.Fatal(err)
	}
	rogue.Start()
	defer rogue.Shutdown()
	time.Sleep(2 * time.Second) // long enough to route, were it let in
	if n := rogue.NumRoutes(); n != 0 {
		t.Errorf("a server without the route password has %d routes into the cluster", n)
	}
	if n := c.nodes[0].Server.NumRoutes(); n > 2*4 { // two peers, a few pooled routes each
		t.Errorf("node %s has %d routes", c.names[0], n)
	}
}
