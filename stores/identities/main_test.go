package identities

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
)

// testBrokers are the addresses of the package's shared in-process broker,
// set once in TestMain and only read afterwards.
var testBrokers []string

func TestMain(m *testing.M) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "start kfake:", err)
		os.Exit(1)
	}
	testBrokers = c.ListenAddrs()
	code := m.Run()
	c.Close()
	os.Exit(code)
}

var nonTopicChars = regexp.MustCompile(`[^a-zA-Z0-9._-]`)

// newTestClient returns a client whose topics are unique to the test (three
// partitions each), created here.
func newTestClient(t testing.TB) *kafka.Client {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	prefix := nonTopicChars.ReplaceAllString(t.Name(), "_") + "." + hex.EncodeToString(b[:])
	return kafkatest.NewClient(t, testBrokers, prefix)
}

// testConfig polls briskly so that tests see landed records quickly.
func testConfig(t *testing.T) Config {
	cfg := DefaultConfig(t.TempDir())
	cfg.PollWait = 50 * time.Millisecond
	cfg.MaxLineBytes = 1024
	cfg.MaxBodyBytes = 8 << 10
	cfg.LandTimeout = 15 * time.Second
	return cfg
}

func newTestLoader(t *testing.T, client *kafka.Client) *Loader {
	t.Helper()
	l, err := NewLoader(client, testConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// land loads NDJSON lines and fails the test on any rejection.
func land(t *testing.T, l *Loader, ws string, lines ...string) {
	t.Helper()
	st, err := l.Load(testkit.Context(t, 20*time.Second), ws, strings.NewReader(strings.Join(lines, "\n")), func(le LineError) {
		t.Errorf("line %d rejected: %s", le.Line, le.Error)
	})
	if err != nil || st.Accepted != int64(len(lines)) {
		t.Fatalf("load: %+v, %v", st, err)
	}
}

func dirPath(t *testing.T) string { return filepath.Join(t.TempDir(), FileName) }

func kafkaMessage(key, value string) kafkago.Message {
	return kafkago.Message{Key: []byte(key), Value: []byte(value)}
}
