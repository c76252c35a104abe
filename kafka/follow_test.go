package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/retry"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
)

// recordingFollower keeps its position in memory and records what it is told.
type recordingFollower struct {
	mu         sync.Mutex
	next       int64
	values     []string
	outOfRange [][3]int64
	synced     bool
}

func (f *recordingFollower) Position() int64 { f.mu.Lock(); defer f.mu.Unlock(); return f.next }

func (f *recordingFollower) Fetched(from int64, recs []kafka.TableRecord, complete bool, after, hwm int64, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if from != f.next {
		return fmt.Errorf("fetched from %d, position is %d", from, f.next)
	}
	for _, r := range recs {
		f.values = append(f.values, string(r.Value))
		f.next = r.Offset + 1
	}
	if complete && after > f.next {
		f.next = after
	}
	if complete && f.next >= hwm {
		f.synced = true
	}
	return nil
}

func (f *recordingFollower) OutOfRange(at, first, last int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outOfRange = append(f.outOfRange, [3]int64{at, first, last})
	f.next = first
	return nil
}

func (f *recordingFollower) Interrupted(error) {}

// A follower whose position lies past the end of the log (its topic was
// recreated shorter) is told so with the log's bounds, moves, and then
// reads every record in order to the end.
func TestFollowPartitionRecoversFromAPositionPastTheEnd(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.NewCluster(t)
	client := kafkatest.NewClient(t, brokers, "follow")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := client.Config().Topics.Tokens
	lander := client.NewLander(topic)
	defer lander.Close()
	for i := range 5 {
		if err := lander.Land(ctx, []byte("k"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}

	f := &recordingFollower{next: 100}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		client.FollowPartition(fctx, topic, 0, kafka.FollowOptions{PollWait: 50 * time.Millisecond, Backoff: retry.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}}, f)
	}()
	deadline := time.After(20 * time.Second)
	for {
		f.mu.Lock()
		ok := f.synced && len(f.values) == 5
		f.mu.Unlock()
		if ok {
			break
		}
		select {
		case <-deadline:
			f.mu.Lock()
			t.Fatalf("not caught up: values %v, out of range %v, next %d", f.values, f.outOfRange, f.next)
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	<-done
	if len(f.outOfRange) != 1 || f.outOfRange[0] != [3]int64{100, 0, 5} {
		t.Errorf("OutOfRange calls %v, want one with at=100 first=0 last=5", f.outOfRange)
	}
	if fmt.Sprint(f.values) != "[0 1 2 3 4]" {
		t.Errorf("values %v, want 0..4 in order", f.values)
	}
}
