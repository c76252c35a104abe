package pipeline

import (
	"errors"
	"fmt"
	"time"

	"github.com/cohortsync/cohortsync/internal/retry"
)

// RunnerConfig holds the runner's tunables, as they appear in the
// configuration file.
type RunnerConfig struct {
	// DrainTimeout bounds how long the runner keeps working on the batches it
	// holds after its context ends. Batches not acked by then are delivered
	// again to whoever consumes the partitions next.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Retry paces the retries of a failing stage (a sink, a transform, the
	// resolver, the dead letter). A failing stage is retried until it
	// succeeds or the runner stops: data is never dropped for an error.
	Retry Backoff `yaml:"retry"`
}

// Backoff is the runner's wait between attempts: Initial after the first
// failure, doubling after each further failure up to Max.
type Backoff = retry.Backoff

// DefaultRunnerConfig returns the defaults used when a field is not set.
func DefaultRunnerConfig() RunnerConfig {
	return RunnerConfig{
		DrainTimeout: 10 * time.Second,
		// Max bounds how long a stage whose cause is gone (ClickHouse
		// back, a disk freed) stays failing: the next attempt is at most
		// 5 s away. An attempt every 5 s is no load on a store that is down.
		Retry: Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second},
	}
}

// withDefaults fills zero fields from DefaultRunnerConfig.
func (c RunnerConfig) withDefaults() RunnerConfig {
	d := DefaultRunnerConfig()
	if c.DrainTimeout == 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	if c.Retry.Initial == 0 {
		c.Retry.Initial = d.Retry.Initial
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = max(d.Retry.Max, c.Retry.Initial)
	}
	return c
}

// Validate reports every problem at once, with field paths relative to the
// runner section.
func (c RunnerConfig) Validate() error {
	var errs []error
	if c.DrainTimeout <= 0 {
		errs = append(errs, fmt.Errorf("drain_timeout: %s, must be positive", c.DrainTimeout))
	}
	if c.Retry.Initial <= 0 {
		errs = append(errs, fmt.Errorf("retry.initial: %s, must be positive", c.Retry.Initial))
	}
	if c.Retry.Max < c.Retry.Initial {
		errs = append(errs, fmt.Errorf("retry.max: %s, must be at least retry.initial (%s)", c.Retry.Max, c.Retry.Initial))
	}
	return errors.Join(errs...)
}
