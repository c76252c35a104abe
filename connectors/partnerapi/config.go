package partnerapi

import (
	"errors"
	"fmt"
	"time"
)

// Config bounds what the partner API accepts.
type Config struct {
	// MaxBodyBytes is the largest request body accepted; larger ones get 413.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// RateLimitPerHour is the sustained request rate allowed per workspace,
	// counted over both endpoints, of requests that authenticated.
	RateLimitPerHour int `yaml:"rate_limit_per_hour"`
	// RateBurst is how many requests a workspace may send at once after a quiet period.
	RateBurst int `yaml:"rate_burst"`
	// MaxRecordBytes caps the landed record. Set it at or under what the
	// Kafka writer accepts, so that a request too big to land is refused with
	// 413 (the partner's fault, not worth retrying) instead of failing with a
	// 503 that the partner would retry forever. Zero means 1 MiB.
	MaxRecordBytes int `yaml:"max_record_bytes"`
	// LandTimeout bounds the wait for the landing acks of one request. Zero
	// means 10s.
	LandTimeout time.Duration `yaml:"land_timeout"`
}

const (
	defaultMaxRecordBytes = 1 << 20
	defaultLandTimeout    = 10 * time.Second
)

// DefaultConfig returns the limits of the reference service.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:     512 << 10,
		RateLimitPerHour: 250_000,
		RateBurst:        1000,
		MaxRecordBytes:   defaultMaxRecordBytes,
		LandTimeout:      defaultLandTimeout,
	}
}

// Validate reports every problem at once, each naming its field.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("max_body_bytes: must be positive, got %d", c.MaxBodyBytes))
	}
	if c.RateLimitPerHour <= 0 {
		errs = append(errs, fmt.Errorf("rate_limit_per_hour: must be positive, got %d", c.RateLimitPerHour))
	}
	if c.RateBurst <= 0 {
		errs = append(errs, fmt.Errorf("rate_burst: must be positive, got %d", c.RateBurst))
	}
	if c.MaxRecordBytes < 0 {
		errs = append(errs, fmt.Errorf("max_record_bytes: must not be negative, got %d", c.MaxRecordBytes))
	}
	if c.LandTimeout < 0 {
		errs = append(errs, fmt.Errorf("land_timeout: must not be negative, got %s", c.LandTimeout))
	}
	return errors.Join(errs...)
}

// withDefaults fills the fields whose zero value means "the default".
func (c Config) withDefaults() Config {
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = defaultMaxRecordBytes
	}
	if c.LandTimeout == 0 {
		c.LandTimeout = defaultLandTimeout
	}
	return c
}
