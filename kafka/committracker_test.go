package kafka

import (
	"testing"
)

type trackOp struct {
	kind        string // deliver, ack, rewind, revoke, assign
	p           int
	first, last int64
	wantOK      bool
}

func TestCommitTracker(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// start is the committed offset of every partition at assignment.
		start int64
		ops   []trackOp
		// want is the commit point per partition at the end; missing means revoked.
		want map[int]int64
	}{
		{
			name:  "in order",
			start: 0,
			ops: []trackOp{
				{kind: "deliver", p: 0, first: 0, last: 9},
				{kind: "deliver", p: 0, first: 10, last: 19},
				{kind: "ack", p: 0, first: 0, wantOK: true},
				{kind: "ack", p: 0, first: 10, wantOK: true},
			},
			want: map[int]int64{0: 20},
		},
		{
			name:  "out of order acks wait for the gap",
			start: 100,
			ops: []trackOp{
				{kind: "deliver", p: 0, first: 100, last: 109},
				{kind: "deliver", p: 0, first: 110, last: 119},
				{kind: "deliver", p: 0, first: 120, last: 129},
				{kind: "ack", p: 0, first: 120, wantOK: true},
				{kind: "ack", p: 0, first: 110, wantOK: true},
			},
			// 100..109 is still unacked: nothing may be committed past it.
			want: map[int]int64{0: 100},
		},
		{
			name:  "out of order acks complete",
			start: 100,
			ops: []trackOp{
				{kind: "deliver", p: 0, first: 100, last: 109},
				{kind: "deliver", p: 0, first: 110, last: 119},
				{kind: "deliver", p: 0, first: 120, last: 129},
				{kind: "ack", p: 0, first: 120, wantOK: true},
				{kind: "ack", p: 0, first: 100, wantOK: true},
			},
			want: map[int]int64{0: 110},
		},
		{
			name:  "offset gaps between ranges (compaction) do not block",
			start: 0,
			ops: []trackOp{
				{kind: "deliver", p: 0, first: 0, last: 4},
				{kind: "deliver", p: 0, first: 9, last: 12},
				{kind: "ack", p: 0, first: 9, wantOK: true},
				{kind: "ack", p: 0, first: 0, wantOK: true},
			},
			want: map[int]int64{0: 13},
		},
		{
			name:  "partitions are independent",
			start: 0,
			ops: []trackOp{
				{kind: "deliver", p: 0, first: 0, last: 4},
				{kind: "deliver", p: 1, first: 0, last: 2},
				{kind: "deliver", p: 1, first: 3, last: 5},
				{kind: "ack", p: 1, first: 3, wantOK: true},
				{kind: "ack", p: 0, first: 0, wantOK: true},
			},
			want: map[int]int64{0: 5, 1: 0},
		},
		{
			name:  "ack for a lost partition is dropped",
			start: 0,
			ops: []trackOp{
				{kind: "deliver", p: 0, first: 0, last: 4},
				{kind: "deliver", p: 1, first: 0, last: 4},
				{kind: "revoke", p: 1, wantOK: true},
				{kind: "ack", p: 1, first: 0, wantOK: false},
				{kind: "ack", p: 0, first: 0, wantOK: true},
			},
			want: map[int]int64{0: 5},
		},
		{
			name:  "ack from before a reassignment is dropped",
			start: 0,
			ops: []trackOp{
				{kind: "deliver", p: 0, first: 0, last: 4},
				{kind: "revoke", p: 0, wantOK: true},
				{kind: "assign", p: 0, first: 0},
				{kind: "deliver", p: 0, first: 0, last: 2},
				// The stale ack carries the old epoch.
				{kind: "ack-old", p: 0, first: 0, wantOK: false},
			},
			want: map[int]int64{0: 0},
		},
		{
			name:  "rewind drops unsettled ranges and restarts at the commit point",
			start: 0,
			ops: []trackOp{
				{kind: "deliver", p: 0, first: 0, last: 4},
				{kind: "deliver", p: 0, first: 5, last: 9},
				{kind: "deliver", p: 0, first: 10, last: 14},
				{kind: "ack", p: 0, first: 0, wantOK: true},
				{kind: "rewind", p: 0, first: 5, wantOK: true},
				{kind: "ack-old", p: 0, first: 10, wantOK: false},
				{kind: "deliver", p: 0, first: 5, last: 14},
				{kind: "ack", p: 0, first: 5, wantOK: true},
			},
			want: map[int]int64{0: 15},
		},
		{
			name:  "unknown range is not acked",
			start: 0,
			ops: []trackOp{
				{kind: "deliver", p: 0, first: 0, last: 4},
				{kind: "ack", p: 0, first: 3, wantOK: false},
			},
			want: map[int]int64{0: 0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := newCommitTracker()
			epochs := map[int]uint64{}
			old := map[int]uint64{}
			for _, op := range tc.ops {
				if _, ok := epochs[op.p]; !ok && op.kind != "assign" {
					epochs[op.p] = tr.assign(op.p, tc.start)
				}
			}
			for i, op := range tc.ops {
				switch op.kind {
				case "assign":
					old[op.p] = epochs[op.p]
					epochs[op.p] = tr.assign(op.p, op.first)
				case "deliver":
					if err := tr.deliver(op.p, epochs[op.p], op.first, op.last); err != nil {
						t.Fatalf("op %d: deliver: %v", i, err)
					}
				case "ack":
					if got := tr.ack(op.p, epochs[op.p], op.first); got != op.wantOK {
						t.Fatalf("op %d: ack %d@%d = %v, want %v", i, op.p, op.first, got, op.wantOK)
					}
				case "ack-old":
					e := old[op.p]
					if got := tr.ack(op.p, e, op.first); got != op.wantOK {
						t.Fatalf("op %d: stale ack %d@%d = %v, want %v", i, op.p, op.first, got, op.wantOK)
					}
				case "rewind":
					e, from, ok := tr.rewind(op.p, epochs[op.p])
					if ok != op.wantOK {
						t.Fatalf("op %d: rewind ok = %v", i, ok)
					}
					if from != op.first {
						t.Fatalf("op %d: rewind from %d, want %d", i, from, op.first)
					}
					old[op.p], epochs[op.p] = epochs[op.p], e
				case "revoke":
					if _, ok := tr.revoke(op.p, epochs[op.p]); ok != op.wantOK {
						t.Fatalf("op %d: revoke ok = %v", i, ok)
					}
					old[op.p] = epochs[op.p]
				}
			}
			for p := range epochs {
				got, ok := tr.committed(p)
				want, wantOK := tc.want[p]
				if ok != wantOK || got != want {
					t.Errorf("partition %d: committed %d (tracked %v), want %d (tracked %v)", p, got, ok, want, wantOK)
				}
			}
		})
	}
}

func TestCommitTrackerCommittableAndConfirm(t *testing.T) {
	t.Parallel()
	tr := newCommitTracker()
	e0 := tr.assign(0, -2) // a new group: start not known yet
	e1 := tr.assign(1, 40)
	if got := tr.committable(); len(got) != 0 {
		t.Fatalf("committable before any ack = %v, want none", got)
	}
	if !tr.setStart(0, e0, 0) {
		t.Fatal("setStart on a fresh assignment refused")
	}
	if err := tr.deliver(0, e0, 0, 9); err != nil {
		t.Fatal(err)
	}
	if tr.setStart(0, e0, 5) {
		t.Fatal("setStart after a delivery must refuse")
	}
	if err := tr.deliver(1, e1, 40, 49); err != nil {
		t.Fatal(err)
	}
	if err := tr.deliver(1, e1, 45, 50); err == nil {
		t.Fatal("overlapping range accepted")
	}
	if err := tr.deliver(1, e1-1, 50, 60); err == nil {
		t.Fatal("range under a stale epoch accepted")
	}
	tr.ack(0, e0, 0)
	tr.ack(1, e1, 40)
	got := tr.committable()
	if len(got) != 2 || got[0].offset != 10 || got[1].offset != 50 {
		t.Fatalf("committable = %v, want 0→10, 1→50", got)
	}
	tr.confirm(got)
	if again := tr.committable(); len(again) != 0 {
		t.Fatalf("committable after confirm = %v, want none", again)
	}
	// A confirm computed before a reassignment must not touch the new one.
	e1b := tr.assign(1, 50)
	tr.confirm(map[int]epochOffset{1: {epoch: e1, offset: 70}})
	if err := tr.deliver(1, e1b, 50, 59); err != nil {
		t.Fatal(err)
	}
	tr.ack(1, e1b, 50)
	if c := tr.committable(); c[1].offset != 60 {
		t.Fatalf("committable after reassignment = %v, want 1→60", c)
	}
	if n := tr.unsettled(0, e0); n != 0 {
		t.Fatalf("unsettled = %d", n)
	}
}
