package kafka

import (
	"errors"
	"fmt"
	"time"
)

// GroupConfig configures the consumer-group source of the stream runner.
type GroupConfig struct {
	// GroupID is the Kafka consumer group. Instances with the same id split
	// the partitions of the landing topic between them.
	GroupID string `yaml:"group_id"`
	// BatchMaxRecords, BatchMaxBytes and BatchMaxWait cut batches: a batch
	// is handed out as soon as it holds BatchMaxRecords messages or
	// BatchMaxBytes of keys and values, or BatchMaxWait after its first
	// message arrived. BatchMaxBytes is also the size of one fetch.
	BatchMaxRecords int           `yaml:"batch_max_records"`
	BatchMaxBytes   int           `yaml:"batch_max_bytes"`
	BatchMaxWait    time.Duration `yaml:"batch_max_wait"`
	// MaxInflightBytes bounds what was fetched but not yet acked. Fetching
	// pauses while it is reached, so memory stays under about
	// MaxInflightBytes + BatchMaxBytes whatever the sinks' speed.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`
	// SessionTimeout: a member that sends no heartbeat for this long is
	// removed from the group and its partitions are reassigned.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// RebalanceTimeout is how long the broker waits for every member to
	// rejoin during a rebalance.
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	// DrainTimeout is how long batches already handed out get to be acked
	// (and so committed) when partitions are revoked or the source closes.
	// Acks after that are dropped and their messages delivered again. It
	// must stay below RebalanceTimeout, or the member misses the rebalance.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
}

// DefaultGroupConfig returns the defaults used when a field is not set.
func DefaultGroupConfig() GroupConfig {
	return GroupConfig{
		GroupID:         "cohortsync",
		BatchMaxRecords: 1000,
		BatchMaxBytes:   4 << 20,
		// A second keeps a change visible well within the 5 s contract
		// while cutting, at a steady 20k changes/s, the ClickHouse server's
		// CPU per change by half against 200 ms (docs/PERFORMANCE.md).
		BatchMaxWait:     time.Second,
		MaxInflightBytes: 64 << 20,
		SessionTimeout:   30 * time.Second,
		RebalanceTimeout: 30 * time.Second,
		DrainTimeout:     15 * time.Second,
	}
}

// Validate reports every problem at once, with field paths relative to the
// group section.
func (c GroupConfig) Validate() error {
	var errs []error
	if c.GroupID == "" {
		errs = append(errs, errors.New("group_id: must not be empty"))
	}
	if c.BatchMaxRecords < 1 {
		errs = append(errs, fmt.Errorf("batch_max_records: %d, must be at least 1", c.BatchMaxRecords))
	}
	if c.BatchMaxBytes < 1024 {
		errs = append(errs, fmt.Errorf("batch_max_bytes: %d, must be at least 1024", c.BatchMaxBytes))
	}
	if c.BatchMaxWait <= 0 {
		errs = append(errs, fmt.Errorf("batch_max_wait: %s, must be positive", c.BatchMaxWait))
	}
	if c.MaxInflightBytes < int64(c.BatchMaxBytes) {
		errs = append(errs, fmt.Errorf("max_inflight_bytes: %d, must be at least batch_max_bytes (%d)", c.MaxInflightBytes, c.BatchMaxBytes))
	}
	// Kafka protocol fields are int32 milliseconds.
	const maxMillis = time.Duration(1<<31-1) * time.Millisecond
	if c.SessionTimeout < 100*time.Millisecond || c.SessionTimeout > maxMillis {
		errs = append(errs, fmt.Errorf("session_timeout: %s, must be between 100ms and %s", c.SessionTimeout, maxMillis))
	}
	if c.RebalanceTimeout < 100*time.Millisecond || c.RebalanceTimeout > maxMillis {
		errs = append(errs, fmt.Errorf("rebalance_timeout: %s, must be between 100ms and %s", c.RebalanceTimeout, maxMillis))
	}
	if c.DrainTimeout <= 0 || c.DrainTimeout >= c.RebalanceTimeout {
		errs = append(errs, fmt.Errorf("drain_timeout: %s, must be positive and below rebalance_timeout (%s)", c.DrainTimeout, c.RebalanceTimeout))
	}
	return errors.Join(errs...)
}
