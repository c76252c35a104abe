package identities

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cohortsync/cohortsync/internal/testkit"
)

// benchUsers builds n identity messages in the shape of the peers
// benchmark's directory: an external id and one device id per user.
func benchUsers(b *testing.B, n int) []Message {
	b.Helper()
	msgs := make([]Message, n)
	for i := range msgs {
		r := Record{UserID: fmt.Sprintf("u-%09d", i), ExternalID: fmt.Sprintf("ext-%09d", i), DeviceIDs: []string{fmt.Sprintf("dev-%09d", i)}}
		v, err := EncodeValue("acme", r)
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = Message{Key: MessageKey("acme", r.UserID), Value: v}
	}
	// Users arrive in hash order on the topic, not sorted.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	return msgs
}

// BenchmarkIndexLoad is a fresh replica catching up: b.N users, in random
// order, spread over COHORTSYNC_BENCH_PARTITIONS partitions (default 4),
// each applied by its own goroutine in fetches of COHORTSYNC_BENCH_FETCH
// records (default 1,000), as the directory's tails do.
//
//	go test -run '^$' -bench IndexLoad -benchtime 200000x ./stores/identities/
//	COHORTSYNC_BENCH_PARTITIONS=12 COHORTSYNC_BENCH_FETCH=8000 go test -run '^$' -bench IndexLoad -benchtime 500000x ./stores/identities/
func BenchmarkIndexLoad(b *testing.B) {
	partitions := testkit.EnvCount(b, "COHORTSYNC_BENCH_PARTITIONS", 4, 1)
	fetch := testkit.EnvCount(b, "COHORTSYNC_BENCH_FETCH", 1000, 1)
	msgs := benchUsers(b, b.N)
	parts := make([][]Message, partitions)
	for i, m := range msgs {
		p := i % partitions
		m.Offset = int64(len(parts[p]))
		parts[p] = append(parts[p], m)
	}
	x, err := OpenIndex(filepath.Join(b.TempDir(), FileName), IndexOptions{Topic: "ids"})
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make([]error, partitions)
	for p := range parts {
		wg.Go(func() {
			for from := 0; from < len(parts[p]); from += fetch {
				to := min(from+fetch, len(parts[p]))
				if _, err := x.Apply(p, parts[p][from:to], int64(to)); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	if n := x.Users(); n != int64(b.N) {
		b.Fatalf("users = %d; want %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "users/s")
}

// BenchmarkIndexLookup is the stream's question, by external id, over a
// directory of 200,000 users, in views of 1,000 lookups as batches make them.
func BenchmarkIndexLookup(b *testing.B) {
	const users = 200_000
	msgs := benchUsers(b, users)
	for i := range msgs {
		msgs[i].Offset = int64(i)
	}
	x, err := OpenIndex(filepath.Join(b.TempDir(), FileName), IndexOptions{Topic: "ids"})
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	for from := 0; from < users; from += 1000 {
		if _, err := x.Apply(0, msgs[from:from+1000], int64(from+1000)); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	ids := make([]string, 100_000)
	for j := range ids {
		ids[j] = fmt.Sprintf("ext-%09d", rng.IntN(users))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += 1000 {
		from := i % len(ids)
		ids := ids[from:min(from+1000, len(ids))]
		err := x.View(func(l Lookup) error {
			for _, id := range ids {
				if _, _, ok := l.LookupExternalID("acme", id); !ok {
					return fmt.Errorf("%s not found", id)
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
