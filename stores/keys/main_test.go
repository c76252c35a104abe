package keys

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
)

// testBrokers are the addresses of the package's shared in-process broker. It
// is set once in TestMain and only read afterwards.
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

// newTestClient returns a client whose keys topic is unique to the test, so
// parallel tests never see each other's keys. The topic is created here.
func newTestClient(t *testing.T, brokers []string) *kafka.Client {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	cfg := kafka.DefaultConfig()
	cfg.Brokers = brokers
	cfg.Topics.Keys = "keys." + nonTopicChars.ReplaceAllString(t.Name(), "_") + "." + hex.EncodeToString(b[:])
	client, err := kafka.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	ctx := testkit.Context(t, 20*time.Second)
	var specs []kafka.TopicSpec
	for _, s := range client.StandardTopics() {
		if s.Name == cfg.Topics.Keys {
			specs = append(specs, s)
		}
	}
	if err := client.EnsureTopics(ctx, specs); err != nil {
		t.Fatal(err)
	}
	return client
}

// openStore opens a store on client and closes it when the test ends.
func openStore(t *testing.T, client *kafka.Client, opts Options) *Store {
	t.Helper()
	s, err := Open(testkit.Context(t, 20*time.Second), client, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// eventually polls cond until it holds or d passes, and returns how long it took.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}
