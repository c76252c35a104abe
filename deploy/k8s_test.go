package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cohortsync/cohortsync/kafka"
)

// k8sObject is the part of a manifest these tests read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Ports []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
		MaxUnavailable any `yaml:"maxUnavailable"`
		Template       struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name      string         `yaml:"name"`
					ConfigMap map[string]any `yaml:"configMap"`
					PVC       map[string]any `yaml:"persistentVolumeClaim"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		ValueFrom struct {
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

// readManifests parses every document of every file the kustomization lists.
func readManifests(t *testing.T) map[string]k8sObject {
	t.Helper()
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	readYAML(t, filepath.Join("k8s", "kustomization.yaml"), &kust)
	out := map[string]k8sObject{}
	for _, res := range append(kust.Resources, "secret.example.yaml") {
		raw, err := os.ReadFile(filepath.Join("k8s", res))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", res, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: a document without apiVersion, kind or name", res)
			}
			out[o.Kind] = o
		}
	}
	return out
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	objs := readManifests(t)
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "PersistentVolumeClaim", "Secret"} {
		if _, ok := objs[kind]; !ok {
			t.Fatalf("no %s", kind)
		}
	}
	dep := objs["Deployment"]
	if len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(dep.Spec.Template.Spec.Containers))
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if !reflect.DeepEqual(dep.Spec.Selector.MatchLabels, subset(dep.Spec.Template.Metadata.Labels, dep.Spec.Selector.MatchLabels)) {
		t.Error("the Deployment's selector does not match its pod labels")
	}

	// The configuration the pods run with: the ConfigMap's file, the
	// Secret's variables and the container's args, loaded as serve would.
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(objs["ConfigMap"].Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := objs["Secret"]
	var secretKeys map[string]string
	raw, _ := os.ReadFile(filepath.Join("k8s", "secret.example.yaml"))
	var s struct {
		StringData map[string]string `yaml:"stringData"`
	}
	if err := yaml.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	secretKeys = s.StringData
	env := map[string]string{}
	for _, e := range c.Env {
		ref := e.ValueFrom.SecretKeyRef
		if ref.Name != secret.Metadata.Name {
			t.Errorf("env %s refers to Secret %q, want %q", e.Name, ref.Name, secret.Metadata.Name)
		}
		v, ok := secretKeys[ref.Key]
		if !ok {
			t.Errorf("env %s refers to key %q the Secret example does not have", e.Name, ref.Key)
		}
		if v != "" {
			env[e.Name] = v
		}
	}
	args := append([]string(nil), c.Args...)
	var configMount string
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			configMount = filepath.Dir(args[i+1])
			args[i+1] = cfgFile
		}
	}
	cfg := loadLikeServe(t, "deployment", args, env)
	if cfg.AdminToken == "" || cfg.Partners["mixpanel"].APIKey == "" {
		t.Error("the admin token and mixpanel's partner_api_key must come from the Secret")
	}
	for name, p := range cfg.Partners {
		if p.Enabled && p.APIKey == "" {
			t.Errorf("partner %s is enabled without a key: every pod would generate a different one", name)
		}
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	if mounts[configMount] == "" {
		t.Errorf("--config is under %s, where nothing is mounted", configMount)
	}
	if mounts[cfg.DataDir] == "" {
		t.Errorf("data_dir %s is not a volume", cfg.DataDir)
	}

	// A release tag, the same in the Deployment and in kustomize's images.
	repo, tag, _ := strings.Cut(c.Image, ":")
	if tag == "" || tag == "latest" {
		t.Errorf("image %q: want a release tag, not :latest or none", c.Image)
	}
	var kust struct {
		Images []struct {
			Name   string `yaml:"name"`
			NewTag string `yaml:"newTag"`
		} `yaml:"images"`
	}
	readYAML(t, filepath.Join("k8s", "kustomization.yaml"), &kust)
	if len(kust.Images) != 1 || kust.Images[0].Name != repo || kust.Images[0].NewTag != tag {
		t.Errorf("kustomization images %+v, want %s at %s", kust.Images, repo, tag)
	}

	// Ports and probes match the binary.
	p := port(t, cfg.HTTPAddr)
	if p != defaultPort(t) {
		t.Errorf("config listens on %s, the binary's default port is %s", p, defaultPort(t))
	}
	if len(c.Ports) != 1 || strconv.Itoa(c.Ports[0].ContainerPort) != p {
		t.Fatalf("container ports %+v, want %s", c.Ports, p)
	}
	portName := c.Ports[0].Name
	for _, pr := range []struct {
		name  string
		probe *k8sProbe
		path  string
	}{
		{"startupProbe", c.StartupProbe, "/healthz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
	} {
		if pr.probe == nil {
			t.Errorf("no %s", pr.name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("%s path %q, want %s", pr.name, pr.probe.HTTPGet.Path, pr.path)
		}
		if got := toString(pr.probe.HTTPGet.Port); got != portName && got != p {
			t.Errorf("%s port %q, want %s or %s", pr.name, got, portName, p)
		}
	}
	svc := objs["Service"]
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("service ports %+v", svc.Spec.Ports)
	}
	if tp := toString(svc.Spec.Ports[0].TargetPort); tp != portName && tp != p {
		t.Errorf("service targetPort %q, want %s", tp, portName)
	}
	var svcSel struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
		} `yaml:"spec"`
	}
	readYAML(t, filepath.Join("k8s", "service.yaml"), &svcSel)
	if !reflect.DeepEqual(svcSel.Spec.Selector, subset(dep.Spec.Template.Metadata.Labels, svcSel.Spec.Selector)) || len(svcSel.Spec.Selector) == 0 {
		t.Error("the Service's selector does not match the pods")
	}
	pdb := objs["PodDisruptionBudget"]
	if len(pdb.Spec.Selector.MatchLabels) == 0 || !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, subset(dep.Spec.Template.Metadata.Labels, pdb.Spec.Selector.MatchLabels)) {
		t.Error("the PodDisruptionBudget's selector does not match the pods")
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Error("run at least two replicas, or the PodDisruptionBudget blocks every drain")
	}
	if *dep.Spec.Replicas > cfg.Kafka.Partitions {
		t.Errorf("%d replicas but %d partitions: some would own none", *dep.Spec.Replicas, cfg.Kafka.Partitions)
	}
	// Scaling by lag is documented next to the manifests.
	readme, err := os.ReadFile(filepath.Join("k8s", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"cohortsync_consumer_lag", "lagThreshold", "consumerGroup: " + kafka.DefaultGroupConfig().GroupID, cfg.Kafka.Topics.Exports} {
		if !strings.Contains(string(readme), must) {
			t.Errorf("k8s/README.md does not mention %q", must)
		}
	}
}

// subset returns the entries of m whose keys are in keys.
func subset(m, keys map[string]string) map[string]string {
	out := map[string]string{}
	for k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	default:
		return ""
	}
}

// TestSinglePodOverlay checks the overlay for clusters without ReadWriteMany
// against the base without kustomize: it builds on the base, each patch
// targets an object the base has, replaces a path that object has, and
// the result is one pod, a ReadWriteOnce volume and no rolling update that
// would need the volume twice.
func TestSinglePodOverlay(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("k8s", "single-pod", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `yaml:"resources"`
		Patches   []struct {
			Target struct{ Kind, Name string } `yaml:"target"`
			Patch  string                      `yaml:"patch"`
		} `yaml:"patches"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(k.Resources, []string{".."}) {
		t.Errorf("resources %v, want the base (..)", k.Resources)
	}
	base := map[string]map[string]any{} // kind/name → object
	for _, f := range []string{"deployment.yaml", "parquet-pvc.yaml"} {
		raw, err := os.ReadFile(filepath.Join("k8s", f))
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			t.Fatal(err)
		}
		meta, _ := obj["metadata"].(map[string]any)
		base[obj["kind"].(string)+"/"+meta["name"].(string)] = obj
	}
	got := map[string]any{}
	for _, p := range k.Patches {
		obj, ok := base[p.Target.Kind+"/"+p.Target.Name]
		if !ok {
			t.Errorf("patch targets %s/%s, which the base does not have", p.Target.Kind, p.Target.Name)
			continue
		}
		var ops []struct {
			Op, Path string
			Value    any
		}
		if err := yaml.Unmarshal([]byte(p.Patch), &ops); err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			node := any(obj)
			for _, key := range strings.Split(strings.TrimPrefix(op.Path, "/"), "/") {
				m, _ := node.(map[string]any)
				node = m[key]
			}
			if op.Op != "replace" || node == nil {
				t.Errorf("%s on %s: the base has no value at that path to replace", op.Op, op.Path)
			}
			got[p.Target.Kind+op.Path] = op.Value
		}
	}
	want := map[string]any{
		"PersistentVolumeClaim/spec/accessModes": []any{"ReadWriteOnce"},
		"Deployment/spec/replicas":               1,
		"Deployment/spec/strategy":               map[string]any{"type": "Recreate"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the overlay sets %v, want %v", got, want)
	}
}
