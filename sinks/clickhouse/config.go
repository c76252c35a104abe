package clickhouse

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cohortsync/cohortsync/internal/retry"
)

// identifierRE is what a database or cluster name may look like: both are
// written into DDL, where identifiers cannot be bound as parameters.
var identifierRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Config is the clickhouse section of the cohortsync configuration.
type Config struct {
	// Addr is the native-protocol HOST:PORT (9000 by default on the server);
	// several comma-separated addresses are tried in order. The HTTP protocol
	// is not used: it does not work against ClickHouse 18.16.
	Addr string `yaml:"addr"`
	// Database holds every table; it is created by Migrate.
	Database string `yaml:"database"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// DialTimeout bounds opening one connection.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// QueryTimeout bounds every single statement or insert attempt.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// Cluster, when set, makes Migrate issue ON CLUSTER DDL with Replicated
	// engines and Distributed tables in front of them; the sink then writes
	// through the Distributed tables.
	Cluster string `yaml:"cluster"`
	Retry   Retry  `yaml:"retry"`
}

// Retry is the capped exponential backoff between attempts of a write the
// server did not take. A write is retried until its context ends.
type Retry = retry.Backoff

// DefaultConfig returns the defaults of every field but Addr.
func DefaultConfig() Config {
	return Config{
		Database:     "cohortsync",
		Username:     "default",
		DialTimeout:  5 * time.Second,
		QueryTimeout: 60 * time.Second,
		Retry:        Retry{Initial: 200 * time.Millisecond, Max: 10 * time.Second},
	}
}

// WithDefaults returns c with every zero field set to its default, so that a
// configuration that names only addr and database is complete.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Database == "" {
		c.Database = d.Database
	}
	if c.Username == "" {
		c.Username = d.Username
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.QueryTimeout == 0 {
		c.QueryTimeout = d.QueryTimeout
	}
	if c.Retry.Initial == 0 {
		c.Retry.Initial = d.Retry.Initial
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = d.Retry.Max
	}
	return c
}

// Addrs splits Addr into its addresses.
func (c Config) Addrs() []string {
	var out []string
	for a := range strings.SplitSeq(c.Addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Validate reports every problem of c at once; field paths are relative to
// the clickhouse section.
func (c Config) Validate() error {
	var errs []error
	addrs := c.Addrs()
	if len(addrs) == 0 {
		errs = append(errs, errors.New("addr: required"))
	}
	for _, a := range addrs {
		if err := checkHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("addr: %q: %w", a, err))
		}
	}
	if !identifierRE.MatchString(c.Database) {
		errs = append(errs, fmt.Errorf("database: %q must be letters, digits and _, not starting with a digit", c.Database))
	}
	if c.Cluster != "" && !identifierRE.MatchString(c.Cluster) {
		errs = append(errs, fmt.Errorf("cluster: %q must be letters, digits and _, not starting with a digit", c.Cluster))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dial_timeout: %s, must be positive", c.DialTimeout))
	}
	if c.QueryTimeout <= 0 {
		errs = append(errs, fmt.Errorf("query_timeout: %s, must be positive", c.QueryTimeout))
	}
	if c.Retry.Initial <= 0 {
		errs = append(errs, fmt.Errorf("retry.initial: %s, must be positive", c.Retry.Initial))
	}
	if c.Retry.Max < c.Retry.Initial {
		errs = append(errs, fmt.Errorf("retry.max: %s, must be at least retry.initial (%s)", c.Retry.Max, c.Retry.Initial))
	}
	return errors.Join(errs...)
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want HOST:PORT")
	}
	if host == "" {
		return errors.New("host is empty")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not 1-65535", port)
	}
	return nil
}
