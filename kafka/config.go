// Package kafka holds the kafka-go plumbing every part of cohortsync shares:
// one transport (TLS, SASL) per process, topic creation and checks through that
// transport, and a writer that only reports success once every in-sync replica
// has the record.
package kafka

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Topic names. They are configurable so that several deployments can share a cluster.
type Topics struct {
	Exports    string `yaml:"exports"`
	Identities string `yaml:"identities"`
	DeadLetter string `yaml:"deadletter"`
	Keys       string `yaml:"keys"`
	Tokens     string `yaml:"tokens"`
	Segments   string `yaml:"segments"`
}

// TLSConfig configures TLS towards the brokers.
type TLSConfig struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASLConfig configures SASL authentication towards the brokers.
type SASLConfig struct {
	// Mechanism is one of "", "plain", "scram-sha-256", "scram-sha-512".
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// Config is the Kafka section of the cohortsync configuration.
type Config struct {
	// Brokers are the bootstrap addresses. Empty means: start the embedded broker.
	Brokers  []string   `yaml:"brokers"`
	ClientID string     `yaml:"client_id"`
	TLS      TLSConfig  `yaml:"tls"`
	SASL     SASLConfig `yaml:"sasl"`
	Topics   Topics     `yaml:"topics"`
	// Partitions of cohortsync.exports when cohortsync creates it.
	Partitions int `yaml:"partitions"`
	// ReplicationFactor for topics cohortsync creates; -1 leaves it to the broker.
	ReplicationFactor int `yaml:"replication_factor"`
	// ExportsRetention is retention.ms of cohortsync.exports: how far back a replay can go.
	ExportsRetention time.Duration `yaml:"exports_retention"`
	// MaxMessageBytes caps one produce batch; it must stay under the broker's
	// message.max.bytes, which the writer checks at start.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// BatchTimeout bounds how long a write waits for more records to share its batch.
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// WriteTimeout bounds one write including its acks.
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// DefaultConfig returns the defaults used when a field is not set.
func DefaultConfig() Config {
	return Config{
		ClientID: "cohortsync",
		Topics: Topics{
			Exports:    "cohortsync.exports",
			Identities: "cohortsync.identities",
			DeadLetter: "cohortsync.deadletter",
			Keys:       "cohortsync.keys",
			Tokens:     "cohortsync.tokens",
			Segments:   "cohortsync.segments",
		},
		Partitions:        12,
		ReplicationFactor: -1,
		ExportsRetention:  30 * 24 * time.Hour,
		MaxMessageBytes:   1 << 20,
		BatchTimeout:      2 * time.Millisecond,
		WriteTimeout:      10 * time.Second,
	}
}

// Validate reports every problem of c at once; field paths are relative to the kafka section.
func (c Config) Validate() error {
	var errs []error
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" || !strings.Contains(b, ":") {
			errs = append(errs, fmt.Errorf("brokers[%d]: %q is not HOST:PORT", i, b))
		}
	}
	switch c.SASL.Mechanism {
	case "", "plain", "scram-sha-256", "scram-sha-512":
	default:
		errs = append(errs, fmt.Errorf("sasl.mechanism: %q is not one of plain, scram-sha-256, scram-sha-512", c.SASL.Mechanism))
	}
	if c.SASL.Mechanism != "" && c.SASL.Username == "" {
		errs = append(errs, errors.New("sasl.username: required when sasl.mechanism is set"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls.cert_file, tls.key_file: set both or neither"))
	}
	for name, t := range map[string]string{"exports": c.Topics.Exports, "identities": c.Topics.Identities, "deadletter": c.Topics.DeadLetter, "keys": c.Topics.Keys, "tokens": c.Topics.Tokens, "segments": c.Topics.Segments} {
		if t == "" {
			errs = append(errs, fmt.Errorf("topics.%s: must not be empty", name))
		}
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions: %d, must be at least 1", c.Partitions))
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 {
		errs = append(errs, fmt.Errorf("replication_factor: %d, must be -1 (broker default) or at least 1", c.ReplicationFactor))
	}
	if c.ExportsRetention < time.Hour {
		errs = append(errs, fmt.Errorf("exports_retention: %s, must be at least 1h", c.ExportsRetention))
	}
	if c.MaxMessageBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("max_message_bytes: %d, must be at least 65536", c.MaxMessageBytes))
	}
	if c.BatchTimeout <= 0 {
		errs = append(errs, errors.New("batch_timeout: must be positive"))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, errors.New("write_timeout: must be positive"))
	}
	return errors.Join(errs...)
}
