package readmecheck_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"
)

// composeFile is the part of compose.yaml the checks read (anchors and
// merge keys resolved by the YAML decoder, as Compose resolves them).
type composeFile struct {
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
	Configs  map[string]struct {
		Content string `json:"content"`
	} `json:"configs"`
	Secrets map[string]any `json:"secrets"`
}

type composeService struct {
	Image       string            `json:"image"`
	Build       any               `json:"build"`
	Profiles    []string          `json:"profiles"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Volumes     []string          `json:"volumes"`
	DependsOn   map[string]any    `json:"depends_on"`
	Secrets     []string          `json:"secrets"`
	Configs     []struct {
		Source string `json:"source"`
		Target string `json:"target"`
	} `json:"configs"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("compose.yaml: no services")
	}
	return c
}

// TestComposeReferences: everything compose.yaml names exists — each
// service's dependencies, volumes, secrets and configs, declared at the
// top level.
func TestComposeReferences(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("service %s depends on %s, which compose.yaml does not define", name, dep)
			} else if p := c.Services[dep].Profiles; len(p) > 0 && !slices.ContainsFunc(s.Profiles, func(x string) bool { return slices.Contains(p, x) }) {
				t.Errorf("service %s (profiles %v) depends on %s, which only profiles %v enable", name, s.Profiles, dep, p)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				continue // a bind mount
			}
			if _, ok := c.Volumes[src]; !ok {
				t.Errorf("service %s mounts volume %s, which compose.yaml does not declare", name, src)
			}
		}
		for _, sec := range s.Secrets {
			if _, ok := c.Secrets[sec]; !ok {
				t.Errorf("service %s uses secret %s, which compose.yaml does not declare", name, sec)
			}
		}
		for _, cf := range s.Configs {
			if _, ok := c.Configs[cf.Source]; !ok {
				t.Errorf("service %s uses config %s, which compose.yaml does not declare", name, cf.Source)
			}
		}
	}
}

// TestComposeFlags builds every binary and holds each inthub service of
// compose.yaml (those built from the repository's Dockerfile) to its
// binary's --help: the command names a binary, every --flag of the
// command is one it takes, and every environment variable is one it reads.
func TestComposeFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary")
	}
	c := loadCompose(t)
	bin := buildBinaries(t)
	helps := map[string][]option{}
	for name, s := range c.Services {
		if s.Build == nil {
			continue // not ours: postgres, nats
		}
		t.Run(name, func(t *testing.T) {
			if len(s.Command) == 0 {
				t.Fatal("no command: the image runs every binary, the command picks one")
			}
			binary := s.Command[0]
			opts, ok := helps[binary]
			if !ok {
				if _, err := os.Stat(filepath.Join(bin, binary)); err != nil {
					t.Fatalf("command %q is not a binary of services/cmd", binary)
				}
				opts = parseServiceHelp(run(t, filepath.Join(bin, binary), "--help"))
				if len(opts) == 0 {
					t.Fatalf("found no options in %s --help", binary)
				}
				helps[binary] = opts
			}
			for _, arg := range s.Command[1:] {
				flag, ok := strings.CutPrefix(arg, "--")
				if !ok {
					continue // a flag's value
				}
				flag, _, _ = strings.Cut(flag, "=")
				if !slices.ContainsFunc(opts, func(o option) bool { return o.flag == flag }) {
					t.Errorf("command has --%s, which %s --help does not list", flag, binary)
				}
			}
			for env := range s.Environment {
				if !slices.ContainsFunc(opts, func(o option) bool { return o.env == env }) {
					t.Errorf("environment sets %s, which %s --help does not list", env, binary)
				}
			}
		})
	}
}

// natsURL matches one server of a --nats-url list: nats://<service>:4222.
var natsURL = regexp.MustCompile(`^nats://([a-z0-9-]+):4222$`)

// TestComposeClusterProfile: the cluster profile is what docs/cluster.md
// asks for. Three NATS servers (nats 2.10 or later), each with a store
// volume of its own, routed to each other, sync_interval set; two
// catalogs, two health-pollers, three annotation workers and two
// enrichment services, each given all three servers and
// --stream-replicas 3; no two replicas share a volume (two processes on
// one spool file would block each other).
func TestComposeClusterProfile(t *testing.T) {
	c := loadCompose(t)
	profile := map[string]composeService{}
	for name, s := range c.Services {
		if slices.Contains(s.Profiles, "cluster") {
			profile[name] = s
		}
	}
	if len(profile) == 0 {
		t.Fatal("compose.yaml has no service in profile cluster")
	}

	// The servers.
	var servers []string
	stores := map[string]string{} // volume → service
	for name, s := range profile {
		if !strings.HasPrefix(s.Image, "nats:") {
			continue
		}
		servers = append(servers, name)
		tag := strings.TrimPrefix(s.Image, "nats:")
		major, minor, ok := natsVersion(tag)
		if !ok || major < 2 || (major == 2 && minor < 10) {
			t.Errorf("%s runs %s; the cluster needs nats 2.10 or later (a version tag, not latest)", name, s.Image)
		}
		cmd := strings.Join(s.Command, " ")
		if !strings.Contains(cmd, "--server_name "+name) {
			t.Errorf("%s: command %q does not name the server %s", name, cmd, name)
		}
		conf := ""
		for _, cf := range s.Configs {
			if strings.Contains(cmd, "-c "+cf.Target) {
				conf = c.Configs[cf.Source].Content
			}
		}
		if conf == "" {
			t.Errorf("%s: no configuration file given with -c from compose.yaml's configs", name)
			continue
		}
		// The server's own parser: the file loads, and sets what the
		// cluster needs.
		path := filepath.Join(t.TempDir(), "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		switch {
		case err != nil:
			t.Errorf("%s: nats-server does not load its configuration: %v", name, err)
		case !opts.JetStream || opts.StoreDir != "/data":
			t.Errorf("%s: JetStream %v, store %q; want on, /data (the volume)", name, opts.JetStream, opts.StoreDir)
		case opts.SyncInterval == 0 && !opts.SyncAlways || !strings.Contains(conf, "sync_interval:"):
			t.Errorf("%s: no sync_interval set: say what a power loss may cost", name)
		case opts.Cluster.Name == "" || opts.Cluster.Port != 6222:
			t.Errorf("%s: cluster %q on port %d; want a name and 6222", name, opts.Cluster.Name, opts.Cluster.Port)
		}
		var data bool
		for _, v := range s.Volumes {
			src, dst, _ := strings.Cut(v, ":")
			if dst == "/data" {
				data = true
				if other, dup := stores[src]; dup {
					t.Errorf("%s and %s share the store volume %s", name, other, src)
				}
				stores[src] = name
			}
		}
		if !data {
			t.Errorf("%s: no volume at /data for its store", name)
		}
	}
	slices.Sort(servers)
	if len(servers) != 3 {
		t.Fatalf("profile cluster has NATS servers %v, want three", servers)
	}
	for _, name := range servers {
		conf := ""
		for _, cf := range profile[name].Configs {
			conf += c.Configs[cf.Source].Content
		}
		for _, peer := range servers {
			if !strings.Contains(conf, "nats-route://"+peer+":6222") {
				t.Errorf("%s: no route to %s in its configuration", name, peer)
			}
		}
	}

	// The services.
	want := map[string]int{"catalog": 2, "health-poller": 2, "annotation": 3, "enrichment": 2}
	got := map[string]int{}
	volumes := map[string]string{}
	for name, s := range profile {
		if s.Build == nil || len(s.Command) == 0 {
			continue
		}
		got[s.Command[0]]++
		args := map[string]string{}
		for i := 1; i+1 < len(s.Command); i++ {
			if f, ok := strings.CutPrefix(s.Command[i], "--"); ok {
				args[f] = s.Command[i+1]
			}
		}
		if args["stream-replicas"] != "3" {
			t.Errorf("%s: command %v lacks --stream-replicas 3", name, s.Command)
		}
		var named []string
		for _, u := range strings.Split(args["nats-url"], ",") {
			m := natsURL.FindStringSubmatch(u)
			if m == nil {
				t.Errorf("%s: --nats-url item %q is not nats://<server>:4222", name, u)
				continue
			}
			named = append(named, m[1])
		}
		slices.Sort(named)
		if !slices.Equal(named, servers) {
			t.Errorf("%s: --nats-url names %v, want every server of the profile %v", name, named, servers)
		}
		for _, srv := range servers {
			if _, ok := s.DependsOn[srv]; !ok {
				t.Errorf("%s does not wait for %s", name, srv)
			}
		}
		if _, ok := s.Environment["NATS_URL"]; ok {
			t.Errorf("%s sets NATS_URL besides --nats-url", name)
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if other, dup := volumes[src]; dup {
				t.Errorf("%s and %s share volume %s", name, other, src)
			}
			volumes[src] = name
		}
	}
	for binary, n := range want {
		if got[binary] != n {
			t.Errorf("profile cluster runs %d replicas of %s, want %d", got[binary], binary, n)
		}
	}
}

// natsVersion reads "2.11-alpine", "2.10.22" as 2, 11 / 2, 10.
func natsVersion(tag string) (major, minor int, ok bool) {
	tag, _, _ = strings.Cut(tag, "-")
	parts := strings.Split(tag, ".")
	if len(parts) < 2 {
		return 0, 0, false
	}
	var err1, err2 error
	major, err1 = strconv.Atoi(parts[0])
	minor, err2 = strconv.Atoi(parts[1])
	return major, minor, err1 == nil && err2 == nil
}
