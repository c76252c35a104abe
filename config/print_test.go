package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// loadText writes text to a file and loads it alone.
func loadText(t *testing.T, text []byte) Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(LoadOptions{File: path})
	if err != nil {
		t.Fatalf("loading the printed configuration: %v\n%s", err, text)
	}
	return cfg
}

func TestMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	full, err := Load(LoadOptions{File: filepath.Join("testdata", "full.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	withEnv, err := Load(LoadOptions{Env: map[string]string{
		"COHORTSYNC_PARTNERS_NEWTOOL_ENABLED": "false",
		"COHORTSYNC_PARTNERS_HEAP_ENABLED":    "false",
		"COHORTSYNC_KAFKA_BROKERS":            "a:1",
		"COHORTSYNC_SNAPSHOTS_INTERVAL":       "-1s",
		"COHORTSYNC_DATA_DIR":                 "/data: with \"quotes\" and # hash",
		"COHORTSYNC_LOG_FORMAT":               "true", // a string that looks like a bool
		"COHORTSYNC_KAFKA_CLIENT_ID":          "123",  // ... and one like a number
		"COHORTSYNC_RETENTION_CUTOFF":         "2011-06-01T00:00:00Z",
	}})
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{"defaults": Default(), "full.yaml": full, "env": withEnv} {
		text, err := cfg.MarshalYAMLText(MarshalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := loadText(t, text); !reflect.DeepEqual(got, cfg) {
			t.Errorf("%s: printed and loaded back:\n got %+v\nwant %+v\n%s", name, got, cfg, text)
		}
		if strings.Contains(string(text), Redacted) {
			t.Errorf("%s: printed without redaction, yet has %s:\n%s", name, Redacted, text)
		}
	}
}

// secretValue reads the setting at a SecretPaths pattern of cfg, one value
// per map entry.
func secretValues(t *testing.T, cfg Config, pattern string) map[string]string {
	t.Helper()
	out := map[string]string{}
	walkValues(reflect.ValueOf(cfg), "", "", func(path, pat string, v reflect.Value) {
		if pat == pattern {
			out[path] = v.String()
		}
	})
	if len(out) == 0 {
		t.Fatalf("no setting matches %s", pattern)
	}
	return out
}

func walkValues(v reflect.Value, path, pattern string, leaf func(path, pattern string, v reflect.Value)) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == durationType {
			break
		}
		for key, f := range yamlFields(v.Type()) {
			walkValues(v.FieldByIndex(f.index), joinPath(path, key), joinPath(pattern, key), leaf)
		}
		return
	case reflect.Map:
		for _, k := range v.MapKeys() {
			walkValues(v.MapIndex(k), joinPath(path, k.String()), joinPath(pattern, mapKeyPlaceholder), leaf)
		}
		return
	}
	leaf(path, pattern, v)
}

func TestMarshalRedacts(t *testing.T) {
	t.Parallel()
	full, err := Load(LoadOptions{File: filepath.Join("testdata", "full.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	text, err := full.MarshalYAMLText(MarshalOptions{Redact: true})
	if err != nil {
		t.Fatal(err)
	}
	got := loadText(t, text)
	for _, p := range SecretPaths() {
		before := secretValues(t, full, p)
		for path, v := range secretValues(t, got, p) {
			switch {
			case before[path] == "" && v != "":
				t.Errorf("%s: empty secret printed as %q; it should stay empty", path, v)
			case before[path] != "" && v != Redacted:
				t.Errorf("%s: printed as %q, want %s", path, v, Redacted)
			}
			if s := before[path]; s != "" && strings.Contains(string(text), s) {
				t.Errorf("%s: the secret appears in the redacted output", path)
			}
		}
	}
	// full.yaml leaves heap's key empty: it must show as unset.
	if got.Partners["heap"].APIKey != "" || got.Partners["mixpanel"].APIKey != Redacted {
		t.Errorf("partners after redaction: %+v", got.Partners)
	}
	// Everything else is printed as it is.
	want := full
	want.AdminToken, want.Kafka.SASL.Password, want.ClickHouse.Password = Redacted, Redacted, Redacted
	want.Partners = Partners{}
	for name, p := range full.Partners {
		if p.APIKey != "" {
			p.APIKey = Redacted
		}
		want.Partners[name] = p
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("redacted configuration:\n got %+v\nwant %+v", got, want)
	}
}

// TestSecretPathsAreComplete fails when a setting is named like a secret but
// is not in SecretPaths, so that config print --redact cannot leak a new one.
func TestSecretPathsAreComplete(t *testing.T) {
	t.Parallel()
	// Settings named like secrets that hold none, and why.
	harmless := map[string]string{
		"kafka.tls.key_file":  "the path of the key file, not the key",
		"kafka.topics.keys":   "a topic name",
		"kafka.topics.tokens": "a topic name",
	}
	secretLike := regexp.MustCompile(`(?i)(password|passwd|token|secret|key|credential|private)`)
	var paths []string
	for _, s := range Reference() {
		paths = append(paths, s.Path)
		last := s.Path[strings.LastIndex(s.Path, ".")+1:]
		if !secretLike.MatchString(last) || slices.Contains(SecretPaths(), s.Path) {
			continue
		}
		if _, ok := harmless[s.Path]; !ok {
			t.Errorf("%s looks like a secret: add it to SecretPaths (config/print.go), or to harmless in this test with the reason", s.Path)
		}
	}
	for _, p := range SecretPaths() {
		if !slices.Contains(paths, p) {
			t.Errorf("SecretPaths has %s, which is not a setting", p)
		}
	}
	for p := range harmless {
		if !slices.Contains(paths, p) {
			t.Errorf("harmless has %s, which is not a setting", p)
		}
	}
}
