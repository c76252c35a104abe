package identities

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// FileName is the replica's file inside the data directory.
const FileName = "identities.db"

// Config holds the identity directory's settings. It is not read from the
// configuration file: service fills it from the data directory.
type Config struct {
	// Path of the replica's bbolt file, DATA_DIR/identities.db by default.
	Path string `yaml:"path"`
	// OpenTimeout bounds the wait for the file lock: a second process on the
	// same data directory fails with an error instead of hanging.
	OpenTimeout time.Duration `yaml:"open_timeout"`
	// PollWait is how long one fetch of a partition may wait at the broker
	// for new records; it bounds how late a landed identity becomes visible.
	PollWait time.Duration `yaml:"poll_wait"`
	// MaxStaleness is how long a partition's tail may go without confirming
	// that it has read to the end before Healthy reports an error.
	MaxStaleness time.Duration `yaml:"max_staleness"`
	// MaxBodyBytes bounds one request to the identities endpoint (413 above).
	// The body is read whole before anything lands, so a request either
	// lands line by line or is refused entirely.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxLineBytes bounds one NDJSON line; a longer line is rejected. It must
	// leave room for the record's framing within a Kafka message.
	MaxLineBytes int `yaml:"max_line_bytes"`
	// LandTimeout bounds the landing of one request or one batch of a load.
	LandTimeout time.Duration `yaml:"land_timeout"`
	// CatchUpStall is how long Open's catch-up may go without applying a
	// record before it fails. A large directory takes as long as it takes
	// while it makes progress; only a stuck one fails the start.
	CatchUpStall time.Duration `yaml:"catch_up_stall"`
	// SnapshotPath, when set, is a file on storage the instances share
	// (snapshot.go): an instance without a replica starts from it, and a
	// caught-up instance rewrites it every SnapshotInterval (zero: never).
	// A snapshot older than SnapshotMaxAge is not used.
	SnapshotPath     string        `yaml:"snapshot_path"`
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	SnapshotMaxAge   time.Duration `yaml:"snapshot_max_age"`
}

// DefaultConfig returns the defaults for a data directory.
func DefaultConfig(dataDir string) Config {
	return Config{
		Path:         filepath.Join(dataDir, FileName),
		OpenTimeout:  5 * time.Second,
		PollWait:     200 * time.Millisecond,
		MaxStaleness: 10 * time.Second,
		MaxBodyBytes: 16 << 20,
		MaxLineBytes: 64 << 10,
		LandTimeout:  60 * time.Second,
		CatchUpStall: 60 * time.Second,
		// Used only with a SnapshotPath.
		SnapshotInterval: 15 * time.Minute,
		SnapshotMaxAge:   12 * time.Hour,
	}
}

// Validate reports every problem at once, with paths relative to the section.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Path) == "" {
		errs = append(errs, errors.New("path: must not be empty"))
	}
	if c.OpenTimeout <= 0 {
		errs = append(errs, fmt.Errorf("open_timeout: %s, must be positive", c.OpenTimeout))
	}
	if c.PollWait <= 0 {
		errs = append(errs, fmt.Errorf("poll_wait: %s, must be positive", c.PollWait))
	}
	if c.CatchUpStall <= 0 {
		errs = append(errs, fmt.Errorf("catch_up_stall: %s, must be positive", c.CatchUpStall))
	}
	if c.MaxStaleness <= c.PollWait {
		errs = append(errs, fmt.Errorf("max_staleness: %s, must exceed poll_wait (%s)", c.MaxStaleness, c.PollWait))
	}
	if c.MaxLineBytes < 1024 {
		errs = append(errs, fmt.Errorf("max_line_bytes: %d, must be at least 1024", c.MaxLineBytes))
	}
	if c.MaxBodyBytes < int64(c.MaxLineBytes) {
		errs = append(errs, fmt.Errorf("max_body_bytes: %d, must be at least max_line_bytes (%d)", c.MaxBodyBytes, c.MaxLineBytes))
	}
	if c.SnapshotPath != "" {
		if c.SnapshotInterval < 0 {
			errs = append(errs, fmt.Errorf("snapshot_interval: %s, must not be negative", c.SnapshotInterval))
		}
		if c.SnapshotMaxAge <= 0 {
			errs = append(errs, fmt.Errorf("snapshot_max_age: %s, must be positive", c.SnapshotMaxAge))
		}
		if filepath.Clean(c.SnapshotPath) == filepath.Clean(c.Path) {
			errs = append(errs, errors.New("snapshot_path: must not be the replica's own file"))
		}
	}
	if c.LandTimeout <= 0 {
		errs = append(errs, fmt.Errorf("land_timeout: %s, must be positive", c.LandTimeout))
	}
	return errors.Join(errs...)
}
