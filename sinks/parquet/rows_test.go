package parquet

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestSortOrders checks the in-place sorts against a plain stable sort by
// the documented columns, on rows with many ties.
func TestSortOrders(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 2, 7, 1000} {
		rows := make([]changeRow, n)
		for i := range rows {
			rows[i] = changeRow{
				Partner: fmt.Sprint("p", r.IntN(3)), CohortID: fmt.Sprint("c", r.IntN(4)),
				UserID: fmt.Sprint("u", r.IntN(20)), Version: int64(r.IntN(5)), RecordID: fmt.Sprint("r", r.IntN(30)),
				Position: int32(r.IntN(6)), Offset: int64(i),
			}
		}
		want := slices.Clone(rows)
		slices.SortStableFunc(want, func(a, b changeRow) int {
			return cmp.Or(strings.Compare(a.Partner, b.Partner), strings.Compare(a.CohortID, b.CohortID),
				strings.Compare(a.UserID, b.UserID), cmp.Compare(a.Version, b.Version))
		})
		got := slices.Clone(rows)
		sortChanges(got)
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: sortChanges differs from the stable sort", n)
		}

		points := make([]dataPointRow, n)
		for i := range rows {
			points[i] = dataPointOf(&rows[i])
		}
		wantDP := slices.Clone(points)
		slices.SortStableFunc(wantDP, func(a, b dataPointRow) int {
			return cmp.Or(strings.Compare(a.Partner, b.Partner), strings.Compare(a.CohortID, b.CohortID),
				strings.Compare(a.RecordID, b.RecordID), cmp.Compare(a.Position, b.Position))
		})
		sortDataPoints(points)
		if !slices.Equal(points, wantDP) {
			t.Fatalf("n=%d: sortDataPoints differs from the stable sort", n)
		}
	}
}
