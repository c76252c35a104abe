// Package service wires the parts of `cohortsync serve` together: the embedded
// or external Kafka, the key store, the HTTP APIs, health and metrics.
package service

import (
	"context"
	"errors"
	"log/slog"

	"github.com/cohortsync/cohortsync/config"
)

// Run serves until ctx is cancelled, then drains and returns.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	_ = ctx
	_ = cfg
	_ = log
	return errors.New("service: not implemented yet")
}
