package progress

import (
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
)

// clock is a manual clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// jsonLines decodes the JSON log lines written so far.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func newJSONReporter(t *testing.T, opts Options) (*Reporter, *testkit.SyncBuffer, *clock) {
	t.Helper()
	buf := &testkit.SyncBuffer{}
	c := newClock()
	opts.Logger = slog.New(slog.NewJSONHandler(buf, nil))
	opts.Now = c.Now
	// A buffer is not a terminal: the plain path.
	r := New(buf, opts)
	t.Cleanup(r.Finish)
	return r, buf, c
}

func TestPlainLinesCarryCountsRateAndETA(t *testing.T) {
	t.Parallel()
	r, buf, c := newJSONReporter(t, Options{Label: "backfill kafka", Unit: "records", Total: 1000, Interval: -1})
	if r.bar != nil {
		t.Fatal("a buffer got a progress bar")
	}

	c.Advance(10 * time.Second)
	r.Add(200)
	r.Tick()
	// The next interval is faster: the line's rate is the interval's,
	// the ETA comes from the average since the start.
	c.Advance(5 * time.Second)
	r.Add(300)
	r.Tick()

	lines := jsonLines(t, buf.String())
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf)
	}
	first, second := lines[0], lines[1]
	check := func(name string, line map[string]any, key string, want any) {
		t.Helper()
		if got := line[key]; got != want {
			t.Errorf("%s line: %s = %v (%T), want %v", name, key, got, got, want)
		}
	}
	check("first", first, "msg", "progress")
	check("first", first, "label", "backfill kafka")
	check("first", first, "unit", "records")
	check("first", first, "done", float64(200))
	check("first", first, "total", float64(1000))
	check("first", first, "percent", float64(20))
	check("first", first, "rate_per_s", float64(20))
	// 800 left at 200 per 10 s.
	check("first", first, "eta", "40s")

	check("second", second, "done", float64(500))
	check("second", second, "rate_per_s", float64(60))
	check("second", second, "percent", float64(50))
	// 500 left at 500 per 15 s.
	check("second", second, "eta", "15s")

	c.Advance(5 * time.Second)
	r.Add(500)
	r.Finish()
	r.Finish() // a second call is harmless
	lines = jsonLines(t, buf.String())
	if len(lines) != 3 {
		t.Fatalf("got %d lines after Finish, want 3:\n%s", len(lines), buf)
	}
	last := lines[2]
	check("final", last, "msg", "finished")
	check("final", last, "done", float64(1000))
	check("final", last, "total", float64(1000))
	check("final", last, "elapsed", "20s")
	check("final", last, "rate_per_s", float64(50))

	// Nothing is logged after Finish.
	r.Tick()
	if n := len(jsonLines(t, buf.String())); n != 3 {
		t.Fatalf("Tick after Finish logged: %d lines", n)
	}
}

func TestUnknownTotalHasNoETA(t *testing.T) {
	t.Parallel()
	r, buf, c := newJSONReporter(t, Options{Label: "files", Interval: -1})
	r.Tick() // before anything: zero rate, no ETA, no total
	c.Advance(4 * time.Second)
	r.Add(10)
	r.Tick()
	lines := jsonLines(t, buf.String())
	if len(lines) != 2 {
		t.Fatalf("lines: %s", buf)
	}
	for i, l := range lines {
		for _, k := range []string{"eta", "total", "percent"} {
			if _, ok := l[k]; ok {
				t.Errorf("line %d has %s with an unknown total: %v", i, k, l)
			}
		}
		if l["unit"] != "items" {
			t.Errorf("line %d unit %v, want the default", i, l["unit"])
		}
	}
	if lines[0]["rate_per_s"] != float64(0) || lines[1]["rate_per_s"] != 2.5 {
		t.Fatalf("rates %v, %v; want 0 and 2.5", lines[0]["rate_per_s"], lines[1]["rate_per_s"])
	}

	// A total learnt late brings the ETA.
	r.SetTotal(30)
	c.Advance(4 * time.Second)
	r.Add(10)
	r.Tick()
	lines = jsonLines(t, buf.String())
	l := lines[len(lines)-1]
	// 10 left at 20 per 8 s.
	if l["total"] != float64(30) || l["eta"] != "4s" {
		t.Fatalf("after SetTotal: %v", l)
	}
}

func TestConcurrentAddsAreAllCounted(t *testing.T) {
	t.Parallel()
	r, buf, _ := newJSONReporter(t, Options{Total: 8000, Interval: time.Millisecond})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				r.Add(1)
			}
		})
	}
	wg.Wait()
	r.Finish()
	lines := jsonLines(t, buf.String())
	last := lines[len(lines)-1]
	if last["msg"] != "finished" || last["done"] != float64(8000) {
		t.Fatalf("final line %v, want finished with 8000", last)
	}
	// Lines from the ticker may or may not have come; any that did are
	// well-formed and never run ahead of the final count.
	for _, l := range lines[:len(lines)-1] {
		if l["msg"] != "progress" || l["done"].(float64) > 8000 {
			t.Fatalf("bad periodic line %v", l)
		}
	}
}

func TestFinishStopsThePeriodicGoroutine(t *testing.T) {
	t.Parallel()
	buf := &testkit.SyncBuffer{}
	r := New(buf, Options{Label: "x", Interval: time.Hour})
	select {
	case <-r.loopDone:
		t.Fatal("the periodic goroutine ended before Finish")
	default:
	}
	r.Finish()
	// Finish waited for it: the channel is closed by the goroutine's
	// last statement.
	select {
	case <-r.loopDone:
	default:
		t.Fatal("the periodic goroutine still runs after Finish")
	}
	if !strings.Contains(buf.String(), "msg=finished") || !strings.Contains(buf.String(), "label=x") {
		t.Fatalf("no final line on the writer: %q", buf)
	}
}

func TestTerminalGetsABarWithCountAndRate(t *testing.T) {
	t.Parallel()
	var bar, logs testkit.SyncBuffer
	c := newClock()
	r := newReporter(&bar, Options{Label: "replay", Unit: "records", Total: 100, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: c.Now}, true)
	if r.bar == nil {
		t.Fatal("no bar on a terminal")
	}
	r.Tick() // no plain lines on a terminal
	r.Add(40)
	r.Add(60)
	// Redelivered records past the total grow the bar instead of
	// failing it.
	r.Add(5)
	c.Advance(time.Second)
	r.Finish()
	out := bar.String()
	for _, want := range []string{"replay", "records/s", "100/100"} {
		if !strings.Contains(out, want) {
			t.Errorf("bar output lacks %q: %q", want, out)
		}
	}
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("the bar does not end its line: %q", out)
	}
	if l := logs.String(); l != "" {
		t.Errorf("logs on a terminal: %q, want none: the bar and its last line say it", l)
	}
	if !strings.HasSuffix(out, "replay: 105 records (105/s) in 1s\n") {
		t.Errorf("the bar's last line: %q", out)
	}
}

// TestBytesAreMiBAndRecordsHaveARate: a run counted in input bytes shows
// MiB and MiB/s, and the records beside them with their own rate, on both
// paths.
func TestBytesAreMiBAndRecordsHaveARate(t *testing.T) {
	t.Parallel()
	r, buf, c := newJSONReporter(t, Options{Label: "backfill file", Bytes: true, Total: 100 << 20, Interval: -1})
	c.Advance(10 * time.Second)
	r.Add(20 << 20)
	r.AddRecords(5000)
	r.Tick()
	r.Finish()
	lines := jsonLines(t, buf.String())
	if len(lines) != 2 {
		t.Fatalf("lines %v", lines)
	}
	tick, fin := lines[0], lines[1]
	for k, want := range map[string]any{"done_mib": 20.0, "total_mib": 100.0, "mib_per_s": 2.0, "percent": 20.0, "records": 5000.0, "records_per_s": 500.0} {
		if tick[k] != want {
			t.Errorf("progress line %s = %v, want %v (%v)", k, tick[k], want, tick)
		}
	}
	if _, ok := tick["done"]; ok {
		t.Errorf("progress line carries raw bytes: %v", tick)
	}
	if fin["records"] != 5000.0 || fin["mib_per_s"] != 2.0 {
		t.Errorf("final line %v", fin)
	}

	var bar testkit.SyncBuffer
	c2 := newClock()
	tr := newReporter(&bar, Options{Label: "backfill file", Bytes: true, Total: 4 << 20, Now: c2.Now}, true)
	c2.Advance(2 * time.Second)
	tr.AddRecords(300)
	tr.Add(4 << 20)
	tr.Finish()
	if out := bar.String(); !strings.Contains(out, "300 records, 150 records/s") || !strings.HasSuffix(out, "backfill file: 4.0 MiB (2.0 MiB/s), 300 records (150 records/s) in 2s\n") {
		t.Errorf("bar output %q", out)
	}
}

func TestNewDetectsNonTerminalFiles(t *testing.T) {
	t.Parallel()
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := New(f, Options{Interval: -1})
	defer r.Finish()
	if r.bar != nil {
		t.Fatal("a regular file got a progress bar")
	}
}
