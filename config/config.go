// Package config is the configuration of cohortsync: one struct with YAML tags,
// its defaults, loading from a YAML file, COHORTSYNC_* environment variables and
// command-line flags (in that order of precedence), and one validation pass at
// start-up. Load and Validate each report every problem at once, with its key
// path (and the file's line) or its variable, so that a caller joining the two
// shows the user everything to fix in one run. MarshalYAMLText writes a
// configuration back as a file, secrets redacted on request (SecretPaths).
//
// Every setting has an environment variable named after its YAML path,
// upper-cased and joined with "_" behind COHORTSYNC_: kafka.sasl.password is
// COHORTSYNC_KAFKA_SASL_PASSWORD. Lists are comma-separated. Partners, a map,
// use COHORTSYNC_PARTNERS_<NAME>_API_KEY and COHORTSYNC_PARTNERS_<NAME>_ENABLED,
// where NAME, lower-cased, is the partner's name; such a variable can add a
// partner. Any other COHORTSYNC_* variable is reported as unknown unless
// nonConfigEnv lists it. testdata/full.yaml shows every key.
package config

import (
	"fmt"
	"time"

	kafka "github.com/cohortsync/cohortsync/kafka"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
	"github.com/cohortsync/cohortsync/stores/identities"
)

// EnvPrefix starts the name of every environment variable that configures cohortsync.
const EnvPrefix = "COHORTSYNC_"

// DefaultEmbeddedKafkaAddr is where the embedded broker listens unless
// embedded.kafka_addr says otherwise: Kafka's own port, on loopback only.
const DefaultEmbeddedKafkaAddr = "127.0.0.1:9092"

// envelopeRoom is what a landed record may add around the request body it
// carries (schema version, ids, timestamps, JSON escaping of headers). Keeping
// ingest.max_body_bytes this far below kafka.max_message_bytes means a request
// the API accepted can always be landed as one Kafka message.
const envelopeRoom = 16 << 10

// Config is the whole configuration of one cohortsync process.
type Config struct {
	// DataDir holds everything the process keeps on local disk (the embedded
	// broker's log, Parquet output).
	DataDir  string `yaml:"data_dir"`
	HTTPAddr string `yaml:"http_addr"`
	// DebugAddr, when set, serves Go's profiles (/debug/pprof/) on a
	// listener of its own, apart from the API and unauthenticated: keep it
	// on loopback. Empty (the default) serves none.
	DebugAddr string `yaml:"debug_addr"`
	// AdminToken guards the admin API. Empty means the service generates one
	// at first start and keeps it.
	AdminToken      string        `yaml:"admin_token"`
	Log             Log           `yaml:"log"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Partners are keyed by the name used in /partners/{partner}/... paths.
	Partners   Partners     `yaml:"partners"`
	Ingest     Ingest       `yaml:"ingest"`
	Kafka      kafka.Config `yaml:"kafka"`
	Embedded   Embedded     `yaml:"embedded"`
	ClickHouse ClickHouse   `yaml:"clickhouse"`
	Snapshots  Snapshots    `yaml:"snapshots"`
	Parquet    Parquet      `yaml:"parquet"`
	Retention  Retention    `yaml:"retention"`
	Stream     Stream       `yaml:"stream"`
	Identities Identities   `yaml:"identities"`
}

// Identities configures snapshots of the identity directory's replica
// (stores/identities, snapshot.go).
type Identities struct {
	// SnapshotPath is a file on storage every instance mounts; empty turns
	// snapshots off. An instance without a replica starts from it.
	SnapshotPath string `yaml:"snapshot_path"`
	// SnapshotInterval is how often a caught-up instance rewrites it; zero
	// only reads it.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// SnapshotMaxAge is the oldest snapshot a start uses.
	SnapshotMaxAge time.Duration `yaml:"snapshot_max_age"`
}

// IdentityDirectory is the stream's identity directory configuration: the
// data directory's defaults with the snapshot settings.
func (c Config) IdentityDirectory() identities.Config {
	d := identities.DefaultConfig(c.DataDir)
	d.SnapshotPath, d.SnapshotInterval, d.SnapshotMaxAge = c.Identities.SnapshotPath, c.Identities.SnapshotInterval, c.Identities.SnapshotMaxAge
	return d
}

// Stream configures how the stream cuts the landing topic into batches.
// Each batch is one write to every sink and one offset commit, so a larger
// batch costs less per change and makes its first change wait longer.
type Stream struct {
	// BatchMaxRecords, BatchMaxBytes and BatchMaxWait: a batch is handed on
	// as soon as it holds this many records or bytes, or this long after
	// its first record arrived.
	BatchMaxRecords int           `yaml:"batch_max_records"`
	BatchMaxBytes   int           `yaml:"batch_max_bytes"`
	BatchMaxWait    time.Duration `yaml:"batch_max_wait"`
}

// GroupConfig is the stream's consumer-group configuration: the fixed
// defaults with s's batch settings.
func (s Stream) GroupConfig() kafka.GroupConfig {
	g := kafka.DefaultGroupConfig()
	g.BatchMaxRecords, g.BatchMaxBytes, g.BatchMaxWait = s.BatchMaxRecords, s.BatchMaxBytes, s.BatchMaxWait
	return g
}

// Parquet configures the files of the Parquet trees under DATA_DIR/parquet.
type Parquet struct {
	// RollRows is how many acknowledged rows wait in the staging area
	// before they are rolled into the trees as one file per partition.
	RollRows int `yaml:"roll_rows"`
	// RollInterval is the longest a row waits for its roll.
	RollInterval time.Duration `yaml:"roll_interval"`
}

// Log configures the process logger.
type Log struct {
	// Level is one of debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is auto (text on a terminal, JSON elsewhere), json or text.
	Format string `yaml:"format"`
}

// Partners maps a partner's name to its settings.
type Partners map[string]Partner

// Partner is one analytics tool allowed to push cohorts.
type Partner struct {
	// APIKey is the partner_api_key the partner sends. Empty means the
	// service generates one once and keeps it.
	APIKey  string `yaml:"api_key"`
	Enabled bool   `yaml:"enabled"`
}

// Ingest bounds what the partner API accepts.
type Ingest struct {
	MaxBodyBytes     int `yaml:"max_body_bytes"`
	RateLimitPerHour int `yaml:"rate_limit_per_hour"`
	RateBurst        int `yaml:"rate_burst"`
}

// Embedded configures the in-process broker started when kafka.brokers is empty.
type Embedded struct {
	// KafkaAddr is where the embedded broker listens; port 0 picks a free
	// one (tests, which run many brokers at once).
	KafkaAddr string `yaml:"kafka_addr"`
}

// ClickHouse configures the ClickHouse sink and state of record; an empty
// Addr keeps the embedded state store instead.
type ClickHouse struct {
	// Addr is the native-protocol HOST:PORT; several comma-separated
	// addresses are tried in order.
	Addr     string `yaml:"addr"`
	Database string `yaml:"database"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// DialTimeout bounds opening a connection; QueryTimeout every statement.
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// Cluster names the ClickHouse cluster for ON CLUSTER DDL, Replicated
	// engines and Distributed tables; empty means a single server.
	Cluster string `yaml:"cluster"`
	// MigrateOnStart lets serve create or upgrade the tables at start. Turn
	// it off where DDL is run by `cohortsync migrate` in a deploy step.
	MigrateOnStart bool `yaml:"migrate_on_start"`
}

// SinkConfig is the ClickHouse sink's configuration for these settings.
func (c ClickHouse) SinkConfig() chsink.Config {
	out := chsink.DefaultConfig()
	out.Addr, out.Database, out.Cluster = c.Addr, c.Database, c.Cluster
	if c.Username != "" {
		out.Username = c.Username
	}
	out.Password = c.Password
	if c.DialTimeout > 0 {
		out.DialTimeout = c.DialTimeout
	}
	if c.QueryTimeout > 0 {
		out.QueryTimeout = c.QueryTimeout
	}
	return out
}

// Snapshots configures the Parquet member-list snapshots of changed cohorts.
type Snapshots struct {
	// Interval between rounds; a negative value turns timed rounds off
	// (on-demand snapshots still work).
	Interval time.Duration `yaml:"interval"`
	// Kept is how many snapshots of each cohort stay on disk.
	Kept int `yaml:"kept"`
}

// Default returns the configuration used when nothing is set: the embedded
// deployment on one machine.
func Default() Config {
	// Every tool known to speak the cohort import API starts enabled, so a
	// fresh install accepts any of them as soon as a data import key exists.
	partners := make(Partners)
	for _, name := range []string{"mixpanel", "amplitude", "heap", "hightouch", "census", "segment"} {
		partners[name] = newPartner()
	}
	return Config{
		DataDir:         "./data",
		HTTPAddr:        "127.0.0.1:8080",
		Log:             Log{Level: "info", Format: "auto"},
		ShutdownTimeout: 15 * time.Second,
		Partners:        partners,
		Ingest: Ingest{
			MaxBodyBytes:     512 << 10,
			RateLimitPerHour: 250_000,
			RateBurst:        1000,
		},
		Kafka: kafka.DefaultConfig(),
		// A fixed port, so kcat and a second command find the broker
		// without reading the log.
		Embedded: Embedded{KafkaAddr: DefaultEmbeddedKafkaAddr},
		ClickHouse: ClickHouse{
			Database:       "cohortsync",
			Username:       "default",
			DialTimeout:    5 * time.Second,
			QueryTimeout:   60 * time.Second,
			MigrateOnStart: true,
		},
		Snapshots:  Snapshots{Interval: 15 * time.Minute, Kept: 4},
		Parquet:    Parquet{RollRows: 1_000_000, RollInterval: 5 * time.Minute},
		Retention:  Retention{Cutoff: "2010-01-01T00:00:00Z"},
		Stream:     defaultStream(),
		Identities: Identities{SnapshotInterval: 15 * time.Minute, SnapshotMaxAge: 12 * time.Hour},
	}
}

func defaultStream() Stream {
	g := kafka.DefaultGroupConfig()
	return Stream{BatchMaxRecords: g.BatchMaxRecords, BatchMaxBytes: g.BatchMaxBytes, BatchMaxWait: g.BatchMaxWait}
}

// newPartner is the starting point of a partner named in a file or an env var:
// naming a partner is taken as wanting it, so it is enabled unless it says otherwise.
func newPartner() Partner {
	return Partner{Enabled: true}
}

// Retention is the import rule that drops old records (docs/ARCHITECTURE.md, Import rules).
type Retention struct {
	// Cutoff is an RFC 3339 instant: records whose event time is before it
	// are dropped and counted under the reason "retention".
	Cutoff string `yaml:"cutoff"`
}

// CutoffTime parses Cutoff; Validate has already checked it.
func (r Retention) CutoffTime() (time.Time, error) {
	t, err := time.Parse(time.RFC3339, r.Cutoff)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", r.Cutoff)
	}
	return t.UTC(), nil
}
