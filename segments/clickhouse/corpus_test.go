package clickhouse_test

import (
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/segments/segmentstest"
)

// TestCorpus asks the shared corpus of filters, as_of instants and data-point
// queries on ClickHouse; segments/embedded runs the same corpus, so the two
// engines must give identical answers.
func TestCorpus(t *testing.T) {
	t.Parallel()
	c := segmentstest.New()
	sink, eng := newPair(t)
	if err := c.Write(testkit.DetachedContext(t, 60*time.Second), sink); err != nil {
		t.Fatal(err)
	}
	segmentstest.Run(t, eng, c)
}
