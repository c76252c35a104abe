package parquet

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config holds the Parquet sink's settings; service fills it from the data
// directory and the snapshots section. Zero fields take
// their defaults (WithDefaults). Field paths in Validate are relative to this
// struct.
type Config struct {
	// Root is the directory that holds changes/, datapoints/ and
	// snapshots/; the service sets it to DATA_DIR/parquet.
	Root string `yaml:"root"`
	// DictionaryMaxBytes caps each column's dictionary per row group. Past
	// it a column falls back to PLAIN for the rest of the row group: without
	// the cap the high-cardinality user_id and id_value dictionaries cost
	// more memory and time than they save (docs/ARCHITECTURE.md, Measured facts).
	DictionaryMaxBytes int64 `yaml:"dictionary_max_bytes"`
	// PageBufferBytes is the uncompressed size a column buffers before it
	// writes a page. Smaller pages prune finer through the page index; the
	// dictionary cap is checked after each page.
	PageBufferBytes int `yaml:"page_buffer_bytes"`
	// MaxRowsPerRowGroup bounds a row group, which parquet-go buffers in
	// memory until it is full.
	MaxRowsPerRowGroup int64 `yaml:"max_rows_per_row_group"`
	// StaleTempAge: temporary files older than this, left by a crash in the
	// middle of a write, are removed when the sink opens. It is an age and
	// not "all of them" because on shared storage another instance may be
	// writing one right now. A negative age disables the sweep.
	StaleTempAge time.Duration `yaml:"stale_temp_age"`
	// RollRows is how many staged rows of one Kafka partition trigger its
	// roll into the trees: the size of the files (Kafka Connect's
	// flush.size, also per partition). A roll streams, holding one row
	// group per Hive partition it writes, so this bounds no memory.
	RollRows int `yaml:"roll_rows"`
	// RollInterval is the longest a staged row waits for its roll, so a
	// slow stream still shows up in the trees (rotate.interval.ms).
	RollInterval time.Duration `yaml:"roll_interval"`
	// SnapshotsKept is how many snapshots of each cohort stay on disk; older
	// ones are removed after a newer one is durable.
	SnapshotsKept int `yaml:"snapshots_kept"`
}

// DefaultConfig returns the defaults; Root is left for the caller.
func DefaultConfig() Config {
	return Config{
		DictionaryMaxBytes: 1 << 20,
		PageBufferBytes:    256 << 10,
		MaxRowsPerRowGroup: 128 << 10,
		StaleTempAge:       time.Hour,
		SnapshotsKept:      4,
		RollRows:           1_000_000,
		RollInterval:       5 * time.Minute,
	}
}

// Validate reports every problem at once, each naming its field.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Root) == "" {
		errs = append(errs, errors.New("root: must not be empty"))
	}
	if c.DictionaryMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("dictionary_max_bytes: must not be negative, got %d", c.DictionaryMaxBytes))
	}
	if c.PageBufferBytes < 0 {
		errs = append(errs, fmt.Errorf("page_buffer_bytes: must not be negative, got %d", c.PageBufferBytes))
	}
	if c.MaxRowsPerRowGroup < 0 {
		errs = append(errs, fmt.Errorf("max_rows_per_row_group: must not be negative, got %d", c.MaxRowsPerRowGroup))
	}
	if c.RollRows < 0 {
		errs = append(errs, fmt.Errorf("roll_rows: must not be negative, got %d", c.RollRows))
	}
	if c.RollInterval < 0 {
		errs = append(errs, fmt.Errorf("roll_interval: must not be negative, got %s", c.RollInterval))
	}
	if c.SnapshotsKept < 0 {
		errs = append(errs, fmt.Errorf("snapshots_kept: must not be negative, got %d", c.SnapshotsKept))
	}
	return errors.Join(errs...)
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.DictionaryMaxBytes == 0 {
		c.DictionaryMaxBytes = d.DictionaryMaxBytes
	}
	if c.PageBufferBytes == 0 {
		c.PageBufferBytes = d.PageBufferBytes
	}
	if c.MaxRowsPerRowGroup == 0 {
		c.MaxRowsPerRowGroup = d.MaxRowsPerRowGroup
	}
	if c.StaleTempAge == 0 {
		c.StaleTempAge = d.StaleTempAge
	}
	if c.RollRows == 0 {
		c.RollRows = d.RollRows
	}
	if c.RollInterval == 0 {
		c.RollInterval = d.RollInterval
	}
	if c.SnapshotsKept == 0 {
		c.SnapshotsKept = d.SnapshotsKept
	}
	return c
}
