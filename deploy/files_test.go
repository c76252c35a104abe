package deploy

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/cohortsync/cohortsync/config"
)

// compose is the part of a compose file these tests read.
type compose struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       map[string]string `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   any               `yaml:"depends_on"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// interpolate resolves compose's ${VAR:-default} with an empty environment,
// which is what `docker compose up` does on a fresh machine.
// interpolate expands ${VAR:-default} to the default and ${VAR:?message}
// (a variable the stack refuses to start without) to its value in
// .env.example, as compose would with a deploy/.env copied from it; a
// required variable the example lacks is an error.
func interpolate(t *testing.T, s string) string {
	t.Helper()
	example := envExample(t)
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			return s
		}
		j := strings.Index(s[i:], "}")
		if j < 0 {
			return s
		}
		expr := s[i+2 : i+j]
		val := ""
		if name, _, ok := strings.Cut(expr, ":?"); ok {
			v, found := example[name]
			if !found {
				t.Errorf("%s is required by docker-compose.yml but not in .env.example", name)
			}
			val = v
		} else {
			_, val, _ = strings.Cut(expr, ":-")
		}
		s = s[:i] + val + s[i+j+1:]
	}
}

// envExample reads deploy/.env.example as compose reads an env file.
func envExample(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(".env.example")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf(".env.example: %q is not NAME=value", line)
		}
		out[k] = v
	}
	return out
}

// documentedEnv is every variable the configuration reference names, with
// the partner pattern kept as a prefix and suffixes.
func knownEnv(name string) bool {
	for _, s := range config.Reference() {
		if pre, suf, ok := strings.Cut(s.Env, "<NAME>"); ok {
			if strings.HasPrefix(name, pre) && strings.HasSuffix(name, suf) && len(name) > len(pre)+len(suf) {
				return true
			}
			continue
		}
		if s.Env == name {
			return true
		}
	}
	return false
}

// loadLikeServe loads the configuration as `cohortsync <args>` with env
// would, failing on a flag the binary does not have.
func loadLikeServe(t *testing.T, what string, args []string, env map[string]string) config.Config {
	t.Helper()
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("%s: command %q does not run serve", what, args)
	}
	for name := range env {
		if strings.HasPrefix(name, config.EnvPrefix) && !knownEnv(name) {
			t.Errorf("%s: %s is not a variable cohortsync reads", what, name)
		}
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.BindFlags(fs)
	config.BindNoMigrateFlag(fs)
	if err := fs.Parse(args[1:]); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if fs.NArg() > 0 {
		t.Fatalf("%s: serve takes no arguments, got %q", what, fs.Args())
	}
	cfg, err := config.Load(config.LoadOptions{Env: env, Flags: fs})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: invalid configuration:\n%v", what, err)
	}
	return cfg
}

func port(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return p
}

// defaultPort is the port of the binary's default http_addr.
func defaultPort(t *testing.T) string { return port(t, config.Default().HTTPAddr) }

func TestComposeFile(t *testing.T) {
	t.Parallel()
	var c compose
	readYAML(t, "docker-compose.yml", &c)
	for _, name := range []string{"kafka", "clickhouse", "cohortsync-1", "cohortsync-2", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	kafka := c.Services["kafka"]
	if !strings.HasPrefix(kafka.Image, "apache/kafka:") || !strings.Contains(kafka.Environment["KAFKA_PROCESS_ROLES"], "controller") {
		t.Errorf("kafka must be apache/kafka in KRaft mode (broker,controller), got %s roles %q", kafka.Image, kafka.Environment["KAFKA_PROCESS_ROLES"])
	}
	if !strings.HasPrefix(c.Services["clickhouse"].Image, "clickhouse/clickhouse-server:") {
		t.Errorf("clickhouse image %s", c.Services["clickhouse"].Image)
	}

	var cfgs []config.Config
	for _, name := range []string{"cohortsync-1", "cohortsync-2"} {
		s := c.Services[name]
		env := map[string]string{}
		for k, v := range s.Environment {
			env[k] = interpolate(t, v)
		}
		cfg := loadLikeServe(t, name, s.Command, env)
		cfgs = append(cfgs, cfg)
		if !slices.Equal(cfg.Kafka.Brokers, []string{"kafka:9092"}) {
			t.Errorf("%s: brokers %v, want the kafka service", name, cfg.Kafka.Brokers)
		}
		if cfg.ClickHouse.Addr != "clickhouse:9000" {
			t.Errorf("%s: clickhouse.addr %q", name, cfg.ClickHouse.Addr)
		}
		p := port(t, cfg.HTTPAddr)
		if host, _, _ := net.SplitHostPort(cfg.HTTPAddr); host != "0.0.0.0" {
			t.Errorf("%s: http_addr %s is not reachable from other containers", name, cfg.HTTPAddr)
		}
		if p != defaultPort(t) {
			t.Errorf("%s: listens on %s, the binary's default port is %s", name, p, defaultPort(t))
		}
		if cfg.AdminToken == "" || cfg.Partners["mixpanel"].APIKey == "" {
			t.Errorf("%s: admin token and mixpanel's partner_api_key must be set, or each instance generates its own", name)
		}
		if len(s.Ports) != 1 || !strings.HasSuffix(s.Ports[0], ":"+p) {
			t.Errorf("%s: ports %v do not publish container port %s", name, s.Ports, p)
		}
		hc := strings.Join(s.Healthcheck.Test, " ")
		if !strings.Contains(hc, "/usr/local/bin/healthcheck") || !strings.Contains(hc, "127.0.0.1:"+p+"/readyz") {
			t.Errorf("%s: healthcheck %q must probe /readyz on port %s with the image's healthcheck binary", name, hc, p)
		}
		deps, _ := s.DependsOn.(map[string]any)
		for _, d := range []string{"kafka", "clickhouse"} {
			cond, _ := deps[d].(map[string]any)
			if cond["condition"] != "service_healthy" {
				t.Errorf("%s: must wait for %s to be healthy", name, d)
			}
		}
		if s.Build["dockerfile"] == "" {
			t.Errorf("%s: no build", name)
		} else if _, err := os.Stat(filepath.Join(s.Build["context"], s.Build["dockerfile"])); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// One consumer group: the instances differ in nothing but their data directory volume.
	if len(cfgs) == 2 && (cfgs[0].Kafka.Topics != cfgs[1].Kafka.Topics || cfgs[0].AdminToken != cfgs[1].AdminToken ||
		cfgs[0].ClickHouse.Database != cfgs[1].ClickHouse.Database || cfgs[0].Partners["mixpanel"] != cfgs[1].Partners["mixpanel"]) {
		t.Error("the two instances must share topics, admin token, partner keys and database")
	}

	// Nothing is published beyond this machine, and no secret has a default
	// in the file: each comes from deploy/.env.
	for name, s := range c.Services {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %q is published on every interface, want 127.0.0.1", name, p)
			}
		}
		for k, v := range s.Environment {
			secret := strings.Contains(k, "TOKEN") || strings.Contains(k, "PASSWORD") || strings.Contains(k, "API_KEY")
			if secret && !strings.Contains(v, ":?") {
				t.Errorf("%s: %s = %q: a secret must come from deploy/.env (${VAR:?...}), without a default", name, k, v)
			}
		}
		if img := interpolate(t, s.Image); strings.HasSuffix(img, ":latest") || strings.HasSuffix(img, ":local") || (img != "" && !strings.Contains(img, ":")) {
			t.Errorf("%s: image %q has no version tag", name, img)
		}
	}
	if cs := c.Services["cohortsync-1"]; cs.Environment["COHORTSYNC_CLICKHOUSE_PASSWORD"] == "" ||
		c.Services["clickhouse"].Environment["CLICKHOUSE_PASSWORD"] != cs.Environment["COHORTSYNC_CLICKHOUSE_PASSWORD"] {
		t.Error("serve must log in to ClickHouse with the password the clickhouse service sets")
	}

	// Every named volume is declared, every bind mount exists.
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("%s: bind mount %v", name, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("%s: volume %s is not declared", name, src)
			}
		}
	}
}

func TestPrometheusScrapesBothInstances(t *testing.T) {
	t.Parallel()
	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join("prometheus", "prometheus.yml"), &prom)
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.JobName != "cohortsync" {
			continue
		}
		if sc.MetricsPath != "/metrics" {
			t.Errorf("metrics_path %q", sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	slices.Sort(targets)
	want := []string{"cohortsync-1:" + defaultPort(t), "cohortsync-2:" + defaultPort(t)}
	if !slices.Equal(targets, want) {
		t.Errorf("cohortsync targets %v, want %v", targets, want)
	}
	var c compose
	readYAML(t, "docker-compose.yml", &c)
	mounted := strings.Join(c.Services["prometheus"].Volumes, " ")
	for _, rf := range prom.RuleFiles {
		if !strings.Contains(mounted, ":"+rf+":") {
			t.Errorf("rule file %s is not mounted into the prometheus service", rf)
		}
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms, users, expose, entry []string
	var env string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
		case "USER":
			users = append(users, f[1])
		case "EXPOSE":
			expose = append(expose, f[1:]...)
		case "ENTRYPOINT":
			entry = append(entry, strings.Join(f[1:], " "))
		}
		if strings.Contains(line, "COHORTSYNC_") {
			env += line + "\n"
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:") {
		t.Fatalf("want a multi-stage build from golang, got FROM %v", froms)
	}
	if final := froms[len(froms)-1]; !strings.HasPrefix(final, "gcr.io/distroless/static") || !strings.HasSuffix(final, ":nonroot") {
		t.Errorf("final stage %s, want distroless/static nonroot", final)
	}
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1], "0") || users[len(users)-1] == "root" {
		t.Errorf("the image must run as a non-root user, USER %v", users)
	}
	if !strings.Contains(string(raw), "CGO_ENABLED=0") {
		t.Error("the binary must be static (CGO_ENABLED=0)")
	}
	if !slices.Equal(expose, []string{defaultPort(t)}) {
		t.Errorf("EXPOSE %v, want the default port %s", expose, defaultPort(t))
	}
	if !strings.Contains(env, "COHORTSYNC_HTTP_ADDR=0.0.0.0:"+defaultPort(t)) {
		t.Errorf("the image must listen on 0.0.0.0:%s", defaultPort(t))
	}
	for _, pkg := range []string{"./cmd/cohortsync", "./deploy/healthcheck"} {
		if !strings.Contains(string(raw), pkg) {
			t.Errorf("the image does not build %s", pkg)
		}
		if _, err := os.Stat(filepath.Join("..", pkg)); err != nil {
			t.Error(err)
		}
	}
	if len(entry) != 1 || !strings.Contains(entry[0], "/usr/local/bin/cohortsync") {
		t.Errorf("ENTRYPOINT %v", entry)
	}
	ignore, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"cmd", "go.mod", "go.sum", "deploy/healthcheck"} {
		for _, line := range strings.Split(string(ignore), "\n") {
			if strings.TrimSpace(line) == must {
				t.Errorf(".dockerignore leaves out %s, which the build needs", must)
			}
		}
	}
}
