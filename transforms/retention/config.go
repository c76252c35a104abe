package retention

import (
	"errors"
	"fmt"
	"time"
)

// DefaultCutoff is the retention cutoff of the import rules (docs/ARCHITECTURE.md, Import rules).
var DefaultCutoff = time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)

// Config holds the retention stage's settings; service builds it from the
// configuration's retention section (config.Retention), parsing the cutoff.
type Config struct {
	// Cutoff drops records whose event time is before it. An RFC 3339 time in
	// YAML, e.g. 2010-01-01T00:00:00Z.
	Cutoff time.Time `yaml:"cutoff"`
}

// DefaultConfig returns the import rule's cutoff.
func DefaultConfig() Config { return Config{Cutoff: DefaultCutoff} }

// Validate reports every problem at once, with paths relative to the section.
// A cutoff in the future is refused: it would drop every record that arrives,
// which is never what anyone meant.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Cutoff.IsZero():
		errs = append(errs, errors.New("cutoff: must be set (the import rule is 2010-01-01T00:00:00Z)"))
	case c.Cutoff.After(time.Now()):
		errs = append(errs, fmt.Errorf("cutoff: %s is in the future and would drop every record", c.Cutoff.UTC().Format(time.RFC3339)))
	}
	return errors.Join(errs...)
}
