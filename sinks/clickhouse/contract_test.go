package clickhouse_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/sinks/sinktest"
)

func TestSinkContract(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Subject {
		addr, db := chtest.NewDatabase(t)
		conn := chtest.Open(t, addr)
		// A sink of its own reads the tables, over another connection than
		// the sink under test.
		reader, _ := newSinkAt(t, addr, db)
		return sinktest.Subject{
			Open: func(t *testing.T) pipeline.Sink {
				s, _ := newSinkAt(t, addr, db)
				return s
			},
			Contents: func(t *testing.T, _ pipeline.Sink) string {
				ctx := testkit.DetachedContext(t, 60*time.Second)
				members, err := reader.Members(ctx, "acme", "mixpanel", "churn")
				if err != nil {
					t.Fatal(err)
				}
				dps, err := reader.DataPointTotals(ctx, "acme")
				if err != nil {
					t.Fatal(err)
				}
				rej, err := reader.RejectionTotals(ctx, "acme")
				if err != nil {
					t.Fatal(err)
				}
				q := "`" + db + "`"
				return fmt.Sprintf("members %v\ndata points %+v\nrejections %+v\nchanges %d\ncohorts %d",
					members, dps, rej,
					count(t, conn, "SELECT count() FROM "+q+".membership_changes FINAL"),
					count(t, conn, "SELECT count() FROM "+q+".cohorts FINAL"))
			},
		}
	})
}
