package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default() is not valid:\n%v", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*Config)
		// want holds one substring per expected problem, path first.
		want []string
	}{
		{
			name:   "http_addr without port",
			change: func(c *Config) { c.HTTPAddr = "nonsense" },
			want:   []string{`http_addr: "nonsense" is not HOST:PORT`},
		},
		{
			name:   "http_addr with a named port",
			change: func(c *Config) { c.HTTPAddr = "localhost:http" },
			want:   []string{`http_addr: "localhost:http" is not HOST:PORT (port`},
		},
		{
			name:   "http_addr on every interface is fine",
			change: func(c *Config) { c.HTTPAddr = ":8080" },
		},
		{
			name:   "blank data_dir",
			change: func(c *Config) { c.DataDir = " " },
			want:   []string{"data_dir: must not be empty"},
		},
		{
			name:   "log level and format",
			change: func(c *Config) { c.Log = Log{Level: "verbose", Format: "xml"} },
			want:   []string{`log.level: "verbose"`, `log.format: "xml"`},
		},
		{
			name:   "log level case is ignored",
			change: func(c *Config) { c.Log = Log{Level: "DEBUG", Format: "Text"} },
		},
		{
			name:   "shutdown_timeout",
			change: func(c *Config) { c.ShutdownTimeout = 0 },
			want:   []string{"shutdown_timeout: 0s, must be positive"},
		},
		{
			name: "identity snapshots",
			change: func(c *Config) {
				c.Identities = Identities{SnapshotPath: "/shared/ids", SnapshotInterval: -time.Second, SnapshotMaxAge: 0}
			},
			want: []string{"identities.snapshot_interval: -1s, must not be negative", "identities.snapshot_max_age: 0s, must be positive"},
		},
		{
			name:   "identity snapshot settings unused without a path",
			change: func(c *Config) { c.Identities = Identities{SnapshotMaxAge: 0} },
		},
		{
			name:   "stream batches",
			change: func(c *Config) { c.Stream = Stream{BatchMaxRecords: 0, BatchMaxBytes: 10, BatchMaxWait: 0} },
			want: []string{
				"stream.batch_max_records: 0, must be at least 1",
				"stream.batch_max_bytes: 10, must be at least 1024",
				"stream.batch_max_wait: 0s, must be positive",
			},
		},
		{
			name:   "short admin token",
			change: func(c *Config) { c.AdminToken = "secret" },
			want:   []string{"admin_token: must be at least 16 characters"},
		},
		{
			name: "partners",
			change: func(c *Config) {
				c.Partners["Bad-Name"] = Partner{Enabled: true}
				c.Partners["mixpanel"] = Partner{APIKey: "short", Enabled: true}
				c.Partners["amplitude"] = Partner{APIKey: "shared-key-0123456789", Enabled: true}
				c.Partners["heap"] = Partner{APIKey: "shared-key-0123456789", Enabled: true}
			},
			want: []string{
				`partners.Bad-Name: partner name "Bad-Name" must match ^[a-z][a-z0-9_]*$`,
				"partners.mixpanel.api_key: must be at least 16 characters",
				"partners.heap.api_key: same key as partners.amplitude",
			},
		},
		{
			name: "ingest values must be positive",
			change: func(c *Config) {
				c.Ingest = Ingest{MaxBodyBytes: 0, RateLimitPerHour: -1, RateBurst: 0}
			},
			want: []string{
				"ingest.max_body_bytes: 0, must be positive",
				"ingest.rate_limit_per_hour: -1, must be positive",
				"ingest.rate_burst: 0, must be positive",
			},
		},
		{
			name:   "max body must leave room for the envelope",
			change: func(c *Config) { c.Ingest.MaxBodyBytes = c.Kafka.MaxMessageBytes - envelopeRoom + 1 },
			want:   []string{"ingest.max_body_bytes: 1032193, must be at most kafka.max_message_bytes - 16384 = 1032192"},
		},
		{
			name:   "max body exactly at the limit",
			change: func(c *Config) { c.Ingest.MaxBodyBytes = c.Kafka.MaxMessageBytes - envelopeRoom },
		},
		{
			name: "kafka problems get the kafka. prefix",
			change: func(c *Config) {
				c.Kafka.Partitions = 0
				c.Kafka.Brokers = []string{"nohost"}
			},
			want: []string{"kafka.partitions: 0", `kafka.brokers[0]: "nohost"`},
		},
		{
			name:   "embedded broker address",
			change: func(c *Config) { c.Embedded.KafkaAddr = "127.0.0.1" },
			want:   []string{`embedded.kafka_addr: "127.0.0.1" is not HOST:PORT`},
		},
		{
			name:   "clickhouse",
			change: func(c *Config) { c.ClickHouse.Addr, c.ClickHouse.Database = "ch", "x; DROP TABLE y" },
			want:   []string{`clickhouse.addr: "ch" is not HOST:PORT`, `clickhouse.database: "x; DROP TABLE y"`},
		},
		{
			name:   "clickhouse database needed with an address",
			change: func(c *Config) { c.ClickHouse.Addr, c.ClickHouse.Database = "ch:9000", "" },
			want:   []string{"clickhouse.database: required"},
		},
		{
			name: "clickhouse timeouts and cluster",
			change: func(c *Config) {
				c.ClickHouse.DialTimeout, c.ClickHouse.QueryTimeout, c.ClickHouse.Cluster = 0, -time.Second, "a b"
			},
			want: []string{"clickhouse.dial_timeout: must be positive", "clickhouse.query_timeout: must be positive", `clickhouse.cluster: "a b"`},
		},
		{
			name:   "snapshots",
			change: func(c *Config) { c.Snapshots = Snapshots{} },
			want:   []string{"snapshots.interval: must be positive", "snapshots.kept: must be at least 1"},
		},
		{
			name:   "clickhouse disabled needs no database",
			change: func(c *Config) { c.ClickHouse.Addr, c.ClickHouse.Database = "", "" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			tt.change(&c)
			err := c.Validate()
			got := problemLines(err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !containsPrefixed(got, w) {
					t.Errorf("no problem starts with %q in:\n%v", w, err)
				}
			}
		})
	}
}

// TestValidateReportsEverything breaks many fields at once: one call must
// name all of them, one problem per line.
func TestValidateReportsEverything(t *testing.T) {
	t.Parallel()
	c := Default()
	c.HTTPAddr = "nonsense"
	c.DataDir = ""
	c.Log.Level = "loud"
	c.ShutdownTimeout = -time.Second
	c.Partners["Mixpanel"] = Partner{}
	c.Partners["heap"] = Partner{APIKey: "short"}
	c.Ingest.MaxBodyBytes = 4 << 20
	c.Ingest.RateBurst = 0
	c.Kafka.Partitions = 0
	c.Kafka.WriteTimeout = 0
	c.Embedded.KafkaAddr = ""

	err := c.Validate()
	wantPaths := []string{
		"http_addr:", "data_dir:", "log.level:", "shutdown_timeout:",
		"partners.Mixpanel:", "partners.heap.api_key:",
		"ingest.max_body_bytes:", "ingest.rate_burst:",
		"kafka.partitions:", "kafka.write_timeout:", "embedded.kafka_addr:",
	}
	got := problemLines(err)
	if len(got) != len(wantPaths) {
		t.Errorf("got %d problems, want %d:\n%v", len(got), len(wantPaths), err)
	}
	for _, p := range wantPaths {
		if !containsPrefixed(got, p) {
			t.Errorf("no problem for %s in:\n%v", p, err)
		}
	}
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := Log{Level: "warn", Format: "json"}.NewLogger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("dropped")
	log.Warn("kept", "n", 1, "deadline", 15*time.Second)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("want exactly one JSON record, got %q: %v", buf.String(), err)
	}
	if rec["msg"] != "kept" || rec["level"] != "WARN" || rec["deadline"] != "15s" {
		t.Errorf("record %v, want deadline written as 15s", rec)
	}

	// auto: JSON to anything that is not a terminal, a pipe here.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	log, err = Log{Level: "info", Format: "auto"}.NewLogger(w)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("piped")
	w.Close()
	piped, _ := io.ReadAll(r)
	if err := json.Unmarshal(piped, &rec); err != nil || rec["msg"] != "piped" {
		t.Errorf("auto format to a pipe wrote %q, want JSON", piped)
	}

	buf.Reset()
	log, err = Log{Level: "debug", Format: "text"}.NewLogger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello")
	if !strings.Contains(buf.String(), "level=DEBUG msg=hello") {
		t.Errorf("text record %q", buf.String())
	}

	for _, bad := range []Log{{Level: "loud", Format: "json"}, {Level: "info", Format: "xml"}} {
		if _, err := bad.NewLogger(&buf); err == nil {
			t.Errorf("NewLogger(%+v) succeeded", bad)
		}
	}
}

// problemLines splits a Validate error into its problems.
func problemLines(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, e := range unjoin(err) {
		out = append(out, e.Error())
	}
	// Each problem is one line, so the printed report matches the count.
	if n := strings.Count(err.Error(), "\n") + 1; n != len(out) {
		return append(out, "problems span several lines")
	}
	return out
}

func containsPrefixed(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func TestValidateKeepsKafkaErrorsWrapped(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Kafka.Partitions = 0
	var target error
	for _, e := range unjoin(c.Validate()) {
		if strings.HasPrefix(e.Error(), "kafka.") {
			target = errors.Unwrap(e)
		}
	}
	if target == nil || !strings.HasPrefix(target.Error(), "partitions:") {
		t.Errorf("kafka problem does not wrap kafka.Config's error: %v", target)
	}
}

func TestRetentionCutoff(t *testing.T) {
	t.Parallel()
	cfg := Default()
	if got, err := cfg.Retention.CutoffTime(); err != nil || !got.Equal(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("default cutoff %v, %v", got, err)
	}
	for _, bad := range []string{"2010-01-01", "yesterday", "2999-01-01T00:00:00Z"} {
		cfg.Retention.Cutoff = bad
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "retention.cutoff") {
			t.Errorf("cutoff %q: got %v, want a retention.cutoff problem", bad, err)
		}
	}
}
