package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/secrets"
	"github.com/scanwire/scanwire/services/gateway"
)

// The deployment files and the README's commands run as written (issue
// 11.9): every scanwire command, flag and environment variable they use
// exists, the pieces they wire together agree, and nats.conf is what the
// server's own parser reads.

const (
	repoRoot  = "../.."
	deployDir = repoRoot + "/deploy"
)

// TestDeployComposeAsWritten reads deploy/compose.yaml and checks each
// service built from deploy/Dockerfile: its command parses as a scanwire
// command line; every variable it is given (environment and env_file) is
// read by scanwire or a library it links; --nats names the compose NATS on
// nats.conf's port; a process that runs the gateway has API keys (without
// them every /v1 call is refused); the trace exporter's protocol matches
// the OTLP port it is pointed at, on a compose service. Every port is
// published on 127.0.0.1 only: NATS has no authentication there.
func TestDeployComposeAsWritten(t *testing.T) {
	t.Parallel()
	doc := readYAML(t, deployDir+"/compose.yaml")
	services := yamlMap(t, doc, "services")
	natsPort := natsConf(t).Port
	read := envRead(t)
	built := 0
	natsNodes, replicated := 0, false // the NATS servers; whether a process asks for their replicas
	for _, name := range sortedKeys(services) {
		if img, _ := yamlMap(t, services, name)["image"].(string); strings.HasPrefix(img, "nats:") {
			natsNodes++
		}
	}
	for _, name := range sortedKeys(services) {
		svc := yamlMap(t, services, name)
		for _, p := range yamlStrings(t, svc, "ports") {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %q is published on every interface; publish it on 127.0.0.1", name, p)
			}
		}
		if _, ok := svc["build"]; !ok {
			continue
		}
		built++
		build := yamlMap(t, svc, "build")
		if build["context"] != ".." || build["dockerfile"] != "deploy/Dockerfile" {
			t.Errorf("%s: builds %v, want the scanwire image (context .., deploy/Dockerfile)", name, build)
		}
		args := yamlStrings(t, svc, "command")
		cmd, err := parseCommandLine(args)
		if err != nil {
			t.Errorf("%s: command %q: %v", name, args, err)
			continue
		}
		env := composeEnv(t, svc)
		for _, v := range sortedKeys(env) {
			if !read(v) {
				t.Errorf("%s: environment variable %s is read by nothing scanwire links", name, v)
			}
		}
		if cmd.Name() != "run" {
			continue
		}
		urls := strings.Split(cmd.Flag("nats").Value.String(), ",")
		for _, raw := range urls {
			u, err := url.Parse(raw)
			if err != nil || u.Scheme != "tls" || services[u.Hostname()] == nil || u.Port() != strconv.Itoa(natsPort) {
				t.Errorf("%s: --nats %q, want tls://<a compose service>:%d for each server (nats.conf's port; it takes TLS only)", name, raw, natsPort)
			}
		}
		if len(urls) != natsNodes {
			t.Errorf("%s: --nats names %d servers of the %d", name, len(urls), natsNodes)
		}
		if r := cmd.Flag("replicas").Value.String(); r != "0" && r != strconv.Itoa(natsNodes) {
			t.Errorf("%s: --replicas %s on a cluster of %d servers", name, r, natsNodes)
		}
		if cmd.Flag("nats-ca").Value.String() == "" {
			t.Errorf("%s: no --nats-ca to verify NATS's certificate with", name)
		}
		replicated = replicated || cmd.Flag("replicas").Value.String() == strconv.Itoa(natsNodes)
		runs := strings.Split(cmd.Flag("services").Value.String(), ",")
		// Its own NATS user's password; the callout's, with its issuer,
		// where it has API keys; the key that opens the signing secrets.
		need := []string{natsauth.EnvPassword(natsauth.ForServices(runs)), secrets.EnvKey}
		if slices.Contains(runs, app.ServiceGateway) {
			need = append(need, natsauth.EnvPassword(natsauth.UserAuth), natsauth.EnvIssuer)
		}
		for _, v := range need {
			if _, ok := env[v]; !ok {
				t.Errorf("%s: no %s in its environment", name, v)
			}
		}
		if err := (&app.Config{NATSURL: "nats://x", Services: runs}).Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if slices.Contains(runs, app.ServiceGateway) {
			keys, err := gateway.ParseKeys(env["SCANWIRE_ADMIN_KEY"], env["SCANWIRE_API_KEYS"])
			if err != nil || keys.Empty() {
				t.Errorf("%s runs the gateway with no usable API key (%v): every /v1 call would be refused", name, err)
			}
		}
		if endpoint := env["OTEL_EXPORTER_OTLP_ENDPOINT"]; endpoint != "" {
			proto := env["OTEL_EXPORTER_OTLP_PROTOCOL"]
			want := map[string]string{"": "4317", "grpc": "4317", "http/protobuf": "4318"}[proto]
			e, err := url.Parse(endpoint)
			if err != nil || services[e.Hostname()] == nil || e.Port() != want {
				t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT %q with protocol %q: want a compose service on port %s (OTLP %s)",
					name, endpoint, proto, want, orDefault(proto, "grpc"))
			}
		}
	}
	if built == 0 {
		t.Error("no service of compose.yaml is built from deploy/Dockerfile")
	}
	if natsNodes < 3 || !replicated {
		t.Errorf("compose.yaml: %d NATS servers, replicas asked for by a process %v; want a cluster of three and --replicas 3", natsNodes, replicated)
	}
}

// TestDeployDockerfileCommand checks the image: its entrypoint is the
// binary it builds, its default command parses, and the store of that
// command is a volume the image's user owns.
func TestDeployDockerfileCommand(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(deployDir + "/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var final []string // the instructions of the last stage
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "FROM ") {
			final = nil
		}
		final = append(final, l)
	}
	instruction := func(instr string) []string {
		var v []string
		for _, l := range final {
			if rest, ok := strings.CutPrefix(l, instr+" "); ok {
				v = nil
				if err := json.Unmarshal([]byte(rest), &v); err != nil {
					t.Errorf("%s %s: not the exec (JSON) form: %v", instr, rest, err)
				}
			}
		}
		return v
	}
	entry, cmdLine := instruction("ENTRYPOINT"), instruction("CMD")
	if len(entry) != 1 || !slices.Contains(final, "COPY --from=build /out/scanwire "+entry[0]) {
		t.Errorf("ENTRYPOINT %q is not the scanwire binary the build stage copies in", entry)
	}
	cmd, err := parseCommandLine(cmdLine)
	if err != nil {
		t.Fatalf("CMD %q: %v", cmdLine, err)
	}
	if data := cmd.Flag("data"); data != nil && cmd.Name() == "run" {
		dir := data.Value.String()
		if !slices.Contains(final, fmt.Sprintf("VOLUME %s", dir)) || !slices.ContainsFunc(final, func(l string) bool {
			return strings.HasPrefix(l, "COPY --from=build --chown=65532:65532 ") && strings.HasSuffix(l, " "+dir)
		}) {
			t.Errorf("CMD keeps its store in %s, which must be a VOLUME that the nonroot user (65532) owns", dir)
		}
	}
}

// TestNATSConfIsTheEmbeddedServers loads nats.conf with the server's own
// parser, starts a server from it (its store moved to a temporary
// directory), and checks that it agrees with the embedded server of
// `scanwire run`: JetStream, fsync on every write, the same payload limit,
// the port run listens on by default, and a store under the volume
// compose.yaml mounts.
func TestNATSConfIsTheEmbeddedServers(t *testing.T) {
	t.Parallel()
	opts := natsConf(t)
	if !opts.JetStream || !opts.SyncAlways {
		t.Errorf("nats.conf: jetstream %v, sync_interval always %v; want both", opts.JetStream, opts.SyncAlways)
	}
	if !strings.HasPrefix(opts.StoreDir, "/data/") {
		t.Errorf("nats.conf: store_dir %q is not under /data, the volume compose.yaml mounts", opts.StoreDir)
	}
	root := newRootCmd()
	run, _, _ := root.Find([]string{"run"})
	if _, port, _ := net.SplitHostPort(run.Flag("nats-listen").DefValue); port != strconv.Itoa(opts.Port) {
		t.Errorf("nats.conf: port %d, but 'scanwire run' listens on %s by default", opts.Port, port)
	}
	opts.StoreDir, opts.Host, opts.Port, opts.HTTPPort, opts.NoSigs = t.TempDir(), "127.0.0.1", server.RANDOM_PORT, 0, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("a server from nats.conf did not start")
	}
	embedded := natsxtest.Server(t)
	for _, s := range []*server.Server{ns, embedded} {
		if s.JetStreamConfig() == nil {
			t.Fatal("JetStream is off")
		}
	}
	if got, want := ns.JetStreamConfig().SyncAlways, embedded.JetStreamConfig().SyncAlways; got != want {
		t.Errorf("fsync on every write: nats.conf %v, embedded %v", got, want)
	}
	v1, _ := ns.Varz(nil)
	v2, _ := embedded.Varz(nil)
	if v1.MaxPayload != v2.MaxPayload {
		t.Errorf("max_payload: nats.conf %d, embedded %d", v1.MaxPayload, v2.MaxPayload)
	}
}

// TestREADMECommandsParse parses every scanwire command line in the
// README's sh blocks (./scanwire ..., go run ./services/scanwire ...) as
// scanwire would, with the placeholder sub_01KAP... taken as an id of its
// form, and checks that the SCANWIRE_ and OTEL_ variables they set are
// read.
func TestREADMECommandsParse(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(repoRoot + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	read := envRead(t)
	var lines []string // the sh blocks' command lines, continuations joined
	inBlock, cont := false, ""
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "```"):
			inBlock = l == "```sh"
		case inBlock:
			if s, ok := strings.CutSuffix(l, "\\"); ok {
				cont += s
				continue
			}
			lines, cont = append(lines, cont+l), ""
		}
	}
	found := 0
	for _, l := range lines {
		if !strings.Contains(l, "./scanwire") && !strings.Contains(l, "./services/scanwire") && !strings.Contains(l, "export ") {
			continue // curl and the like
		}
		// A placeholder stands for a value of its form.
		l = strings.ReplaceAll(l, "sub_01KAP...", "sub_01KAP"+strings.Repeat("0", 21))
		words, err := shellWords(l)
		if err != nil {
			t.Errorf("README: %q: %v", l, err)
			continue
		}
		if len(words) > 0 && words[0] == "export" {
			words = words[1:]
		}
		for len(words) > 0 && envAssign.MatchString(words[0]) {
			name, _, _ := strings.Cut(words[0], "=")
			if (strings.HasPrefix(name, "SCANWIRE_") || strings.HasPrefix(name, "OTEL_")) && !read(name) {
				t.Errorf("README: %q sets %s, which nothing scanwire links reads", l, name)
			}
			words = words[1:]
		}
		var args []string
		switch {
		case len(words) > 0 && words[0] == "./scanwire":
			args = words[1:]
		case len(words) > 2 && words[0] == "go" && words[1] == "run" && words[2] == "./services/scanwire":
			args = words[3:]
		default:
			continue
		}
		found++
		if _, err := parseCommandLine(args); err != nil {
			t.Errorf("README: %q: %v", l, err)
		}
	}
	if found < 10 {
		t.Errorf("found %d scanwire command lines in the README's sh blocks; the parser of this test missed some", found)
	}
}

// envAssign is a shell variable assignment, NAME=value.
var envAssign = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// parseCommandLine parses args as scanwire's command line, without running
// it: the command exists, every flag exists and takes its value, the
// required flags are there, and the positional arguments are what the
// command accepts.
func parseCommandLine(args []string) (*cobra.Command, error) {
	root := newRootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return nil, err
	}
	if cmd == root {
		return nil, fmt.Errorf("no scanwire command in %q", args)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return nil, err
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return nil, err
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// composeEnv is what a compose service puts in its container's
// environment: its environment (a mapping, or a list of NAME=value) and
// the files of its env_file, relative to deploy/.
func composeEnv(t *testing.T, svc map[string]any) map[string]string {
	t.Helper()
	env := map[string]string{}
	switch e := svc["environment"].(type) {
	case nil:
	case map[string]any:
		for k, v := range e {
			env[k], _ = v.(string)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
			env[k] = v
		}
	default:
		t.Fatalf("environment: %T", e)
	}
	files := yamlStrings(t, svc, "env_file")
	if s, ok := svc["env_file"].(string); ok {
		files = []string{s}
	}
	for _, f := range files {
		fh, err := os.Open(filepath.Join(deployDir, f))
		if err != nil {
			t.Fatalf("env_file: %v", err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Errorf("env_file %s: %q is not NAME=value", f, l)
			}
			env[k] = v
		}
		fh.Close()
	}
	return env
}

// natsConf is nats.conf as the server reads it.
func natsConf(t *testing.T) *server.Options {
	t.Helper()
	opts, _, _ := natsConfWith(t)
	return opts
}

// TestNATSClusterConfIsNATSConfWithRoutes loads deploy/nats-cluster.conf
// as a node of compose.yaml's cluster would, nats.conf beside it: it is
// nats.conf (the same users, callout and JetStream with fsync on every
// write) with a name and routes to the three nodes.
func TestNATSClusterConfIsNATSConfWithRoutes(t *testing.T) {
	t.Setenv("NATS_SERVER_NAME", "nats-2")
	dir := t.TempDir()
	base := natsConf(t)
	text := natsConfText(t) // nats.conf with its variables and TLS files filled in
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(deployDir + "/nats-cluster.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nats-cluster.conf"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats-cluster.conf"))
	if err != nil {
		t.Fatalf("nats-cluster.conf: %v", err)
	}
	if opts.ServerName != "nats-2" || opts.Cluster.Name == "" || opts.Cluster.Port != 6222 || len(opts.Routes) != 3 {
		t.Errorf("nats-cluster.conf: name %q, cluster %q on %d, %d routes", opts.ServerName, opts.Cluster.Name, opts.Cluster.Port, len(opts.Routes))
	}
	if !opts.JetStream || !opts.SyncAlways || opts.AuthCallout == nil || len(opts.Users) != len(base.Users) || opts.TLSConfig == nil {
		t.Errorf("nats-cluster.conf is not nats.conf: jetstream %v, fsync always %v, callout %v, %d users (nats.conf %d), TLS %v",
			opts.JetStream, opts.SyncAlways, opts.AuthCallout != nil, len(opts.Users), len(base.Users), opts.TLSConfig != nil)
	}
	doc := readYAML(t, deployDir+"/compose.yaml")
	services := yamlMap(t, doc, "services")
	for _, r := range opts.Routes {
		if services[r.Hostname()] == nil {
			t.Errorf("nats-cluster.conf routes to %s, which is not a service of compose.yaml", r.Host)
		}
	}
}

// natsConfWith loads nats.conf with the server's own parser as the server
// of a deployment does: its $VARIABLES set to credentials as `scanwire
// secrets nats` makes them, its TLS files those of a CA made for the test
// at the paths it names. It returns the credentials and the CA too.
func natsConfWith(t *testing.T) (*server.Options, natsauth.Credentials, natsxtest.CA) {
	t.Helper()
	text, creds, ca := natsConfFilled(t)
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	return opts, creds, ca
}

// natsConfText is nats.conf with its variables and TLS files filled in.
func natsConfText(t *testing.T) string {
	t.Helper()
	text, _, _ := natsConfFilled(t)
	return text
}

func natsConfFilled(t *testing.T) (string, natsauth.Credentials, natsxtest.CA) {
	t.Helper()
	text, ca := natsConfWithTLS(t)
	creds := natsauth.Credentials{}.Complete()
	return fillVars(text, creds.Env()), creds, ca
}

// natsConfWithTLS is nats.conf with the TLS files of a CA made for the
// test at the paths it names, its variables left as they are.
func natsConfWithTLS(t *testing.T) (string, natsxtest.CA) {
	t.Helper()
	b, err := os.ReadFile(repoRoot + "/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	ca := natsxtest.NewCA(t)
	text := strings.NewReplacer(`"/etc/nats/tls/server.pem"`, strconv.Quote(ca.Cert), `"/etc/nats/tls/server-key.pem"`, strconv.Quote(ca.Key)).Replace(string(b))
	if text == string(b) {
		t.Fatal("nats.conf names no TLS files at /etc/nats/tls/server.pem and server-key.pem")
	}
	return text, ca
}

// fillVars replaces each $NAME of a server configuration that env holds
// with its value, quoted, as the server does with its environment.
func fillVars(text string, env map[string]string) string {
	return regexp.MustCompile(`\$[A-Z][A-Z0-9_]*`).ReplaceAllStringFunc(text, func(ref string) string {
		if v, ok := env[ref[1:]]; ok {
			return strconv.Quote(v)
		}
		return ref
	})
}

var (
	envReadOnce  sync.Once
	envReadNames map[string]bool
	envReadErr   error
)

// envRead returns whether an environment variable is read by scanwire or
// by a package the binary links (the OpenTelemetry SDK reads
// OTEL_SERVICE_NAME itself): whether its name appears as a string literal
// in the source of one of them.
func envRead(t *testing.T) func(name string) bool {
	t.Helper()
	envReadOnce.Do(func() {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", ".").Output()
		if err != nil {
			envReadErr = fmt.Errorf("go list: %w", err)
			return
		}
		literal := regexp.MustCompile(`"([A-Z][A-Z0-9_]*_[A-Z0-9_]+)"`)
		envReadNames = map[string]bool{}
		for _, dir := range strings.Fields(string(out)) {
			files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
			for _, f := range files {
				if strings.HasSuffix(f, "_test.go") {
					continue
				}
				b, err := os.ReadFile(f)
				if err != nil {
					envReadErr = err
					return
				}
				for _, m := range literal.FindAllSubmatch(b, -1) {
					envReadNames[string(m[1])] = true
				}
			}
		}
	})
	if envReadErr != nil {
		t.Fatal(envReadErr)
	}
	return func(name string) bool { return envReadNames[name] }
}

// shellWords splits one command line as sh would, as far as the README
// needs: words, '...' and "..." quoting, a backslash escaping the next
// character. It ends at a comment or at an operator (&, |, ;) or a redirection (>, <), and
// refuses an unclosed quote.
func shellWords(line string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, w.String())
		}
		w.Reset()
		inWord = false
	}
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == ' ' || c == '\t':
			flush()
		case c == '#' && !inWord, c == '&', c == '|', c == ';', c == '>', c == '<':
			flush()
			return words, nil
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unclosed '")
			}
			w.WriteString(line[i+1 : i+1+j])
			inWord, i = true, i+1+j
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte(`"\$`+"`", line[i+1]) >= 0 {
					i++
				}
				w.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, fmt.Errorf(`unclosed "`)
			}
			inWord = true
		case c == '\\' && i+1 < len(line):
			i++
			w.WriteByte(line[i])
			inWord = true
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return words, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// readYAML parses the YAML file at path. Scalars become strings, as the
// checks compare them with flags and variables.
func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	m, ok := stringScalars(v).(map[string]any)
	if !ok {
		t.Fatalf("%s is not a mapping", path)
	}
	return m
}

// stringScalars turns every scalar in v into its string.
func stringScalars(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = stringScalars(x)
		}
		return v
	case []any:
		for i, x := range v {
			v[i] = stringScalars(x)
		}
		return v
	case nil:
		return ""
	case string:
		return v
	}
	return fmt.Sprint(v)
}

// yamlMap returns m[key], which must be a mapping.
func yamlMap(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("%s: %T, want a mapping", key, m[key])
	}
	return v
}

// yamlStrings returns m[key], which must be absent or a sequence of
// scalars.
func yamlStrings(t *testing.T, m map[string]any, key string) []string {
	t.Helper()
	l, ok := m[key].([]any)
	if !ok {
		return nil
	}
	out := make([]string, len(l))
	for i, v := range l {
		if out[i], ok = v.(string); !ok {
			t.Fatalf("%s[%d]: %T, want a scalar", key, i, v)
		}
	}
	return out
}
