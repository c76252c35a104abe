package clickhouse_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

// waitHealthy polls s.Healthy until its answer is want (nil or not).
func waitHealthy(t *testing.T, s *chsink.Sink, healthy bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := s.Healthy()
		if (err == nil) == healthy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Healthy() = %v after %s, want healthy=%v", err, within, healthy)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServerRestartMidStream stops the server in the middle of a stream of
// batches and starts it again, twice: once while the sink is idle after a
// write gave up (the runner redelivers that batch), once while a write is
// waiting for it. Nothing is lost or counted twice.
func TestServerRestartMidStream(t *testing.T) {
	t.Parallel()
	srv := chtest.StartPrivateServer(t)
	db := chtest.NewDatabaseAt(t, srv.Addr)
	s, reg := newSinkAt(t, srv.Addr, db)
	const ws, p, c = "ws", "mixpanel", "c"

	// Six records: each adds four new users and removes the first user the
	// previous one added.
	var (
		batches     []*pipeline.Output
		wantMembers []string
		wantTotal   uint64
	)
	for i := range 6 {
		var ids []change
		if i > 0 {
			ids = append(ids, removes(fmt.Sprintf("u%d_0", i-1))...)
		}
		for j := range 4 {
			ids = append(ids, adds(fmt.Sprintf("u%d_%d", i, j))...)
		}
		rej := pipeline.NewRejections()
		rej.AddIDs(pipeline.RejectionKey{Workspace: ws, Partner: p, CohortID: c, RecordID: fmt.Sprintf("r%d", i), Reason: pipeline.ReasonUnknownUser}, 2)
		batches = append(batches, output(t, []record{{ws, p, c, fmt.Sprintf("r%d", i), int64(100 + i), day1, ids}}, nil, rej))
		wantTotal += uint64(len(ids))
	}
	for i := range 6 {
		for j := range 4 {
			if j == 0 && i < 5 {
				continue // removed by the next record
			}
			wantMembers = append(wantMembers, fmt.Sprintf("u%d_%d", i, j))
		}
	}
	slices.Sort(wantMembers)

	write := func(i int) {
		t.Helper()
		if err := s.Write(testkit.DetachedContext(t, 60*time.Second), batches[i]); err != nil {
			t.Fatalf("write batch %d: %v", i, err)
		}
	}
	write(0)
	write(1)

	// Outage 1: a write retries until its deadline, then gives up.
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	err := s.Write(ctx, batches[2])
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write during outage = %v, want it to end with the context deadline", err)
	}
	if herr := s.Healthy(); herr == nil || !strings.Contains(herr.Error(), "unavailable since") {
		t.Errorf("Healthy() during outage = %v, want the outage", herr)
	}
	if f := metric(t, reg, "cohortsync_clickhouse_insert_failures_total", "membership_changes"); f < 2 {
		t.Errorf("insert_failures_total = %v, want several retries", f)
	}
	// Idle: the sink notices the server is back without any write.
	srv.Start()
	waitHealthy(t, s, true, 10*time.Second)
	write(2) // the runner redelivers the batch that was not acked

	// Outage 2: a write waits for the server while Healthy reports it.
	write(3)
	srv.Stop()
	done := make(chan error, 1)
	go func() { done <- s.Write(testkit.DetachedContext(t, 60*time.Second), batches[4]) }()
	waitHealthy(t, s, false, 10*time.Second)
	select {
	case err := <-done:
		t.Fatalf("write returned during the outage: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	srv.Start()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write across the outage: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("write did not finish after the server came back")
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() after recovery = %v", err)
	}
	write(5)
	write(4) // and one more redelivery, out of order

	members, err := s.Members(testkit.DetachedContext(t, 60*time.Second), ws, p, c)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(members, wantMembers) {
		t.Errorf("members = %v\nwant %v", members, wantMembers)
	}
	totals, err := s.DataPointTotals(testkit.DetachedContext(t, 60*time.Second), ws)
	if err != nil {
		t.Fatal(err)
	}
	if len(totals) != 1 || totals[0].Total != wantTotal || totals[0].Removes != 5 {
		t.Errorf("data point totals = %+v, want %d with 5 removes", totals, wantTotal)
	}
	rej, err := s.RejectionTotals(testkit.DetachedContext(t, 60*time.Second), ws)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 1 || rej[0].IDs != 12 || rej[0].Reason != pipeline.ReasonUnknownUser {
		t.Errorf("rejection totals = %+v, want 12 unknown_user ids", rej)
	}
}

// TestRefusedBatchRetriesUntilAccepted: a server that answers but refuses
// the insert (here: a table is missing) gets the batch retried, is reported
// by Healthy meanwhile, and takes the batch once the cause is fixed.
func TestRefusedBatchRetriesUntilAccepted(t *testing.T) {
	t.Parallel()
	s, reg := newSink(t)
	conn := chtest.Open(t, s.Config().Addr)
	if err := conn.Exec(testkit.DetachedContext(t, 60*time.Second), "DROP TABLE `"+s.Config().Database+"`.data_points"); err != nil {
		t.Fatal(err)
	}
	const ws = "ws"
	out := output(t, []record{{ws, "mixpanel", "c", "r1", 5, day1, concat(adds("a", "b"), removes("c"))}}, nil, nil)
	done := make(chan error, 1)
	go func() { done <- s.Write(testkit.DetachedContext(t, 60*time.Second), out) }()

	waitHealthy(t, s, false, 10*time.Second)
	if err := s.Healthy(); err == nil || !strings.Contains(err.Error(), "data_points") {
		t.Errorf("Healthy() = %v, want the refused insert's error", err)
	}
	// Pings succeed all along; the outage lasts until an insert is taken.
	time.Sleep(1500 * time.Millisecond)
	if err := s.Healthy(); err == nil {
		t.Error("Healthy() = nil while inserts are still refused")
	}
	select {
	case err := <-done:
		t.Fatalf("write returned while the table is missing: %v", err)
	default:
	}

	// The operator creates the table again.
	for _, stmt := range chsink.Statements(s.Config()) {
		if strings.Contains(stmt, "`data_points`") {
			if err := conn.Exec(testkit.DetachedContext(t, 60*time.Second), stmt); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("write did not finish after the table came back")
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() after the fix = %v", err)
	}
	totals, err := s.DataPointTotals(testkit.DetachedContext(t, 60*time.Second), ws)
	if err != nil {
		t.Fatal(err)
	}
	if len(totals) != 1 || totals[0].Total != 3 || totals[0].Removes != 1 {
		t.Errorf("data point totals = %+v, want 3 with 1 remove", totals)
	}
	// The history insert is the one refused: its view into data_points has
	// nowhere to write.
	if f := metric(t, reg, "cohortsync_clickhouse_insert_failures_total", "membership_changes"); f < 2 {
		t.Errorf("insert_failures_total{membership_changes} = %v, want retries counted", f)
	}
}
