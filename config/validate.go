package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// minSecretLen is the shortest api_key or admin_token accepted: anything
// shorter is guessable, and generated values are far longer anyway.
const minSecretLen = 16

var (
	partnerNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	// The ClickHouse database name is written into DDL, where identifiers
	// cannot be bound as parameters, so only plain identifiers are allowed.
	identifierRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// problems collects validation errors, each prefixed with its field path.
type problems []error

func (p *problems) add(path string, err error) {
	*p = append(*p, fmt.Errorf("%s: %w", path, err))
}

func (p *problems) addf(path, format string, args ...any) {
	p.add(path, fmt.Errorf(format, args...))
}

// Validate checks the whole configuration in one pass and returns every
// problem at once (joined with errors.Join), each prefixed with its field path
// such as "http_addr: ..." or "kafka.partitions: ...", so that one start-up
// shows the user everything to fix.
func (c Config) Validate() error {
	var p problems
	if strings.TrimSpace(c.DataDir) == "" {
		p.addf("data_dir", "must not be empty")
	}
	if err := checkHostPort(c.HTTPAddr); err != nil {
		p.add("http_addr", err)
	}
	if c.DebugAddr != "" {
		if err := checkHostPort(c.DebugAddr); err != nil {
			p.add("debug_addr", err)
		}
	}
	if c.AdminToken != "" && len(c.AdminToken) < minSecretLen {
		p.addf("admin_token", "must be at least %d characters when set (leave it empty to have one generated)", minSecretLen)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		p.add("log.level", err)
	}
	if err := checkFormat(c.Log.Format); err != nil {
		p.add("log.format", err)
	}
	if c.ShutdownTimeout <= 0 {
		p.addf("shutdown_timeout", "%s, must be positive", c.ShutdownTimeout)
	}
	if t, err := c.Retention.CutoffTime(); err != nil {
		p.add("retention.cutoff", err)
	} else if t.After(time.Now()) {
		p.addf("retention.cutoff", "%s is in the future: every record would be dropped", c.Retention.Cutoff)
	}
	c.validatePartners(&p)
	c.validateIngest(&p)
	if err := c.Kafka.Validate(); err != nil {
		// kafka.Config reports paths relative to its own section.
		for _, e := range unjoin(err) {
			p = append(p, fmt.Errorf("kafka.%w", e))
		}
	}
	if err := checkHostPort(c.Embedded.KafkaAddr); err != nil {
		p.add("embedded.kafka_addr", err)
	}
	if c.ClickHouse.Addr != "" {
		if err := checkHostPort(c.ClickHouse.Addr); err != nil {
			p.add("clickhouse.addr", err)
		}
	}
	if c.ClickHouse.Database == "" {
		if c.ClickHouse.Addr != "" {
			p.addf("clickhouse.database", "required when clickhouse.addr is set")
		}
	} else if !identifierRE.MatchString(c.ClickHouse.Database) {
		p.addf("clickhouse.database", "%q must be letters, digits and _, not starting with a digit", c.ClickHouse.Database)
	}
	if c.ClickHouse.DialTimeout <= 0 {
		p.addf("clickhouse.dial_timeout", "must be positive, got %s", c.ClickHouse.DialTimeout)
	}
	if c.ClickHouse.QueryTimeout <= 0 {
		p.addf("clickhouse.query_timeout", "must be positive, got %s", c.ClickHouse.QueryTimeout)
	}
	if c.ClickHouse.Cluster != "" && !identifierRE.MatchString(c.ClickHouse.Cluster) {
		p.addf("clickhouse.cluster", "%q must be letters, digits and _, not starting with a digit", c.ClickHouse.Cluster)
	}
	if c.Snapshots.Interval == 0 {
		p.addf("snapshots.interval", "must be positive, or negative to turn timed snapshots off")
	}
	if c.Snapshots.Kept < 1 {
		p.addf("snapshots.kept", "must be at least 1, got %d", c.Snapshots.Kept)
	}
	if c.Parquet.RollRows < 1 {
		p.addf("parquet.roll_rows", "must be at least 1, got %d", c.Parquet.RollRows)
	}
	if c.Parquet.RollInterval <= 0 {
		p.addf("parquet.roll_interval", "must be positive, got %s", c.Parquet.RollInterval)
	}
	// Only the snapshot and batch settings come from the file; the
	// directory's and the group's own checks name them relative to their
	// sections.
	if err := c.IdentityDirectory().Validate(); err != nil {
		for _, e := range unjoin(err) {
			p = append(p, fmt.Errorf("identities.%w", e))
		}
	}
	if err := c.Stream.GroupConfig().Validate(); err != nil {
		for _, e := range unjoin(err) {
			p = append(p, fmt.Errorf("stream.%w", e))
		}
	}
	return errors.Join(p...)
}

func (c Config) validatePartners(p *problems) {
	names := make([]string, 0, len(c.Partners))
	for name := range c.Partners {
		names = append(names, name)
	}
	slices.Sort(names) // map order would shuffle the report between runs
	keyOwner := make(map[string]string)
	for _, name := range names {
		path := "partners." + name
		if !partnerNameRE.MatchString(name) {
			p.addf(path, "partner name %q must match %s", name, partnerNameRE)
		}
		key := c.Partners[name].APIKey
		if key == "" {
			continue
		}
		// Messages never quote the key: it is a secret.
		if len(key) < minSecretLen {
			p.addf(path+".api_key", "must be at least %d characters when set (leave it empty to have one generated)", minSecretLen)
		}
		if owner, dup := keyOwner[key]; dup {
			p.addf(path+".api_key", "same key as partners.%s; the key identifies the partner, so each needs its own", owner)
		} else {
			keyOwner[key] = name
		}
	}
}

func (c Config) validateIngest(p *problems) {
	in := c.Ingest
	if in.MaxBodyBytes <= 0 {
		p.addf("ingest.max_body_bytes", "%d, must be positive", in.MaxBodyBytes)
	} else if limit := c.Kafka.MaxMessageBytes - envelopeRoom; in.MaxBodyBytes > limit {
		p.addf("ingest.max_body_bytes", "%d, must be at most kafka.max_message_bytes - %d = %d so that an accepted request fits one Kafka message",
			in.MaxBodyBytes, envelopeRoom, limit)
	}
	if in.RateLimitPerHour <= 0 {
		p.addf("ingest.rate_limit_per_hour", "%d, must be positive", in.RateLimitPerHour)
	}
	if in.RateBurst <= 0 {
		p.addf("ingest.rate_burst", "%d, must be positive", in.RateBurst)
	}
}

// checkHostPort accepts what net.Listen and net.Dial take as a TCP address with
// a numeric port; an empty host means every interface, port 0 a free port.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("%q is not HOST:PORT (%s)", addr, ae.Err)
		}
		return fmt.Errorf("%q is not HOST:PORT: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q is not HOST:PORT (port %q is not a number from 0 to 65535)", addr, port)
	}
	return nil
}

// unjoin splits an errors.Join result into its parts, so that each part can
// get its own prefix; any other error is one part.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
