package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// FileName is the store's file inside the data directory.
const FileName = "state.db"

// Config holds the embedded state store's settings. It is not read from the
// configuration file: service fills it from the data directory.
type Config struct {
	// Path of the bbolt file, DATA_DIR/state.db by default.
	Path string `yaml:"path"`
	// OpenTimeout bounds the wait for the file lock: a second process on the
	// same data directory fails with an error instead of hanging.
	OpenTimeout time.Duration `yaml:"open_timeout"`
}

// DefaultConfig returns the defaults for a data directory.
func DefaultConfig(dataDir string) Config {
	return Config{Path: filepath.Join(dataDir, FileName), OpenTimeout: 5 * time.Second}
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
	return errors.Join(errs...)
}
