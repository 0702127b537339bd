package main

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/jsonx"
	"github.com/scanwire/scanwire/internal/natsauth"
)

// k8sDoc is what the checks read of a Kubernetes object: the fields of a
// Secret, a Service, a Deployment and a PodDisruptionBudget.
type k8sDoc struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas     int         `yaml:"replicas"`
		MinAvailable int         `yaml:"minAvailable"`
		Selector     k8sSelector `yaml:"selector"`
		Ports        []struct {
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// k8sSelector is a Deployment's or PDB's selector (matchLabels), or a
// Service's (the labels themselves).
type k8sSelector struct {
	MatchLabels map[string]string
}

func (s *k8sSelector) UnmarshalYAML(n *yaml.Node) error {
	var m struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	if err := n.Decode(&m); err == nil && m.MatchLabels != nil {
		s.MatchLabels = m.MatchLabels
		return nil
	}
	return n.Decode(&s.MatchLabels)
}

type k8sContainer struct {
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	LivenessProbe k8sProbe `yaml:"livenessProbe"`
	Readiness     k8sProbe `yaml:"readinessProbe"`
	Resources     struct {
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

func readK8s(t *testing.T, path string) []k8sDoc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []k8sDoc
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d k8sDoc
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, d)
	}
}

// natsValues is what the checks read of deploy/k8s/nats-values.yaml.
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `yaml:"enabled"`
			Replicas int  `yaml:"replicas"`
		} `yaml:"cluster"`
		JetStream struct {
			Enabled   bool `yaml:"enabled"`
			FileStore struct {
				Enabled bool `yaml:"enabled"`
				PVC     struct {
					Enabled bool `yaml:"enabled"`
				} `yaml:"pvc"`
			} `yaml:"fileStore"`
			Merge map[string]string `yaml:"merge"`
		} `yaml:"jetstream"`
		NATS struct {
			TLS struct {
				Enabled bool `yaml:"enabled"`
			} `yaml:"tls"`
		} `yaml:"nats"`
		Merge struct {
			SystemAccount string `yaml:"system_account"`
			Accounts      map[string]struct {
				JetStream string `yaml:"jetstream"`
				Users     []struct {
					User        string `yaml:"user"`
					Permissions *struct {
						Publish        struct{ Allow []string } `yaml:"publish"`
						Subscribe      struct{ Allow []string } `yaml:"subscribe"`
						AllowResponses bool                     `yaml:"allow_responses"`
					} `yaml:"permissions"`
				} `yaml:"users"`
			} `yaml:"accounts"`
			Authorization struct {
				AuthCallout struct {
					Account   string   `yaml:"account"`
					AuthUsers []string `yaml:"auth_users"`
				} `yaml:"auth_callout"`
			} `yaml:"authorization"`
		} `yaml:"merge"`
	} `yaml:"config"`
	Container struct {
		Env map[string]struct {
			ValueFrom struct {
				SecretKeyRef struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
	} `yaml:"container"`
}

// Issue 14.4: the Helm values make the chart's NATS what nats.conf is: a
// three-node JetStream cluster on file storage with fsync on every write,
// TLS, scanwire's accounts, its service users with internal/natsauth's
// permissions and the auth callout, every variable from the Secret.
func TestDeployHelmValuesAsWritten(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(deployDir + "/k8s/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v natsValues
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 || !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled ||
		c.JetStream.Merge["sync_interval"] != "always" || !c.NATS.TLS.Enabled {
		t.Errorf("values: cluster %+v, jetstream %+v, TLS %v; want three replicas, file storage on volumes, sync_interval always, TLS", c.Cluster, c.JetStream, c.NATS.TLS.Enabled)
	}
	m := c.Merge
	if m.SystemAccount != natsauth.SystemAccount || m.Accounts[natsauth.Account].JetStream != "enabled" || m.Authorization.AuthCallout.Account != natsauth.AuthAccount ||
		len(m.Authorization.AuthCallout.AuthUsers) != len(natsauth.ServiceUsers)+1 {
		t.Errorf("values: accounts and callout %+v", m)
	}
	found := 0
	for _, u := range m.Accounts[natsauth.Account].Users {
		want, ok := natsauth.Service(u.User)
		if !ok || u.Permissions == nil {
			t.Errorf("values: user %s", u.User)
			continue
		}
		found++
		if !slices.Equal(sorted(u.Permissions.Publish.Allow), want.Publish) || !slices.Equal(sorted(u.Permissions.Subscribe.Allow), want.Subscribe) || !u.Permissions.AllowResponses {
			t.Errorf("values: %s's permissions differ from internal/natsauth's", u.User)
		}
	}
	if found != len(natsauth.ServiceUsers) {
		t.Errorf("values: %d service users, want %d", found, len(natsauth.ServiceUsers))
	}
	// The configuration the chart renders from config.merge loads in the
	// server's own parser, the chart's raw values (<< ... >>) as the
	// server reads them: variables from the Secret, sizes as units.
	var raw struct {
		Config struct {
			Merge map[string]any `yaml:"merge"`
		} `yaml:"config"`
	}
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	conf, err := jsonx.Marshal(raw.Config.Merge) // the parser knows no \u escape
	if err != nil {
		t.Fatal(err)
	}
	// "<< x >>" is x as the chart writes it into the configuration.
	text := regexp.MustCompile(`"<< ([^"]+) >>"`).ReplaceAllString(string(conf), "$1")
	text = fillVars(text, natsauth.Credentials{}.Complete().Env())
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		t.Fatalf("values' config.merge in the server's parser: %v", err)
	}
	if opts.AuthCallout == nil || len(opts.Users) != len(natsauth.ServiceUsers)+1 || opts.MaxPayload != 4<<20 {
		t.Errorf("values' config.merge loads as callout %v, %d users, max payload %d", opts.AuthCallout, len(opts.Users), opts.MaxPayload)
	}
	for _, ref := range regexp.MustCompile(`<< \$([A-Z0-9_]+) >>`).FindAllStringSubmatch(string(b), -1) {
		e, ok := v.Container.Env[ref[1]]
		if !ok || e.ValueFrom.SecretKeyRef.Name != "scanwire-nats" || e.ValueFrom.SecretKeyRef.Key != ref[1] {
			t.Errorf("values: $%s is not given to the server from the Secret scanwire-nats", ref[1])
		}
	}
}

// Issue 14.4: the Kubernetes manifests run as written: each Deployment's
// command parses as scanwire's, joins every server of the chart's cluster
// over TLS, serves its probes on the port they call, asks for resources,
// gets its own NATS password and no other's from Secrets that exist, and
// has a PodDisruptionBudget that leaves a pod when it can; the Service
// reaches the gateway.
func TestDeployKubernetesAsWritten(t *testing.T) {
	t.Parallel()
	docs := readK8s(t, deployDir+"/k8s/scanwire.yaml")
	read := envRead(t)
	secrets := map[string]map[string]bool{"scanwire-nats": {}} // made from `scanwire secrets nats`
	for _, name := range natsauth.EnvNames() {
		secrets["scanwire-nats"][name] = true
	}
	var deployments, pdbs, services []k8sDoc
	for _, d := range docs {
		switch d.Kind {
		case "Secret":
			secrets[d.Metadata.Name] = map[string]bool{}
			for k := range d.StringData {
				secrets[d.Metadata.Name][k] = true
			}
		case "Deployment":
			deployments = append(deployments, d)
		case "PodDisruptionBudget":
			pdbs = append(pdbs, d)
		case "Service":
			services = append(services, d)
		}
	}
	ran := map[string]bool{}
	for _, d := range deployments {
		name := d.Metadata.Name
		if len(d.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("%s: %d containers", name, len(d.Spec.Template.Spec.Containers))
		}
		c := d.Spec.Template.Spec.Containers[0]
		cmd, err := parseCommandLine(c.Args)
		if err != nil || cmd.Name() != "run" {
			t.Errorf("%s: args %q: %v", name, c.Args, err)
			continue
		}
		urls := strings.Split(cmd.Flag("nats").Value.String(), ",")
		for _, raw := range urls {
			if u, err := url.Parse(raw); err != nil || u.Scheme != "tls" || !strings.HasSuffix(u.Hostname(), ".nats-headless") || u.Port() != "4222" {
				t.Errorf("%s: --nats %q, want tls://nats-<n>.nats-headless:4222 for each server of the chart", name, raw)
			}
		}
		if len(urls) != 3 || cmd.Flag("nats-ca").Value.String() == "" {
			t.Errorf("%s: --nats names %d servers (want 3), --nats-ca %q", name, len(urls), cmd.Flag("nats-ca").Value)
		}
		runs := strings.Split(cmd.Flag("services").Value.String(), ",")
		for _, s := range runs {
			ran[s] = true
		}
		if err := (&app.Config{NATSURL: "tls://x", Services: runs}).Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		_, port, _ := strings.Cut(cmd.Flag("http").Value.String(), ":")
		httpPort := ""
		for _, p := range c.Ports {
			if strconv.Itoa(p.ContainerPort) == port {
				httpPort = p.Name
			}
		}
		if httpPort == "" || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port != httpPort ||
			c.Readiness.HTTPGet.Path != "/readyz" || c.Readiness.HTTPGet.Port != httpPort {
			t.Errorf("%s: --http %s, probes %+v / %+v; want /healthz and /readyz on its port", name, cmd.Flag("http").Value, c.LivenessProbe, c.Readiness)
		}
		if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
			t.Errorf("%s: no cpu and memory requests", name)
		}
		env := map[string]bool{}
		for _, e := range c.Env {
			env[e.Name] = true
			if !read(e.Name) {
				t.Errorf("%s: environment variable %s is read by nothing scanwire links", name, e.Name)
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !secrets[e.ValueFrom.SecretKeyRef.Name][e.ValueFrom.SecretKeyRef.Key] {
				t.Errorf("%s: %s from secret %s key %s, which is not there", name, e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			}
		}
		own := natsauth.EnvPassword(natsauth.ForServices(runs))
		for _, u := range natsauth.ServiceUsers {
			if p := natsauth.EnvPassword(u); env[p] != (p == own) {
				t.Errorf("%s: has %s %v; a process gets its own NATS password (%s) and no other", name, p, env[p], own)
			}
		}
		if slices.Contains(runs, app.ServiceGateway) && (!env["SCANWIRE_ADMIN_KEY"] || !env[natsauth.EnvPassword(natsauth.UserAuth)] || !env[natsauth.EnvIssuer] ||
			cmd.Flag("replicas").Value.String() != "3") {
			t.Errorf("%s: runs the gateway without its keys, the callout's credentials or --replicas 3", name)
		}
		if !maps.Equal(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
			t.Errorf("%s: selector %v does not select its pods %v", name, d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)
		}
		covered := false
		for _, p := range pdbs {
			covered = covered || (maps.Equal(p.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) && p.Spec.MinAvailable >= 1 && p.Spec.MinAvailable < d.Spec.Replicas)
		}
		if !covered {
			t.Errorf("%s: no PodDisruptionBudget keeps one of its %d pods while letting one go", name, d.Spec.Replicas)
		}
		if slices.Contains(runs, app.ServiceGateway) {
			reached := false
			for _, s := range services {
				reached = reached || (maps.Equal(s.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) && len(s.Spec.Ports) > 0 && s.Spec.Ports[0].TargetPort == httpPort)
			}
			if !reached {
				t.Errorf("%s: no Service reaches the gateway's port", name)
			}
		}
	}
	for _, s := range app.AllServices {
		if !ran[s] {
			t.Errorf("no Deployment runs %s", s)
		}
	}
}
