package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Client bundles the brokers, one shared transport (for writers and admin
// requests) and a dialer (for readers), all built from one Config so TLS and
// SASL are set in exactly one place.
type Client struct {
	cfg       Config
	transport *kafkago.Transport
	dialer    *kafkago.Dialer
	admin     *kafkago.Client
}

// NewClient builds the transport and dialer for cfg. cfg.Brokers must be set
// (the embedded broker fills them in before this is called).
func NewClient(cfg Config) (*Client, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafka: no brokers configured")
	}
	tlsCfg, err := buildTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	mech, err := buildSASL(cfg.SASL)
	if err != nil {
		return nil, err
	}
	transport := &kafkago.Transport{
		ClientID: cfg.ClientID,
		TLS:      tlsCfg,
		SASL:     mech,
		// kafka-go caches metadata for 6 s by default; topics we create are used
		// right away, so refresh sooner.
		MetadataTTL: time.Second,
	}
	dialer := &kafkago.Dialer{
		ClientID:      cfg.ClientID,
		Timeout:       10 * time.Second,
		DualStack:     true,
		TLS:           tlsCfg,
		SASLMechanism: mech,
	}
	return &Client{
		cfg:       cfg,
		transport: transport,
		dialer:    dialer,
		admin:     &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: transport, Timeout: 10 * time.Second},
	}, nil
}

// Config returns the configuration the client was built from.
func (c *Client) Config() Config { return c.cfg }

// Transport is shared by every writer and admin request of the process.
func (c *Client) Transport() *kafkago.Transport { return c.transport }

// Dialer is for kafka-go Readers, which do not take a Transport.
func (c *Client) Dialer() *kafkago.Dialer { return c.dialer }

// Admin is a request client over the shared transport.
func (c *Client) Admin() *kafkago.Client { return c.admin }

// Close releases idle connections.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// TopicSpec describes a topic cohortsync needs.
type TopicSpec struct {
	Name       string
	Partitions int
	Configs    map[string]string
}

// StandardTopics lists the topics of a deployment with their retention settings:
// the landing log is time-retained, the directories, keys, tokens and saved segments are compacted.
func (c *Client) StandardTopics() []TopicSpec {
	t := c.cfg.Topics
	retention := strconv.FormatInt(c.cfg.ExportsRetention.Milliseconds(), 10)
	maxBytes := strconv.Itoa(c.cfg.MaxMessageBytes + 64<<10)
	return []TopicSpec{
		{Name: t.Exports, Partitions: c.cfg.Partitions, Configs: map[string]string{
			"cleanup.policy": "delete", "retention.ms": retention, "max.message.bytes": maxBytes}},
		{Name: t.DeadLetter, Partitions: 1, Configs: map[string]string{
			"cleanup.policy": "delete", "retention.ms": retention, "max.message.bytes": maxBytes}},
		{Name: t.Identities, Partitions: c.cfg.Partitions, Configs: map[string]string{
			"cleanup.policy": "compact", "retention.ms": "-1"}},
		{Name: t.Keys, Partitions: 1, Configs: map[string]string{
			"cleanup.policy": "compact", "retention.ms": "-1"}},
		// Tables (OpenTable) read one partition.
		{Name: t.Tokens, Partitions: 1, Configs: map[string]string{
			"cleanup.policy": "compact", "retention.ms": "-1"}},
		{Name: t.Segments, Partitions: 1, Configs: map[string]string{
			"cleanup.policy": "compact", "retention.ms": "-1"}},
	}
}

// EnsureTopics creates the topics that do not exist and checks that all of them
// are visible in the cluster metadata afterwards. Existing topics are left as they are.
func (c *Client) EnsureTopics(ctx context.Context, specs []TopicSpec) error {
	req := &kafkago.CreateTopicsRequest{}
	for _, s := range specs {
		tc := kafkago.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: c.cfg.ReplicationFactor}
		for k, v := range s.Configs {
			tc.ConfigEntries = append(tc.ConfigEntries, kafkago.ConfigEntry{ConfigName: k, ConfigValue: v})
		}
		req.Topics = append(req.Topics, tc)
	}
	resp, err := c.admin.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("kafka: create topics: %w", err)
	}
	for name, terr := range resp.Errors {
		if terr != nil && !errors.Is(terr, kafkago.TopicAlreadyExists) {
			return fmt.Errorf("kafka: create topic %s: %w", name, terr)
		}
	}
	return c.waitTopics(ctx, specs)
}

func (c *Client) waitTopics(ctx context.Context, specs []TopicSpec) error {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	for {
		md, err := c.admin.Metadata(ctx, &kafkago.MetadataRequest{Topics: names})
		if err == nil {
			missing := ""
			for _, t := range md.Topics {
				if t.Error != nil || len(t.Partitions) == 0 {
					missing = t.Name
					break
				}
			}
			if missing == "" && len(md.Topics) == len(names) {
				return nil
			}
			err = fmt.Errorf("topic %s not ready", missing)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: check topics: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// BrokerMaxMessageBytes asks a broker for its message.max.bytes.
func (c *Client) BrokerMaxMessageBytes(ctx context.Context) (int, error) {
	md, err := c.admin.Metadata(ctx, &kafkago.MetadataRequest{})
	if err != nil {
		return 0, fmt.Errorf("kafka: metadata: %w", err)
	}
	if len(md.Brokers) == 0 {
		return 0, errors.New("kafka: metadata lists no brokers")
	}
	b := md.Brokers[0]
	resp, err := c.admin.DescribeConfigs(ctx, &kafkago.DescribeConfigsRequest{
		Resources: []kafkago.DescribeConfigRequestResource{{
			ResourceType: kafkago.ResourceTypeBroker,
			ResourceName: strconv.Itoa(b.ID),
			ConfigNames:  []string{"message.max.bytes"},
		}},
	})
	if err != nil {
		return 0, fmt.Errorf("kafka: describe broker configs: %w", err)
	}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return 0, fmt.Errorf("kafka: describe broker %d configs: %w", b.ID, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "message.max.bytes" {
				n, err := strconv.Atoi(e.ConfigValue)
				if err != nil {
					return 0, fmt.Errorf("kafka: broker message.max.bytes %q: %w", e.ConfigValue, err)
				}
				return n, nil
			}
		}
	}
	return 0, errors.New("kafka: broker did not report message.max.bytes")
}

// CheckMessageSize fails when the configured batch size would not fit the broker's limit.
func (c *Client) CheckMessageSize(ctx context.Context) error {
	limit, err := c.BrokerMaxMessageBytes(ctx)
	if err != nil {
		return err
	}
	if c.cfg.MaxMessageBytes > limit {
		return fmt.Errorf("kafka: max_message_bytes %d exceeds the broker's message.max.bytes %d: lower kafka.max_message_bytes", c.cfg.MaxMessageBytes, limit)
	}
	return nil
}

// Writer returns a writer for one topic with acks from every in-sync replica.
func (c *Client) Writer(topic string) *kafkago.Writer {
	return &kafkago.Writer{
		Addr:      kafkago.TCP(c.cfg.Brokers...),
		Topic:     topic,
		Transport: c.transport,
		// kafka-go's default is acks=0, which loses data silently.
		RequiredAcks: kafkago.RequireAll,
		// Murmur2 places keys exactly as the Java client does, so other producers
		// of the same key land on the same partition.
		Balancer:     &kafkago.Murmur2Balancer{},
		BatchTimeout: c.cfg.BatchTimeout,
		BatchBytes:   int64(c.cfg.MaxMessageBytes),
		BatchSize:    1000,
		WriteTimeout: c.cfg.WriteTimeout,
		MaxAttempts:  5,
	}
}

// DialContext opens a connection to the first reachable broker, for callers that
// need the low-level Conn API (offsets, partitions).
func (c *Client) DialContext(ctx context.Context) (*kafkago.Conn, error) {
	var last error
	for _, b := range c.cfg.Brokers {
		conn, err := c.dialer.DialContext(ctx, "tcp", b)
		if err == nil {
			return conn, nil
		}
		last = err
	}
	return nil, fmt.Errorf("kafka: dial brokers: %w", last)
}

func buildTLS(cfg TLSConfig) (*tls.Config, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // opt-in for test clusters
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka: tls.ca_file %s: no certificates found", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func buildSASL(cfg SASLConfig) (sasl.Mechanism, error) {
	switch cfg.Mechanism {
	case "":
		return nil, nil
	case "plain":
		return plain.Mechanism{Username: cfg.Username, Password: cfg.Password}, nil
	case "scram-sha-256":
		m, err := scram.Mechanism(scram.SHA256, cfg.Username, cfg.Password)
		if err != nil {
			return nil, fmt.Errorf("kafka: sasl: %w", err)
		}
		return m, nil
	case "scram-sha-512":
		m, err := scram.Mechanism(scram.SHA512, cfg.Username, cfg.Password)
		if err != nil {
			return nil, fmt.Errorf("kafka: sasl: %w", err)
		}
		return m, nil
	default:
		return nil, fmt.Errorf("kafka: sasl mechanism %q not supported", cfg.Mechanism)
	}
}
