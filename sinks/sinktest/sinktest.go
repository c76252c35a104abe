// Package sinktest is the contract every pipeline.Sink implementation runs
// in its own tests: redelivery of a batch changes nothing, what Write
// returned for is in the store (and still there after Close and a reopen),
// and a closed sink refuses writes at once with pipeline.ErrSinkClosed.
package sinktest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// Subject is one sink implementation under test.
type Subject struct {
	// Open opens the sink over the test's storage. Called again after
	// Close, it must open the same storage.
	Open func(t *testing.T) pipeline.Sink
	// Contents describes everything the storage holds, as a string that is
	// equal for equal contents. open is the sink currently open on it, for
	// stores that can only be read through their own handle; other
	// implementations read the storage directly (files, tables).
	Contents func(t *testing.T, open pipeline.Sink) string
}

// Run runs the contract as subtests of t. newSubject is called once per
// subtest, so that each starts on empty storage of its own.
func Run(t *testing.T, newSubject func(t *testing.T) Subject) {
	t.Run("RedeliveryChangesNothing", func(t *testing.T) { redelivery(t, newSubject(t)) })
	t.Run("DurableWhenWriteReturns", func(t *testing.T) { durable(t, newSubject(t)) })
	t.Run("ClosedSinkRefusesWrites", func(t *testing.T) { closed(t, newSubject(t)) })
}

func redelivery(t *testing.T, s Subject) {
	sink := s.Open(t)
	t.Cleanup(func() { _ = sink.Close() })
	ctx := testkit.DetachedContext(t, 30*time.Second)
	empty := s.Contents(t, sink)
	if err := sink.Write(ctx, Batch(t, 100)); err != nil {
		t.Fatalf("first delivery: %v", err)
	}
	once := s.Contents(t, sink)
	if once == empty {
		t.Fatal("the first delivery left the storage as it was: Contents sees nothing")
	}
	if err := sink.Write(ctx, Batch(t, 100)); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	if twice := s.Contents(t, sink); twice != once {
		t.Errorf("redelivery changed the storage:\nonce:  %s\ntwice: %s", clip(once), clip(twice))
	}
	// A batch of other records is new data: it must show.
	if err := sink.Write(ctx, Batch(t, 200)); err != nil {
		t.Fatalf("second batch: %v", err)
	}
	if more := s.Contents(t, sink); more == once {
		t.Error("a batch of new records left the storage as it was")
	}
}

func durable(t *testing.T, s Subject) {
	sink := s.Open(t)
	ctx := testkit.DetachedContext(t, 30*time.Second)
	if err := sink.Write(ctx, Batch(t, 100)); err != nil {
		t.Fatal(err)
	}
	seen := s.Contents(t, sink)
	if err := sink.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	again := s.Open(t)
	t.Cleanup(func() { _ = again.Close() })
	if after := s.Contents(t, again); after != seen {
		t.Errorf("after Close and reopen the storage differs from what Write left:\nbefore: %s\nafter:  %s", clip(seen), clip(after))
	}
}

func closed(t *testing.T, s Subject) {
	sink := s.Open(t)
	if err := sink.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// The deadline is generous: a sink that retries instead of refusing
	// fails on the error it returns, not on time.
	err := sink.Write(testkit.DetachedContext(t, 30*time.Second), Batch(t, 100))
	if !errors.Is(err, pipeline.ErrSinkClosed) {
		t.Errorf("Write after Close = %v, want an error matching pipeline.ErrSinkClosed", err)
	}
}

// Batch is the record at offset base of partition 0 and the next one: a
// cohort created, three users added, one of them removed again, one id
// refused, all landed on 2026-11-30. Two calls with the same base are the
// same batch delivered twice.
func Batch(t *testing.T, base int64) *pipeline.Output {
	t.Helper()
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	const ws, partner, cohort = "acme", "mixpanel", "churn"
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	add := func(user string, member bool, offset int64, pos int) {
		b.Append(schemas.ResolvedChange{
			Workspace: ws, Partner: partner, CohortID: cohort, UserID: user,
			IDKind: schemas.IDKindExternalID, IDValue: "ext-" + user, IsMember: member,
			Version: schemas.Version(offset, pos), RecordID: fmt.Sprintf("rec-%d", offset), Position: uint32(pos),
			EventTime: at, ReceivedAt: at, Offset: offset,
		})
	}
	add(fmt.Sprintf("u%d-1", base), true, base+1, 0)
	add(fmt.Sprintf("u%d-2", base), true, base+1, 1)
	add(fmt.Sprintf("u%d-3", base), true, base+1, 2)
	add(fmt.Sprintf("u%d-2", base), false, base+2, 0)
	rej := pipeline.NewRejections()
	rej.AddIDs(pipeline.RejectionKey{Workspace: ws, Partner: partner, CohortID: cohort, RecordID: fmt.Sprintf("rec-%d", base+2), Reason: pipeline.ReasonUnknownUser}, 1)
	out := &pipeline.Output{
		Changes:    b.NewRecordBatch(),
		Rejections: rej,
		Positions:  map[int]pipeline.OffsetRange{0: {First: base, Last: base + 2}},
		Cohorts: []pipeline.Record{{Offset: base, Envelope: schemas.Envelope{
			SchemaVersion: 1, RecordID: fmt.Sprintf("rec-%d", base), Workspace: ws, Partner: partner,
			ReceivedAt: at, EventTime: at,
			Payload: schemas.CohortPayload{CohortID: cohort, Name: "Churn risk", CreatedAt: at.Add(-time.Hour)},
		}}},
	}
	t.Cleanup(out.Changes.Release)
	return out
}

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}
