package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/broker"
	"github.com/cohortsync/cohortsync/stores/keys"
)

// Core is what every command that touches state needs: Kafka (embedded or
// external), the topics, and the key store built from its topic.
type Core struct {
	Broker *broker.Broker // nil with an external Kafka
	Kafka  *kafka.Client
	Keys   *keys.Store
}

// OpenCore starts the embedded broker when no brokers are configured, creates or
// checks the topics and replays the key store. On the embedded default it fails
// with broker.ErrLocked while another process holds the data directory.
func OpenCore(ctx context.Context, cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (*Core, error) {
	core := &Core{}
	kcfg := cfg.Kafka
	if len(kcfg.Brokers) == 0 {
		b, err := broker.Start(ctx, broker.Options{
			DataDir:         cfg.DataDir,
			Addr:            cfg.Embedded.KafkaAddr,
			MaxMessageBytes: kcfg.MaxMessageBytes,
			Logger:          log,
		})
		if err != nil {
			return nil, err
		}
		core.Broker = b
		kcfg.Brokers = b.Addrs()
		// One broker cannot hold more than one replica.
		kcfg.ReplicationFactor = 1
		log.Info("embedded kafka broker started", "addr", b.Addrs(), "data_dir", cfg.DataDir)
	} else if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("service: create data dir: %w", err)
	}

	client, err := kafka.NewClient(kcfg)
	if err != nil {
		return nil, errors.Join(err, core.Close())
	}
	core.Kafka = client
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := client.EnsureTopics(setupCtx, client.StandardTopics()); err != nil {
		return nil, errors.Join(err, core.Close())
	}
	if err := client.CheckMessageSize(setupCtx); err != nil {
		return nil, errors.Join(err, core.Close())
	}
	store, err := keys.Open(setupCtx, client, keys.Options{Logger: log, Registerer: reg})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("service: open key store: %w", err), core.Close())
	}
	core.Keys = store
	return core, nil
}

// kafkaBrokers is what the Kafka client connects to: the embedded broker's
// address on the embedded default.
func (c *Core) kafkaBrokers() []string { return slices.Clone(c.Kafka.Config().Brokers) }

// Close stops the key store, the client and the embedded broker, in that order.
func (c *Core) Close() error {
	var errs []error
	if c.Keys != nil {
		errs = append(errs, c.Keys.Close())
	}
	if c.Kafka != nil {
		c.Kafka.Close()
	}
	if c.Broker != nil {
		errs = append(errs, c.Broker.Close())
	}
	return errors.Join(errs...)
}
