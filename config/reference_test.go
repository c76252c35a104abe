package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

var update = flag.Bool("update", false, "rewrite the generated configuration reference in docs/OPERATIONS.md")

const (
	referenceBegin = "<!-- BEGIN generated configuration reference: go test ./config -run TestOperationsReference -update -->\n"
	referenceEnd   = "<!-- END generated configuration reference -->\n"
)

// TestOperationsReference keeps the table in docs/OPERATIONS.md equal to
// what the config structs say; -update rewrites it.
func TestOperationsReference(t *testing.T) {
	path := filepath.Join("..", "docs", "OPERATIONS.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	before, rest, ok := strings.Cut(doc, referenceBegin)
	if !ok {
		t.Fatalf("%s has no line %q", path, strings.TrimSpace(referenceBegin))
	}
	current, after, ok := strings.Cut(rest, referenceEnd)
	if !ok {
		t.Fatalf("%s has no line %q", path, strings.TrimSpace(referenceEnd))
	}
	want := ReferenceMarkdown()
	if current == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(before+referenceBegin+want+referenceEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the configuration reference in %s is out of date: run\n  go test ./config -run TestOperationsReference -update", path)
}

func TestReferenceDescribesEveryField(t *testing.T) {
	t.Parallel()
	docs := settingDocs()
	var paths []string
	for _, s := range Reference() {
		paths = append(paths, s.Path)
		if strings.TrimSpace(s.Doc) == "" {
			t.Errorf("%s has no description: add one to settingDocs in config/reference_docs.go", s.Path)
		}
	}
	for p := range docs {
		if !slices.Contains(paths, p) {
			t.Errorf("settingDocs describes %s, which is not a configuration key", p)
		}
	}
}

// TestReferenceEnvNamesAreLoaded checks the documented variables against the
// ones Load really reads, and that setting each one changes its key.
func TestReferenceEnvNamesAreLoaded(t *testing.T) {
	t.Parallel()
	var loaded []string
	for _, f := range envFields(reflect.TypeFor[Config](), EnvPrefix, nil) {
		loaded = append(loaded, f.name)
	}
	var documented []string
	for _, s := range Reference() {
		if strings.Contains(s.Env, "<NAME>") {
			continue
		}
		documented = append(documented, s.Env)
		if !slices.Contains(loaded, s.Env) {
			t.Errorf("%s: documented variable %s is not read by Load", s.Path, s.Env)
		}
	}
	for _, name := range loaded {
		if !slices.Contains(documented, name) {
			t.Errorf("Load reads %s, which the reference does not document", name)
		}
	}
	// The partner variables follow the documented pattern.
	cfg, err := Load(LoadOptions{Env: map[string]string{"COHORTSYNC_PARTNERS_MYTOOL_API_KEY": "k-0123456789abcdef", "COHORTSYNC_PARTNERS_MYTOOL_ENABLED": "false"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Partners["mytool"]; p.APIKey != "k-0123456789abcdef" || p.Enabled {
		t.Fatalf("partner from env: %+v", p)
	}
}

// TestReferenceFlagsExist checks that every documented flag is bound and
// that every configuration flag is documented.
func TestReferenceFlagsExist(t *testing.T) {
	t.Parallel()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	BindFlags(fs)
	BindNoMigrateFlag(fs)
	documented := map[string]bool{}
	for _, s := range Reference() {
		if s.Flag == "" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(s.Flag, "--"), " ")
		documented[name] = true
		if fs.Lookup(name) == nil {
			t.Errorf("%s: documented flag --%s does not exist", s.Path, name)
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != FlagConfig && !documented[f.Name] {
			t.Errorf("flag --%s sets a key the reference does not name", f.Name)
		}
	})
}

func TestReferenceDefaults(t *testing.T) {
	t.Parallel()
	got := map[string]string{}
	for _, s := range Reference() {
		got[s.Path] = s.Default
	}
	d := Default()
	for path, want := range map[string]string{
		"http_addr":               d.HTTPAddr,
		"kafka.exports_retention": "720h",
		"kafka.batch_timeout":     "2ms",
		"shutdown_timeout":        "15s",
		"kafka.partitions":        "12",
		"partners.<name>.enabled": "true for amplitude, census, heap, hightouch, mixpanel, segment",
	} {
		if got[path] != want {
			t.Errorf("%s: default %q, want %q", path, got[path], want)
		}
	}
}
