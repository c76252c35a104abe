// Package progress reports the progress of a long run such as a backfill:
// a progress bar with count, rate and ETA on a terminal, and a plain log
// line every few seconds anywhere else (a file, a pipe, a CI log), where a
// redrawn bar would only produce noise.
package progress

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// DefaultInterval is the period of plain lines when Options.Interval is zero.
const DefaultInterval = 5 * time.Second

// barThrottle bounds how often the bar is redrawn, so a run that adds
// thousands of times a second does not spend its time on the terminal.
const barThrottle = 100 * time.Millisecond

// Options configures a Reporter.
type Options struct {
	// Label names the run in every line ("backfill kafka").
	Label string
	// Unit names what is counted ("records"); default "items". Bytes
	// overrides it.
	Unit string
	// Bytes says the count is bytes of input: it is shown in MiB and MiB/s,
	// next to the records AddRecords counts.
	Bytes bool
	// Total is the expected count; 0 means unknown (no ETA).
	Total int64
	// Interval is the period of plain lines; 0 means DefaultInterval and a
	// negative value turns the periodic lines off (the caller calls Tick).
	Interval time.Duration
	// Logger receives the plain lines and the final line; nil means a
	// text logger on the writer given to New.
	Logger *slog.Logger
	// Now is the clock for rates and ETAs; nil means time.Now.
	Now func() time.Time
}

// Reporter counts progress and shows it. Add may be called from several
// goroutines at once.
type Reporter struct {
	opts  Options
	log   *slog.Logger
	start time.Time
	done  atomic.Int64
	total atomic.Int64
	// records counts what AddRecords was told, beside a count of bytes.
	records atomic.Int64

	// bar is nil on the plain path; barMu keeps its max and count
	// consistent when Adds race.
	barMu sync.Mutex
	bar   *progressbar.ProgressBar
	w     io.Writer

	// mu guards the previous line's figures (for the interval rate) and
	// finished.
	mu          sync.Mutex
	lastAt      time.Time
	lastDone    int64
	lastRecords int64
	finished    bool
	// described is when the bar's records figure was last redrawn.
	described time.Time

	stop     chan struct{}
	loopDone chan struct{}
}

// New starts a reporter writing to w. When w is an *os.File on a terminal
// it draws a progress bar; otherwise it logs a plain line every Interval
// until Finish.
func New(w io.Writer, opts Options) *Reporter {
	return newReporter(w, opts, isTerminal(w))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newReporter is New with the terminal decision made by the caller, so
// tests can exercise the bar without a terminal.
func newReporter(w io.Writer, opts Options, tty bool) *Reporter {
	if opts.Bytes {
		opts.Unit = "MiB"
	}
	if opts.Unit == "" {
		opts.Unit = "items"
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Total < 0 {
		opts.Total = 0
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(w, nil))
	}
	r := &Reporter{opts: opts, log: log, w: w, start: opts.Now(), loopDone: make(chan struct{})}
	r.lastAt = r.start
	r.total.Store(opts.Total)
	if tty {
		r.bar = r.newBar(opts.Total)
		close(r.loopDone)
		return r
	}
	if opts.Interval < 0 {
		close(r.loopDone)
		return r
	}
	r.stop = make(chan struct{})
	go r.loop()
	return r
}

func (r *Reporter) newBar(total int64) *progressbar.ProgressBar {
	limit := total
	if limit <= 0 {
		limit = -1 // the library's "unknown length": a spinner with a count
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(r.w),
		progressbar.OptionSetDescription(r.opts.Label),
		progressbar.OptionShowCount(),
	}
	if r.opts.Bytes {
		// The library scales bytes to KiB, MiB, ... and shows MiB/s.
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true))
	} else {
		opts = append(opts, progressbar.OptionShowIts(), progressbar.OptionSetItsString(r.opts.Unit))
	}
	return progressbar.NewOptions64(limit, append(opts,
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(barThrottle),
		progressbar.OptionFullWidth(),
		// The library's spinner redraws from a goroutine that only ends
		// when the bar completes, which an aborted run never does.
		progressbar.OptionSetSpinnerChangeInterval(0),
	)...)
}

func (r *Reporter) loop() {
	defer close(r.loopDone)
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.Tick()
		}
	}
}

// Add counts n more units done.
func (r *Reporter) Add(n int64) {
	done := r.done.Add(n)
	if r.bar == nil {
		return
	}
	r.barMu.Lock()
	defer r.barMu.Unlock()
	// Redelivered records can take the count past the expected total;
	// the bar grows rather than refusing the count.
	if t := r.total.Load(); t > 0 && done > r.bar.GetMax64() {
		r.bar.ChangeMax64(done)
	}
	_ = r.bar.Add64(n)
}

// AddRecords counts n more records, shown with their rate beside a count of
// bytes (Options.Bytes).
func (r *Reporter) AddRecords(n int64) {
	records := r.records.Add(n)
	if r.bar == nil {
		return
	}
	now := r.opts.Now()
	r.mu.Lock()
	redraw := now.Sub(r.described) >= barThrottle
	if redraw {
		r.described = now
	}
	r.mu.Unlock()
	if !redraw {
		return
	}
	r.barMu.Lock()
	defer r.barMu.Unlock()
	if r.bar.IsFinished() {
		return // a redraw now would write the full bar again
	}
	r.bar.Describe(fmt.Sprintf("%s: %d records, %.0f records/s", r.opts.Label, records, perSecond(records, now.Sub(r.start))))
}

// SetTotal sets the expected count, for runs that learn it late; 0 means
// unknown.
func (r *Reporter) SetTotal(n int64) {
	n = max(n, 0)
	r.total.Store(n)
	if r.bar == nil {
		return
	}
	r.barMu.Lock()
	defer r.barMu.Unlock()
	if n == 0 {
		r.bar.ChangeMax64(-1)
		return
	}
	r.bar.ChangeMax64(max(n, r.done.Load()))
}

// Done returns the count so far.
func (r *Reporter) Done() int64 { return r.done.Load() }

// Tick logs a plain progress line now, with the rate since the previous
// line and an ETA from the average rate since the start (steadier than the
// last interval's). The periodic lines call it; on a terminal it does
// nothing, as the bar shows the same.
func (r *Reporter) Tick() {
	if r.bar != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	now := r.opts.Now()
	done, records := r.done.Load(), r.records.Load()
	interval := now.Sub(r.lastAt)
	rate := perSecond(done-r.lastDone, interval)
	recordRate := perSecond(records-r.lastRecords, interval)
	r.lastAt, r.lastDone, r.lastRecords = now, done, records

	total := r.total.Load()
	attrs := []any{"label", r.opts.Label}
	attrs = append(attrs, r.counts(done, total, rate)...)
	if total > 0 {
		attrs = append(attrs, "percent", percent(done, total))
	}
	if records > 0 {
		attrs = append(attrs, "records", records, "records_per_s", recordRate)
	}
	if eta, ok := r.eta(now, done, total); ok {
		attrs = append(attrs, "eta", eta.String())
	}
	r.log.Info("progress", attrs...)
}

// counts are a line's figures of the main count: done, total and rate, in
// MiB for bytes.
func (r *Reporter) counts(done, total int64, rate float64) []any {
	if r.opts.Bytes {
		attrs := []any{"done_mib", mib(float64(done))}
		if total > 0 {
			attrs = append(attrs, "total_mib", mib(float64(total)))
		}
		return append(attrs, "mib_per_s", mib(rate))
	}
	attrs := []any{"unit", r.opts.Unit, "done", done}
	if total > 0 {
		attrs = append(attrs, "total", total)
	}
	return append(attrs, "rate_per_s", rate)
}

// sentence says what was done, with rates, for a person.
func (r *Reporter) sentence(done, records int64, elapsed time.Duration) string {
	var parts []string
	if r.opts.Bytes {
		parts = append(parts, fmt.Sprintf("%.1f MiB (%.1f MiB/s)", mib(float64(done)), mib(perSecond(done, elapsed))))
	} else {
		parts = append(parts, fmt.Sprintf("%d %s (%.0f/s)", done, r.opts.Unit, perSecond(done, elapsed)))
	}
	if records > 0 {
		parts = append(parts, fmt.Sprintf("%d records (%.0f records/s)", records, perSecond(records, elapsed)))
	}
	return strings.Join(parts, ", ")
}

// mib is n bytes in MiB, rounded to one decimal.
func mib(n float64) float64 { return roundTenth(n / (1 << 20)) }

// eta is the time left at the average rate since the start; false when
// the total is unknown or nothing was done yet.
func (r *Reporter) eta(now time.Time, done, total int64) (time.Duration, bool) {
	if total <= 0 {
		return 0, false
	}
	if done >= total {
		return 0, true
	}
	elapsed := now.Sub(r.start)
	if done <= 0 || elapsed <= 0 {
		return 0, false
	}
	left := time.Duration(float64(elapsed) * float64(total-done) / float64(done))
	return left.Round(time.Second), true
}

// Finish stops the periodic lines (waiting for their goroutine to end),
// closes the bar and logs a final line with the count, the elapsed time
// and the average rate. Calls after the first do nothing.
func (r *Reporter) Finish() {
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return
	}
	r.finished = true
	r.mu.Unlock()
	if r.stop != nil {
		close(r.stop)
	}
	<-r.loopDone
	if r.bar != nil {
		r.barMu.Lock()
		done, total := r.done.Load(), r.total.Load()
		switch {
		case r.bar.IsFinished():
			// The count reached the total: the full bar is drawn.
		case total > 0 && done >= total:
			_ = r.bar.Finish()
		default:
			_ = r.bar.Exit()
		}
		// The bar leaves the cursor at the end of its line.
		_, _ = fmt.Fprintln(r.w)
		r.barMu.Unlock()
	}

	now := r.opts.Now()
	done, records := r.done.Load(), r.records.Load()
	elapsed := now.Sub(r.start)
	if r.bar != nil {
		// On a terminal the last word is a sentence under the bar, not a
		// log record between the bar and the summary.
		fmt.Fprintf(r.w, "%s: %s in %s\n", r.opts.Label, r.sentence(done, records, elapsed), elapsed.Round(time.Millisecond))
		return
	}
	attrs := []any{"label", r.opts.Label}
	attrs = append(attrs, r.counts(done, r.total.Load(), perSecond(done, elapsed))...)
	if records > 0 {
		attrs = append(attrs, "records", records, "records_per_s", perSecond(records, elapsed))
	}
	attrs = append(attrs, "elapsed", elapsed.Round(time.Millisecond).String())
	r.log.Info("finished", attrs...)
}

// perSecond is n/d per second, rounded to one decimal; 0 when d is not
// positive.
func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return roundTenth(float64(n) / d.Seconds())
}

func percent(done, total int64) float64 {
	return roundTenth(100 * float64(done) / float64(total))
}

func roundTenth(f float64) float64 {
	return float64(int64(f*10+0.5)) / 10
}
