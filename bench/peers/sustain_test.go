package main

import (
	"testing"
	"time"
)

// TestPartsPeak folds three samples. The peak per table is the most active
// parts of one partition, not of the table's partitions together (the limit
// is per partition), and the end figures are those of the last sample.
func TestPartsPeak(t *testing.T) {
	var p partsPeak
	p.add(1*time.Second, []partCount{
		{table: "membership_changes", partition: "202611", active: 6, dirs: 6},
		{table: "membership_changes", partition: "202612", active: 6, dirs: 7},
		{table: "membership", partition: "tuple()", active: 4, dirs: 4},
	})
	p.add(2*time.Second, []partCount{
		{table: "membership_changes", partition: "202611", active: 2, dirs: 9},
		{table: "membership_changes", partition: "202612", active: 5, dirs: 8},
		{table: "membership", partition: "tuple()", active: 9, dirs: 12},
	})
	p.add(3*time.Second, []partCount{
		{table: "membership_changes", partition: "202611", active: 1, dirs: 2},
		{table: "membership_changes", partition: "202612", active: 3, dirs: 3},
		{table: "membership", partition: "tuple()", active: 1, dirs: 5},
	})
	if p.samples != 3 {
		t.Fatalf("samples = %d, want 3", p.samples)
	}
	if p.max != 9 || p.maxTable != "membership" || p.maxAt != 2*time.Second {
		t.Fatalf("peak = %d in %s at %s, want 9 in membership at 2s", p.max, p.maxTable, p.maxAt)
	}
	if p.dirsAtMax != 29 || p.endDirs != 10 {
		t.Fatalf("dirs at peak %d, at end %d; want 29 and 10", p.dirsAtMax, p.endDirs)
	}
	mc := p.tables["membership_changes"]
	if mc.active != 6 || mc.partition != "202611" || mc.at != time.Second {
		t.Fatalf("membership_changes peak = %d in %s at %s, want 6 in 202611 at 1s", mc.active, mc.partition, mc.at)
	}
	if mc.endActive != 3 || mc.endDirs != 5 {
		t.Fatalf("membership_changes end = %d active, %d dirs; want 3 and 5", mc.endActive, mc.endDirs)
	}
	m := p.tables["membership"]
	if m.active != 9 || m.endActive != 1 || m.endDirs != 5 {
		t.Fatalf("membership = peak %d, end %d active, %d dirs; want 9, 1, 5", m.active, m.endActive, m.endDirs)
	}
}

// TestPartsPeakTableGone: a table missing from the last sample ends at zero
// instead of keeping the figures of an earlier one.
func TestPartsPeakTableGone(t *testing.T) {
	var p partsPeak
	p.add(time.Second, []partCount{{table: "a", partition: "x", active: 4, dirs: 4}})
	p.add(2*time.Second, nil)
	if a := p.tables["a"]; a.active != 4 || a.endActive != 0 || a.endDirs != 0 || p.endDirs != 0 {
		t.Fatalf("a = %+v, end dirs %d; want peak 4 and zero at the end", *a, p.endDirs)
	}
	if p.max != 4 {
		t.Fatalf("peak = %d, want 4", p.max)
	}
}
