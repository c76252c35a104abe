package state

import (
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/schemas"
)

func view(t *testing.T, s *Store, fn func(tx *ReadTx)) {
	t.Helper()
	if err := s.View(testkit.DetachedContext(t, 10*time.Second), func(tx *ReadTx) error { fn(tx); return nil }); err != nil {
		t.Fatal(err)
	}
}

// The history keeps every change once, replays add nothing, a record that
// a producer retry landed at a second offset is a new change (not a new
// data point), and the change sequences move only when a change applies.
func TestHistoryAndSequences(t *testing.T) {
	t.Parallel()
	s := openStore(t, "", nil)
	add := change("acme", "c1", "u1", true, 1, 0, t0)
	remove := change("acme", "c1", "u1", false, 2, 0, t0.Add(90*time.Minute+500*time.Millisecond))
	remove.EventTime = t0.Add(time.Hour)
	other := change("acme", "c2", "u2", true, 3, 0, t0)
	first := output(t, []schemas.ResolvedChange{add, remove, other})
	write(t, s, first)

	var wsSeq, c1Seq, c2Seq uint64
	view(t, s, func(tx *ReadTx) {
		wsSeq, c1Seq, c2Seq = tx.WorkspaceSeq("acme"), tx.CohortSeq("acme", "mixpanel", "c1"), tx.CohortSeq("acme", "mixpanel", "c2")
		if wsSeq == 0 || c1Seq != wsSeq || c2Seq != wsSeq {
			t.Errorf("sequences ws %d c1 %d c2 %d, want equal and not 0", wsSeq, c1Seq, c2Seq)
		}
		h, err := tx.UserHistory("acme", "mixpanel", "c1", "u1")
		if err != nil || len(h) != 2 || h[0].Version != add.Version || !h[0].IsMember || h[1].IsMember ||
			h[1].EventMicros != remove.EventTime.UnixMicro() || h[1].ReceivedMicros != remove.ReceivedAt.UnixMicro() || string(h[1].RecordID) != "rec-2" {
			t.Errorf("history of u1 = %+v %v", h, err)
		}
		times, err := tx.SyncTimes("acme", "mixpanel", "c1")
		if err != nil || len(times) != 2 || !times[0].Equal(t0) || !times[1].Equal(t0.Add(90*time.Minute)) {
			t.Errorf("sync times %v %v, want %v and %v (whole seconds)", times, err, t0, t0.Add(90*time.Minute))
		}
	})

	write(t, s, first) // a redelivery
	view(t, s, func(tx *ReadTx) {
		if tx.WorkspaceSeq("acme") != wsSeq || tx.CohortSeq("acme", "mixpanel", "c1") != c1Seq {
			t.Error("a redelivery moved the change sequence")
		}
	})

	// A producer retry lands record 2 again at offset 5: same record id
	// and position, a new version.
	retry := remove
	retry.Offset, retry.Version = 5, schemas.Version(5, 0)
	write(t, s, output(t, []schemas.ResolvedChange{retry}))
	view(t, s, func(tx *ReadTx) {
		if got := tx.CohortSeq("acme", "mixpanel", "c1"); got <= c1Seq {
			t.Errorf("c1 sequence %d after an applied change, was %d", got, c1Seq)
		}
		if got := tx.CohortSeq("acme", "mixpanel", "c2"); got != c2Seq {
			t.Errorf("c2 sequence %d moved without a change to c2", got)
		}
		h, err := tx.UserHistory("acme", "mixpanel", "c1", "u1")
		if err != nil || len(h) != 3 || h[2].Version != retry.Version {
			t.Errorf("history after the retry = %+v %v", h, err)
		}
		var n int
		err = tx.ForEachHistory("acme", "mixpanel", "c1", func(user []byte, e HistoryEntry) error {
			if string(user) != "u1" {
				t.Errorf("history user %q", user)
			}
			n++
			return nil
		})
		if err != nil || n != 3 {
			t.Errorf("ForEachHistory: %d entries, %v", n, err)
		}
		var users []string
		for cur := tx.Users("acme", "mixpanel", "c2"); cur.Next(); {
			users = append(users, string(cur.User())+map[bool]string{true: "+", false: "-"}[cur.IsMember()])
		}
		if len(users) != 1 || users[0] != "u2+" {
			t.Errorf("users of c2 = %q", users)
		}
		if ok, err := tx.Known("acme", "u2"); !ok || err != nil {
			t.Errorf("Known(u2) = %v %v", ok, err)
		}
		if ok, _ := tx.Known("beta", "u2"); ok {
			t.Error("u2 known in another workspace")
		}
	})
	if bill, _ := totals(dataPoints(t, s, "acme")); bill != 3 {
		t.Errorf("billable %d after the retry, want 3: a retried record is billed once", bill)
	}
}

// A user id with NUL bytes round-trips through the history keys.
func TestHistoryOfOddUserIDs(t *testing.T) {
	t.Parallel()
	s := openStore(t, "", nil)
	for i, u := range []string{"a\x00b", "a", "a\x00", "\x00"} {
		write(t, s, output(t, []schemas.ResolvedChange{change("acme", "c1", u, true, int64(i), 0, t0)}))
	}
	view(t, s, func(tx *ReadTx) {
		var got []string
		err := tx.ForEachHistory("acme", "mixpanel", "c1", func(user []byte, _ HistoryEntry) error {
			got = append(got, string(user))
			return nil
		})
		want := []string{"\x00", "a", "a\x00", "a\x00b"}
		if err != nil || len(got) != 4 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
			t.Errorf("history users %q %v, want %q", got, err, want)
		}
		if h, err := tx.UserHistory("acme", "mixpanel", "c1", "a"); err != nil || len(h) != 1 || string(h[0].RecordID) != "rec-1" {
			t.Errorf("history of %q = %+v %v", "a", h, err)
		}
	})
}
