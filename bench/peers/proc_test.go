package main

import (
	"os"
	"testing"
)

// TestProcReadings reads this test's own process: a CPU figure that grows
// with work, and a peak RSS at least as large as memory it touched.
func TestProcReadings(t *testing.T) {
	pid := os.Getpid()
	before, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<20)
	for i := 0; i < 20; i++ {
		for j := range buf {
			buf[j] = byte(i + j)
		}
	}
	after, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Fatalf("cpu did not grow: %.2f then %.2f", before, after)
	}
	rss, err := procPeakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss < int64(len(buf)) {
		t.Fatalf("peak RSS %d below the %d bytes touched", rss, len(buf))
	}
	if _, err := procCPU(-1); err == nil {
		t.Fatal("no error for a pid that does not exist")
	}
}

func TestMedianRate(t *testing.T) {
	rs := []result{
		{name: "a", rows: 100, wall: 1e9}, {name: "a", rows: 300, wall: 1e9}, {name: "a", rows: 200, wall: 1e9},
		{name: "b", rows: 5, wall: 1e9},
	}
	if got := medianRate(rs, "a"); got != 200 {
		t.Fatalf("median of a = %v, want 200", got)
	}
	if got := medianRate(rs, "c"); got != 0 {
		t.Fatalf("median of c = %v, want 0", got)
	}
}
