// Package broker runs an in-process Kafka-protocol broker (franz-go's kfake)
// so that the embedded default speaks the very same kafka-go code path as a
// production deployment, with its log persisted under the data directory.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

// ErrLocked means another process (normally a running `cohortsync serve`) holds the data directory.
var ErrLocked = errors.New("embedded broker: data directory is in use by another cohortsync process")

// Options configures the embedded broker.
type Options struct {
	// DataDir is the cohortsync data directory; the broker keeps its log in DataDir/kafka.
	DataDir string
	// Addr is the listen address, HOST:PORT; port 0 picks a free one.
	Addr string
	// MaxMessageBytes is the broker's message.max.bytes.
	MaxMessageBytes int
	Logger          *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	lock    *os.File
	addrs   []string
}

// Start takes the data directory's lock and starts the broker. Every produce is
// fsynced before it is acknowledged (SyncWrites), so an acknowledged record
// survives a crash of the process.
func Start(ctx context.Context, opts Options) (*Broker, error) {
	if opts.DataDir == "" {
		return nil, errors.New("embedded broker: data dir is required")
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 1 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(opts.Addr); err != nil {
		return nil, fmt.Errorf("embedded broker: addr %q: %w", opts.Addr, err)
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded broker: create data dir: %w", err)
	}
	lock, err := lockDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	listenAddr := opts.Addr
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ClusterID("cohortsync-embedded"),
		kfake.DataDir(filepath.Join(opts.DataDir, "kafka")),
		kfake.SyncWrites(),
		// kfake always asks for 127.0.0.1; honour the configured host and port instead.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, listenAddr) }),
		kfake.BrokerConfigs(map[string]string{
			"message.max.bytes": strconv.Itoa(opts.MaxMessageBytes + 128<<10),
		}),
		kfake.WithLogger(slogAdapter{opts.Logger}),
	)
	if err != nil {
		_ = unlockDir(lock)
		return nil, fmt.Errorf("embedded broker: start broker: %w", err)
	}
	return &Broker{cluster: cluster, lock: lock, addrs: cluster.ListenAddrs()}, nil
}

// Addrs are the bootstrap addresses clients use.
func (b *Broker) Addrs() []string { return b.addrs }

// Close persists the broker's state, stops it and releases the data directory.
func (b *Broker) Close() error {
	b.cluster.Close()
	return unlockDir(b.lock)
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: open lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", ErrLocked, dir)
		}
		return nil, fmt.Errorf("embedded broker: lock %s: %w", dir, err)
	}
	return f, nil
}

func unlockDir(f *os.File) error {
	if f == nil {
		return nil
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return f.Close()
}

// slogAdapter forwards kfake's log lines to slog at the matching level.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Logf(level kfake.LogLevel, msg string, args ...any) {
	text := fmt.Sprintf(msg, args...)
	switch level {
	case kfake.LogLevelError:
		a.log.Error(text, "component", "embedded-kafka")
	case kfake.LogLevelWarn:
		a.log.Warn(text, "component", "embedded-kafka")
	case kfake.LogLevelInfo:
		a.log.Debug(text, "component", "embedded-kafka")
	default:
	}
}
