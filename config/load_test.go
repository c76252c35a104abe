package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// load runs Load the way the binary does: flags registered by BindFlags and
// parsed from args, with --config pointing at yamlText when it is not empty.
func load(t *testing.T, yamlText string, env map[string]string, args ...string) (Config, error) {
	t.Helper()
	if yamlText != "" {
		path := filepath.Join(t.TempDir(), "cohortsync.yaml")
		if err := os.WriteFile(path, []byte(yamlText), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
	BindFlags(flags)
	if err := flags.Parse(args); err != nil {
		t.Fatalf("parsing flags %q: %v", args, err)
	}
	return Load(LoadOptions{Env: env, Flags: flags})
}

func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	const file = `
data_dir: /from/file
http_addr: 10.0.0.1:1000
log: {level: warn}
shutdown_timeout: 30s
kafka:
  brokers: [file-1:9092, file-2:9092]
  partitions: 3
clickhouse: {addr: file-ch:9000, database: filedb}
ingest: {rate_limit_per_hour: 100}
`
	tests := []struct {
		name string
		file string
		env  map[string]string
		args []string
		want func(*Config)
	}{
		{
			name: "defaults",
			want: func(*Config) {},
		},
		{
			name: "file over defaults",
			file: file,
			want: func(c *Config) {
				c.DataDir = "/from/file"
				c.HTTPAddr = "10.0.0.1:1000"
				c.Log.Level = "warn"
				c.ShutdownTimeout = 30 * time.Second
				c.Kafka.Brokers = []string{"file-1:9092", "file-2:9092"}
				c.Kafka.Partitions = 3
				c.ClickHouse.Addr, c.ClickHouse.Database = "file-ch:9000", "filedb"
				c.Ingest.RateLimitPerHour = 100
			},
		},
		{
			name: "env over file",
			file: file,
			env: map[string]string{
				"COHORTSYNC_DATA_DIR":                   "/from/env",
				"COHORTSYNC_HTTP_ADDR":                  "10.0.0.2:2000",
				"COHORTSYNC_LOG_LEVEL":                  "error",
				"COHORTSYNC_SHUTDOWN_TIMEOUT":           "1m",
				"COHORTSYNC_KAFKA_BROKERS":              " env-1:9092 , env-2:9092,",
				"COHORTSYNC_KAFKA_PARTITIONS":           "24",
				"COHORTSYNC_KAFKA_SASL_PASSWORD":        "from-env",
				"COHORTSYNC_CLICKHOUSE_ADDR":            "env-ch:9000",
				"COHORTSYNC_CLICKHOUSE_DATABASE":        "envdb",
				"COHORTSYNC_INGEST_RATE_LIMIT_PER_HOUR": "200",
				"COHORTSYNC_ADMIN_TOKEN":                "token-from-env-0123",
				"UNRELATED":                             "ignored",
			},
			want: func(c *Config) {
				c.DataDir = "/from/env"
				c.HTTPAddr = "10.0.0.2:2000"
				c.Log.Level = "error"
				c.ShutdownTimeout = time.Minute
				c.Kafka.Brokers = []string{"env-1:9092", "env-2:9092"}
				c.Kafka.Partitions = 24
				c.Kafka.SASL.Password = "from-env"
				c.ClickHouse.Addr, c.ClickHouse.Database = "env-ch:9000", "envdb"
				c.Ingest.RateLimitPerHour = 200
				c.AdminToken = "token-from-env-0123"
			},
		},
		{
			name: "flags over env over file",
			file: file,
			env: map[string]string{
				"COHORTSYNC_DATA_DIR":      "/from/env",
				"COHORTSYNC_HTTP_ADDR":     "10.0.0.2:2000",
				"COHORTSYNC_LOG_LEVEL":     "error",
				"COHORTSYNC_KAFKA_BROKERS": "env-1:9092",
			},
			args: []string{
				"--data-dir", "/from/flag",
				"--http-addr", "10.0.0.3:3000",
				"--log-level", "debug",
				"--kafka-brokers", "flag-1:9092,flag-2:9092",
				"--clickhouse-addr", "flag-ch:9000",
				"--clickhouse-database", "flagdb",
			},
			want: func(c *Config) {
				c.DataDir = "/from/flag"
				c.HTTPAddr = "10.0.0.3:3000"
				c.Log.Level = "debug"
				c.ShutdownTimeout = 30 * time.Second
				c.Kafka.Brokers = []string{"flag-1:9092", "flag-2:9092"}
				c.Kafka.Partitions = 3
				c.ClickHouse.Addr, c.ClickHouse.Database = "flag-ch:9000", "flagdb"
				c.Ingest.RateLimitPerHour = 100
			},
		},
		{
			// Only flags the user typed count: a flag's default must not hide env.
			name: "unset flags keep env",
			env:  map[string]string{"COHORTSYNC_HTTP_ADDR": "10.0.0.2:2000"},
			args: []string{"--data-dir", "/from/flag"},
			want: func(c *Config) {
				c.HTTPAddr = "10.0.0.2:2000"
				c.DataDir = "/from/flag"
			},
		},
		{
			// ...while a flag typed with the default's value still wins.
			name: "flag equal to default still wins",
			env:  map[string]string{"COHORTSYNC_HTTP_ADDR": "10.0.0.2:2000"},
			args: []string{"--http-addr", "127.0.0.1:8080"},
			want: func(*Config) {},
		},
		{
			name: "repeated broker flags add up",
			args: []string{"--kafka-brokers", "a:1", "--kafka-brokers", "b:2"},
			want: func(c *Config) { c.Kafka.Brokers = []string{"a:1", "b:2"} },
		},
		{
			name: "empty broker flag selects the embedded broker",
			file: file,
			args: []string{"--kafka-brokers="},
			want: func(c *Config) {
				c.DataDir = "/from/file"
				c.HTTPAddr = "10.0.0.1:1000"
				c.Log.Level = "warn"
				c.ShutdownTimeout = 30 * time.Second
				c.Kafka.Brokers = []string{}
				c.Kafka.Partitions = 3
				c.ClickHouse.Addr, c.ClickHouse.Database = "file-ch:9000", "filedb"
				c.Ingest.RateLimitPerHour = 100
			},
		},
		{
			name: "empty broker env selects the embedded broker",
			file: file,
			env:  map[string]string{"COHORTSYNC_KAFKA_BROKERS": ""},
			want: func(c *Config) {
				c.DataDir = "/from/file"
				c.HTTPAddr = "10.0.0.1:1000"
				c.Log.Level = "warn"
				c.ShutdownTimeout = 30 * time.Second
				c.Kafka.Partitions = 3
				c.ClickHouse.Addr, c.ClickHouse.Database = "file-ch:9000", "filedb"
				c.Ingest.RateLimitPerHour = 100
			},
		},
		{
			name: "empty file",
			file: "# nothing here\n",
			want: func(*Config) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := load(t, tt.file, tt.env, tt.args...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadFileOption(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opt := filepath.Join(dir, "option.yaml")
	flag := filepath.Join(dir, "flag.yaml")
	if err := os.WriteFile(opt, []byte("data_dir: /from/option\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flag, []byte("data_dir: /from/flag-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
	BindFlags(flags)
	if err := flags.Parse([]string{"--config", flag}); err != nil {
		t.Fatal(err)
	}

	got, err := Load(LoadOptions{File: opt, Flags: flags})
	if err != nil {
		t.Fatal(err)
	}
	if got.DataDir != "/from/option" {
		t.Errorf("LoadOptions.File should win over --config: data_dir = %q", got.DataDir)
	}
	got, err = Load(LoadOptions{Flags: flags})
	if err != nil {
		t.Fatal(err)
	}
	if got.DataDir != "/from/flag-file" {
		t.Errorf("--config not read: data_dir = %q", got.DataDir)
	}
}

func TestLoadPartners(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		env  map[string]string
		want func(map[string]Partner)
	}{
		{
			name: "defaults",
			want: func(map[string]Partner) {},
		},
		{
			name: "env sets a default partner's key and keeps it enabled",
			env:  map[string]string{"COHORTSYNC_PARTNERS_MIXPANEL_API_KEY": "mixpanel-key-0123456789"},
			want: func(p map[string]Partner) {
				p["mixpanel"] = Partner{APIKey: "mixpanel-key-0123456789", Enabled: true}
			},
		},
		{
			name: "env disables a partner",
			env:  map[string]string{"COHORTSYNC_PARTNERS_HEAP_ENABLED": "false"},
			want: func(p map[string]Partner) { p["heap"] = Partner{} },
		},
		{
			name: "env adds a partner, name lower-cased, underscores kept",
			env: map[string]string{
				"COHORTSYNC_PARTNERS_MY_TOOL_API_KEY": "my-tool-key-0123456789",
				"COHORTSYNC_PARTNERS_OTHER_ENABLED":   "0",
			},
			want: func(p map[string]Partner) {
				p["my_tool"] = Partner{APIKey: "my-tool-key-0123456789", Enabled: true}
				p["other"] = Partner{}
			},
		},
		{
			// The suffix is matched first, so a partner whose name ends like a
			// setting still parses.
			name: "partner named like a setting",
			env:  map[string]string{"COHORTSYNC_PARTNERS_X_ENABLED_API_KEY": "key-of-x-enabled-0123"},
			want: func(p map[string]Partner) {
				p["x_enabled"] = Partner{APIKey: "key-of-x-enabled-0123", Enabled: true}
			},
		},
		{
			name: "file partner with only a key stays enabled",
			file: "partners:\n  amplitude: {api_key: amplitude-key-0123456789}\n  newtool: {api_key: newtool-key-0123456789}\n",
			want: func(p map[string]Partner) {
				p["amplitude"] = Partner{APIKey: "amplitude-key-0123456789", Enabled: true}
				p["newtool"] = Partner{APIKey: "newtool-key-0123456789", Enabled: true}
			},
		},
		{
			name: "file partner named without settings is enabled",
			file: "partners:\n  newtool:\n  heap:\n",
			want: func(p map[string]Partner) { p["newtool"] = Partner{Enabled: true} },
		},
		{
			name: "empty partners section keeps the defaults",
			file: "partners:\n",
			want: func(map[string]Partner) {},
		},
		{
			name: "env over file",
			file: "partners:\n  census: {enabled: false, api_key: census-key-from-file}\n",
			env: map[string]string{
				"COHORTSYNC_PARTNERS_CENSUS_ENABLED": "true",
				"COHORTSYNC_PARTNERS_CENSUS_API_KEY": "census-key-from-env",
			},
			want: func(p map[string]Partner) {
				p["census"] = Partner{APIKey: "census-key-from-env", Enabled: true}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := load(t, tt.file, tt.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default().Partners
			tt.want(want)
			if !reflect.DeepEqual(got.Partners, want) {
				t.Errorf("partners:\n got %+v\nwant %+v", got.Partners, want)
			}
		})
	}
}

// TestLoadErrors pins the whole report of each broken input: every problem,
// one per line, in order, in the words of the documentation.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	const durationHint = "write it with a unit, like 15s, 5m or 1h"
	tests := []struct {
		name string
		file string
		env  map[string]string
		// want are the lines of the error; FILE stands for the file's path.
		want []string
	}{
		{
			name: "unknown top-level key, with a suggestion",
			file: "data_dir: /x\nhtp_addr: 127.0.0.1:1\nshoes: 2\n",
			want: []string{
				"htp_addr: line 2: unknown key; did you mean http_addr?",
				"shoes: line 3: unknown key",
			},
		},
		{
			name: "unknown nested keys, all reported",
			file: "log:\n  levle: debug\nkafka:\n  tls: {cafile: x}\npartners:\n  mixpanel: {apikey: x}\n",
			want: []string{
				"log.levle: line 2: unknown key; did you mean log.level?",
				"kafka.tls.cafile: line 4: unknown key; did you mean kafka.tls.ca_file?",
				"partners.mixpanel.apikey: line 6: unknown key; did you mean partners.mixpanel.api_key?",
			},
		},
		{
			name: "unknown key in merged mapping",
			file: "log:\n  <<: {level: info, colour: red}\n",
			want: []string{"log.colour: line 2: unknown key"},
		},
		{
			name: "durations",
			file: "shutdown_timeout: 15\nsnapshots:\n  interval: \"15\"\nparquet:\n  roll_interval: soon\nkafka:\n  write_timeout: [1s]\n",
			want: []string{
				"shutdown_timeout: line 1: 15 is not a duration; " + durationHint,
				"snapshots.interval: line 3: 15 is not a duration; " + durationHint,
				`parquet.roll_interval: line 5: "soon" is not a duration like 15s, 5m or 1h`,
				"kafka.write_timeout: line 7: want a duration like 15s, 5m or 1h, got a list",
			},
		},
		{
			name: "whole numbers",
			file: "ingest:\n  max_body_bytes: lots\n  rate_burst: 1.5\n  rate_limit_per_hour: 99999999999999999999\nkafka:\n  partitions: {n: 3}\n",
			want: []string{
				`ingest.max_body_bytes: line 2: "lots" is not a whole number`,
				"ingest.rate_burst: line 3: 1.5 is not a whole number",
				"ingest.rate_limit_per_hour: line 4: 99999999999999999999 is out of range (-9223372036854775808 to 9223372036854775807)",
				"kafka.partitions: line 6: want a whole number, got a mapping",
			},
		},
		{
			name: "booleans",
			file: "kafka:\n  tls:\n    enabled: sometimes\n    insecure_skip_verify: [true]\npartners:\n  heap: {enabled: 2}\n",
			want: []string{
				`kafka.tls.enabled: line 3: "sometimes" is not true or false`,
				"kafka.tls.insecure_skip_verify: line 4: want true or false, got a list",
				"partners.heap.enabled: line 6: 2 is not true or false",
			},
		},
		{
			name: "strings",
			file: "data_dir: [a, b]\nlog:\n  level: {x: 1}\n",
			want: []string{
				"data_dir: line 1: want a single value, got a list",
				"log.level: line 3: want a single value, got a mapping",
			},
		},
		{
			name: "lists",
			file: "kafka:\n  brokers: kafka-1:9092\n  client_id: x\n",
			want: []string{"kafka.brokers: line 2: want a list, like [a, b], got a single value"},
		},
		{
			name: "list items",
			file: "kafka:\n  brokers:\n    - kafka-1:9092\n    - {host: kafka-2}\n",
			want: []string{"kafka.brokers[1]: line 4: want a single value, got a mapping"},
		},
		{
			name: "sections",
			file: "log:\n  - debug\nkafka: plenty\npartners: [mixpanel]\npartners_: 1\n",
			want: []string{
				"log: line 2: want a mapping of settings, got a list",
				"kafka: line 3: want a mapping of settings, got a single value",
				"partners: line 4: want a mapping of names to settings, got a list",
				"partners_: line 5: unknown key; did you mean partners?",
			},
		},
		{
			name: "a partner's settings",
			file: "partners:\n  heap: yes\n",
			want: []string{"partners.heap: line 2: want a mapping of settings, got a single value"},
		},
		{
			name: "duplicate key",
			file: "data_dir: /a\ndata_dir: /b\n",
			want: []string{`config file FILE: line 2: mapping key "data_dir" already defined at line 1`},
		},
		{
			name: "malformed file",
			file: "data_dir: [\n",
			want: []string{"config file FILE: yaml: line 1: did not find expected node content"},
		},
		{
			name: "alias that contains itself",
			file: "log: &l\n  <<: *l\n",
			want: []string{"config file FILE: yaml: anchor 'l' value contains itself"},
		},
		{
			name: "bad env values, all named",
			env: map[string]string{
				"COHORTSYNC_SHUTDOWN_TIMEOUT":           "15",
				"COHORTSYNC_KAFKA_PARTITIONS":           "many",
				"COHORTSYNC_INGEST_RATE_LIMIT_PER_HOUR": "1e6",
				"COHORTSYNC_INGEST_RATE_BURST":          "99999999999999999999",
				"COHORTSYNC_KAFKA_TLS_ENABLED":          "yes please",
				"COHORTSYNC_PARTNERS_HEAP_ENABLED":      "maybe",
			},
			want: []string{
				"COHORTSYNC_INGEST_RATE_BURST: 99999999999999999999 is out of range (-9223372036854775808 to 9223372036854775807)",
				"COHORTSYNC_INGEST_RATE_LIMIT_PER_HOUR: 1e6 is not a whole number",
				"COHORTSYNC_KAFKA_PARTITIONS: \"many\" is not a whole number",
				`COHORTSYNC_KAFKA_TLS_ENABLED: "yes please" is not a boolean (true, false, 1, 0)`,
				"COHORTSYNC_SHUTDOWN_TIMEOUT: 15 is not a duration; " + durationHint,
				`COHORTSYNC_PARTNERS_HEAP_ENABLED: "maybe" is not a boolean (true, false, 1, 0)`,
			},
		},
		{
			name: "unknown partner setting",
			env:  map[string]string{"COHORTSYNC_PARTNERS_HEAP_APIKEY": "x"},
			want: []string{"COHORTSYNC_PARTNERS_HEAP_APIKEY: unknown partner setting, want COHORTSYNC_PARTNERS_<NAME>_API_KEY or COHORTSYNC_PARTNERS_<NAME>_ENABLED"},
		},
		{
			name: "partner variable without a name",
			env:  map[string]string{"COHORTSYNC_PARTNERS__API_KEY": "x"},
			want: []string{"COHORTSYNC_PARTNERS__API_KEY: missing partner name"},
		},
		{
			name: "unknown variables, with a suggestion when one name is close",
			env: map[string]string{
				"COHORTSYNC_HTTP_ADR":             "127.0.0.1:1",
				"COHORTSYNC_KAFKA_SASL_PASWORD":   "x",
				"COHORTSYNC_LOG_LEVLE":            "debug",
				"COHORTSYNC_SOMETHING_ELSE":       "x",
				"COHORTSYNC_PARTNER_HEAP_ENABLED": "false",
			},
			want: []string{
				"COHORTSYNC_HTTP_ADR: unknown variable, it sets nothing; did you mean COHORTSYNC_HTTP_ADDR?",
				"COHORTSYNC_KAFKA_SASL_PASWORD: unknown variable, it sets nothing; did you mean COHORTSYNC_KAFKA_SASL_PASSWORD?",
				"COHORTSYNC_LOG_LEVLE: unknown variable, it sets nothing; did you mean COHORTSYNC_LOG_LEVEL?",
				"COHORTSYNC_PARTNER_HEAP_ENABLED: unknown variable, it sets nothing",
				"COHORTSYNC_SOMETHING_ELSE: unknown variable, it sets nothing",
			},
		},
		{
			name: "file and env problems together, file first",
			file: "shutdown_timeout: 15\n",
			env:  map[string]string{"COHORTSYNC_KAFKA_PARTITIONS": "many", "COHORTSYNC_HTTP_ADR": "x"},
			want: []string{
				"shutdown_timeout: line 1: 15 is not a duration; " + durationHint,
				`COHORTSYNC_KAFKA_PARTITIONS: "many" is not a whole number`,
				"COHORTSYNC_HTTP_ADR: unknown variable, it sets nothing; did you mean COHORTSYNC_HTTP_ADDR?",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "cohortsync.yaml")
			var args []string
			if tt.file != "" {
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = []string{"--config", path}
			}
			flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
			BindFlags(flags)
			if err := flags.Parse(args); err != nil {
				t.Fatal(err)
			}
			_, err := Load(LoadOptions{Env: tt.env, Flags: flags})
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			want := strings.ReplaceAll(strings.Join(tt.want, "\n"), "FILE", path)
			if err.Error() != want {
				t.Errorf("Load:\n%v\nwant:\n%s", err, want)
			}
		})
	}
}

// TestLoadKeepsGoing checks that a rejected setting keeps the value of the
// layer below while everything else still applies.
func TestLoadKeepsGoing(t *testing.T) {
	t.Parallel()
	const file = `
shutdown_timeout: 15
http_addr: 10.0.0.1:1000
kafka:
  partitions: 6
  brokers: [a:1, {b: 2}]
  write_timeout: 20s
`
	env := map[string]string{
		"COHORTSYNC_KAFKA_PARTITIONS": "many",
		"COHORTSYNC_DATA_DIR":         "/from/env",
	}
	got, err := load(t, file, env, "--log-level", "warn")
	if err == nil {
		t.Fatal("Load succeeded, want an error")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 3 {
		t.Errorf("want 3 problems, got %d:\n%v", n, err)
	}
	want := Default()
	want.HTTPAddr = "10.0.0.1:1000"
	want.Kafka.Partitions = 6 // the file's, as the env value was rejected
	want.Kafka.WriteTimeout = 20 * time.Second
	want.DataDir = "/from/env"
	want.Log.Level = "warn"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", got, want)
	}
}

// TestLoadAliasesAndMerges checks that anchors, aliases and merge keys work,
// with the mapping's own keys over merged ones and earlier merges over later.
func TestLoadAliasesAndMerges(t *testing.T) {
	t.Parallel()
	const file = `
clickhouse:
  username: &user writer
  dial_timeout: &short 2s
kafka:
  sasl: {mechanism: plain, username: *user}
  write_timeout: *short
  tls: &tls
    enabled: true
    ca_file: /ca.pem
partners:
  heap: &off {enabled: false}
  census: *off
  newtool:
    <<: [{api_key: first-key-0123456789}, {api_key: second-key-0123456789, enabled: false}]
  other:
    <<: *off
    enabled: true
`
	got, err := load(t, file, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.ClickHouse.Username = "writer"
	want.ClickHouse.DialTimeout = 2 * time.Second
	want.Kafka.SASL.Mechanism, want.Kafka.SASL.Username = "plain", "writer"
	want.Kafka.WriteTimeout = 2 * time.Second
	want.Kafka.TLS.Enabled, want.Kafka.TLS.CAFile = true, "/ca.pem"
	want.Partners["heap"] = Partner{}
	want.Partners["census"] = Partner{}
	want.Partners["newtool"] = Partner{APIKey: "first-key-0123456789"}
	want.Partners["other"] = Partner{Enabled: true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", got, want)
	}
}

// TestLoadIgnoresNonConfigEnv checks that the variables other parts of the
// project read are not reported, while one letter off still is.
func TestLoadIgnoresNonConfigEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"COHORTSYNC_MIXPANEL_USERNAME":    "svc",
		"COHORTSYNC_MIXPANEL_SECRET":      "s3cret",
		"COHORTSYNC_IMAGE_TAG":            "0.1.0",
		"COHORTSYNC_TEST_CLICKHOUSE_ADDR": "localhost:9000",
		"COHORTSYNC_BENCH_MEMBERS":        "1000",
		"COHORTSYNC_BENCH_PARQUET_ROOT":   "/tmp/p",
		"COHORTSYNC":                      "not ours: no prefix",
		"OTHER_COHORTSYNC_DATA_DIR":       "not ours either",
	}
	if _, err := Load(LoadOptions{Env: env}); err != nil {
		t.Errorf("Load: %v", err)
	}
	env["COHORTSYNC_MIXPANEL_USER"] = "svc"
	_, err := Load(LoadOptions{Env: env})
	if want := "COHORTSYNC_MIXPANEL_USER: unknown variable, it sets nothing"; err == nil || err.Error() != want {
		t.Errorf("Load: %v, want %s", err, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(LoadOptions{File: filepath.Join(t.TempDir(), "absent.yaml")})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("want a not-exist error, got %v", err)
	}
}

// TestLoadFullFile loads a file that sets every key and checks that each
// scalar setting moved off its default, so the file documents everything.
func TestLoadFullFile(t *testing.T) {
	t.Parallel()
	cfg, err := Load(LoadOptions{File: filepath.Join("testdata", "full.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("testdata/full.yaml is not valid:\n%v", err)
	}
	got, def := reflect.ValueOf(cfg), reflect.ValueOf(Default())
	for _, f := range envFields(got.Type(), EnvPrefix, nil) {
		if reflect.DeepEqual(got.FieldByIndex(f.index).Interface(), def.FieldByIndex(f.index).Interface()) {
			t.Errorf("testdata/full.yaml leaves the setting of %s at its default", f.name)
		}
	}
	if p := cfg.Partners["heap"]; p.Enabled {
		t.Errorf("partners.heap: %+v, want disabled", p)
	}
	if p := cfg.Partners["my_tool"]; !p.Enabled || p.APIKey != "my-tool-key-0123456789" {
		t.Errorf("partners.my_tool: %+v", p)
	}
	if cfg.Kafka.ExportsRetention != 7*24*time.Hour {
		t.Errorf("kafka.exports_retention: %s", cfg.Kafka.ExportsRetention)
	}
}

// TestEnvNames pins the documented variable names and checks that every
// setting has a distinct one whose value type the loader can parse.
func TestEnvNames(t *testing.T) {
	t.Parallel()
	fields := envFields(reflect.TypeFor[Config](), EnvPrefix, nil)
	var names []string
	for _, f := range fields {
		names = append(names, f.name)
	}
	for _, want := range []string{
		"COHORTSYNC_DATA_DIR", "COHORTSYNC_HTTP_ADDR", "COHORTSYNC_ADMIN_TOKEN",
		"COHORTSYNC_LOG_LEVEL", "COHORTSYNC_LOG_FORMAT", "COHORTSYNC_SHUTDOWN_TIMEOUT",
		"COHORTSYNC_KAFKA_BROKERS", "COHORTSYNC_KAFKA_SASL_PASSWORD", "COHORTSYNC_KAFKA_PARTITIONS",
		"COHORTSYNC_KAFKA_TOPICS_EXPORTS", "COHORTSYNC_EMBEDDED_KAFKA_ADDR",
		"COHORTSYNC_CLICKHOUSE_ADDR", "COHORTSYNC_CLICKHOUSE_DATABASE",
		"COHORTSYNC_INGEST_MAX_BODY_BYTES", "COHORTSYNC_INGEST_RATE_LIMIT_PER_HOUR", "COHORTSYNC_INGEST_RATE_BURST",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("no setting is named %s; have %v", want, names)
		}
	}
	if len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("two settings share a variable name: %v", names)
	}

	samples := map[reflect.Kind]string{
		reflect.String: "x", reflect.Bool: "true", reflect.Int: "7", reflect.Slice: "a:1,b:2",
	}
	env := make(map[string]string)
	for _, f := range fields {
		s, ok := samples[f.typ.Kind()]
		if f.typ == durationType {
			s, ok = "3s", true
		}
		if !ok {
			t.Errorf("%s: no sample for %s; teach setFromString and this test the type", f.name, f.typ)
			continue
		}
		env[f.name] = s
	}
	if _, err := Load(LoadOptions{Env: env}); err != nil {
		t.Errorf("setting every variable: %v", err)
	}
}

// TestProjectEnvIsKnown reads the project's own code and deployment files
// and checks that every COHORTSYNC_* variable they use is a setting, a
// partner variable or listed in nonConfigEnv, so Load never reports a
// variable the project itself reads. Test files are left out: they misspell
// names on purpose.
func TestProjectEnvIsKnown(t *testing.T) {
	t.Parallel()
	known := map[string]bool{}
	for _, f := range envFields(reflect.TypeFor[Config](), EnvPrefix, nil) {
		known[f.name] = true
	}
	literal := regexp.MustCompile(`COHORTSYNC_[A-Z0-9_]+`)
	prefixed := regexp.MustCompile(`EnvPrefix\s*\+\s*"([A-Z0-9_]+)"`)
	root := filepath.Join("..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if strings.HasPrefix(name, ".") && path != root || name == "node_modules" || name == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		isGo := strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")
		isDeploy := strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".yaml") || strings.HasPrefix(name, ".env")
		if !isGo && !isDeploy {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		names := literal.FindAllString(string(data), -1)
		for _, m := range prefixed.FindAllStringSubmatch(string(data), -1) {
			names = append(names, EnvPrefix+m[1])
		}
		for _, n := range names {
			if strings.HasSuffix(n, "_") {
				continue // a family such as COHORTSYNC_PARTNERS_<NAME>_API_KEY, cut at the "<"
			}
			if !known[n] && !strings.HasPrefix(n, EnvPrefix+"PARTNERS_") && !isNonConfigEnv(n) {
				t.Errorf("%s uses %s, which Load would report as unknown: make it a setting or add it to nonConfigEnv", path, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
