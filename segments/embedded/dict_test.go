package embedded

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// The bitmaps the dictionary's merge collects must be the ones a walk of
// each cohort along the finished dictionary gives (buildNow), or a first
// query would answer differently from a later one.
// Both ways of merging are covered: by scanning a few cursors' heads, and
// through the heap past smallMerge cohorts.
func TestBuildDictCollectsEveryCohortsMembers(t *testing.T) {
	t.Parallel()
	for _, n := range []int{smallMerge - 3, 3 * smallMerge} {
		t.Run(fmt.Sprintf("cohorts=%d", n), func(t *testing.T) {
			t.Parallel()
			checkBuildDict(t, n)
		})
	}
}

func checkBuildDict(t *testing.T, n int) {
	s, err := state.Open(state.DefaultConfig(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 11))
	at := time.Date(2024, 11, 4, 9, 0, 0, 0, time.UTC)
	cohorts := []string{"empty-after-removes"}
	for i := 1; i < n; i++ {
		cohorts = append(cohorts, fmt.Sprintf("c%02d", i))
	}
	for offset := range int64(10 * n) {
		cb := schemas.NewChangesBuilder(nil)
		c := cohorts[rng.IntN(len(cohorts))]
		for pos := range 200 {
			u := fmt.Sprintf("u%04d", rng.IntN(3000))
			cb.Append(schemas.ResolvedChange{
				Workspace: "acme", Partner: "mixpanel", CohortID: c, UserID: u,
				IDKind: schemas.IDKindExternalID, IDValue: u,
				IsMember: c != "empty-after-removes" && rng.IntN(4) != 0,
				Version:  schemas.Version(offset, pos), RecordID: fmt.Sprintf("rec-%d", offset), Position: uint32(pos),
				EventTime: at, ReceivedAt: at, Offset: offset,
			})
		}
		out := &pipeline.Output{Changes: cb.NewRecordBatch(), Rejections: pipeline.NewRejections()}
		cb.Release()
		err := s.Write(ctx, out)
		out.Changes.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	err = s.View(ctx, func(tx *state.ReadTx) error {
		b, err := buildDict(ctx, tx, "acme", 1)
		if err != nil {
			return err
		}
		d := b.dict
		for i := 1; i < d.len(); i++ {
			if bytes.Compare(d.at(i-1), d.at(i)) >= 0 {
				t.Fatalf("dictionary out of order at %d: %q then %q", i, d.at(i-1), d.at(i))
			}
		}
		if d.len() < 2000 {
			t.Fatalf("dictionary of %d users, want most of 3,000", d.len())
		}
		nonEmpty := 0
		for k, got := range b.members {
			want, ok, err := buildNow(ctx, tx, "acme", k, d)
			if err != nil || !ok {
				t.Fatalf("buildNow(%v): ok %v, %v", k, ok, err)
			}
			if !got.Equals(want) {
				t.Errorf("cohort %v: merge collected %d members, the walk finds %d", k, got.GetCardinality(), want.GetCardinality())
			}
			if b.covered[k] != tx.CohortSeq("acme", k.partner, k.id) {
				t.Errorf("cohort %v: covered at %d, store at %d", k, b.covered[k], tx.CohortSeq("acme", k.partner, k.id))
			}
			if !got.IsEmpty() {
				nonEmpty++
			}
		}
		if len(b.members) != n || nonEmpty < n-1 {
			t.Errorf("%d cohorts, %d with members; want %d, all but one with members", len(b.members), nonEmpty, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
