// Command peers times cohortsync's consumer path against ClickHouse's own
// Kafka engine on the same landing, in one run and interleaved (engine,
// cohortsync, engine, cohortsync, ...), so that both meet the same machine.
// For each round it reports rows per second, the CPU-seconds per million
// changes of each process (read from /proc) and peak resident memory.
//
// With --sustain it instead streams records at a steady --rate to one
// `cohortsync serve` and samples ClickHouse's system.parts every second: the
// peak of active parts per partition, against parts_to_throw_insert, and
// the group's lag, to show the consumer kept up.
//
// It needs a ClickHouse server on --clickhouse-addr on this machine (its
// process is measured): bash scripts/clickhouse.sh up. `make bench-peers`
// runs it. It is a benchmark: it reports, and fails only when a contender
// does not land everything.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cohortsync/cohortsync/kafka"
)

// sustainUsers is the identity directory of a sustained run unless --users says.
const sustainUsers = 200_000

type roundEnv struct {
	work           workload
	brokerAddr     string
	topic          string
	ends           map[int]int64
	client         *kafka.Client
	clickhouseAddr string
	serverPid      int
	binary         string
	debugAddr      string
	tmp            string
	timeout        time.Duration
}

// result is one contender's round.
type result struct {
	name   string
	rows   int64
	wall   time.Duration
	ready  time.Duration // cohortsync only: start to /health/pipeline 200
	ownCPU float64       // cohortsync only
	ownRSS int64
	// cohortsync only: from ready to the last commit, the stream alone
	streamOwnCPU, streamServerCPU float64
	serverCPU                     float64
	serverRSS                     int64
	serverRSSReset                bool
}

func (r result) rowsPerSec() float64 { return float64(r.rows) / r.wall.Seconds() }

// cpuPerMillion is the CPU-seconds of both processes per million changes.
func (r result) cpuPerMillion(changes int64) float64 {
	return (r.ownCPU + r.serverCPU) / (float64(changes) / 1e6)
}

type usage struct {
	cpu float64
	rss int64
}

func sample(pid int) (usage, error) {
	cpu, err := procCPU(pid)
	if err != nil {
		return usage{}, err
	}
	rss, err := procPeakRSS(pid)
	if err != nil {
		return usage{}, err
	}
	return usage{cpu: cpu, rss: rss}, nil
}

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var w workload
	fs.IntVar(&w.messages, "messages", 200_000, "landed records")
	fs.IntVar(&w.idsPerMessage, "ids", 50, "user ids per record")
	fs.IntVar(&w.cohorts, "cohorts", 1000, "cohorts the records are spread over")
	fs.IntVar(&w.users, "users", 0, "users of the identity directory (0: one per change)")
	rounds := fs.Int("rounds", 1, "rounds per contender, interleaved")
	only := fs.String("only", "both", "contenders: both, engine or cohortsync")
	chAddr := fs.String("clickhouse-addr", "127.0.0.1:9000", "ClickHouse native `HOST:PORT` (a server on this machine)")
	chPid := fs.Int("clickhouse-pid", 0, "pid of that server (0: find the one clickhouse-server process)")
	binary := fs.String("cohortsync", "", "cohortsync binary (empty: build ./cmd/cohortsync)")
	binaryB := fs.String("cohortsync-b", "", "a second cohortsync binary, run after the first in every round (A/B)")
	debugAddr := fs.String("debug-addr", "", "debug_addr of cohortsync, to take profiles during a round")
	timeout := fs.Duration("timeout", 30*time.Minute, "longest a round may take")
	var sc sustainConfig
	fs.DurationVar(&sc.duration, "sustain", 0, "instead of a backlog, stream to one cohortsync serve for this long and report ClickHouse's parts (0: backlog rounds)")
	fs.IntVar(&sc.rate, "rate", 20_000, "with --sustain: changes per second, in records of --ids ids")
	fs.DurationVar(&sc.drain, "drain", 2*time.Minute, "with --sustain: longest wait after the stream for the group to catch up")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if w.users == 0 {
		w.users = int(w.changes())
		if sc.duration > 0 {
			// The stream reuses the ids: a directory the size of the whole
			// stream would only lengthen the catch-up before it.
			w.users = sustainUsers
		}
	}
	if sc.duration > 0 && (sc.rate < 1 || *only == "engine") {
		return errors.New("--sustain needs a positive --rate and runs cohortsync only")
	}
	if w.messages < 1 || w.idsPerMessage < 1 || w.cohorts < 1 || w.users < 1 || *rounds < 1 {
		return errors.New("--messages, --ids, --cohorts, --users and --rounds must be positive")
	}
	if *only != "both" && *only != "engine" && *only != "cohortsync" {
		return fmt.Errorf("--only %q: want both, engine or cohortsync", *only)
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}

	tmp, err := os.MkdirTemp("", "cohortsync-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	env := roundEnv{work: w, clickhouseAddr: *chAddr, serverPid: *chPid, binary: *binary, debugAddr: *debugAddr, tmp: tmp, timeout: *timeout}
	if env.serverPid == 0 {
		if env.serverPid, err = findPid("clickhouse-serv"); err != nil {
			return err
		}
	}
	conn, err := openClickHouse(ctx, *chAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if env.binary == "" && *only != "engine" {
		env.binary = filepath.Join(tmp, "cohortsync")
		build := exec.CommandContext(ctx, "go", "build", "-o", env.binary, "./cmd/cohortsync")
		build.Stdout, build.Stderr = stderr, stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build cohortsync (run from the repository root): %w", err)
		}
	}

	broker, addr, err := startBroker()
	if err != nil {
		return err
	}
	defer broker.Close()
	env.brokerAddr = addr
	kcfg := kafka.DefaultConfig()
	kcfg.Brokers = []string{addr}
	if env.client, err = kafka.NewClient(kcfg); err != nil {
		return err
	}
	defer env.client.Close()
	env.topic = kcfg.Topics.Exports
	if sc.duration > 0 {
		logf("landing %d users on %s", w.users, addr)
		if err := landIdentities(ctx, env.client, w, logf); err != nil {
			return err
		}
		if env.ends, err = ends(ctx, env.client, env.topic, kcfg.Partitions); err != nil {
			return err
		}
		r, err := sustainRound(ctx, conn, env, sc, logf)
		if err != nil {
			return fmt.Errorf("sustain: %w", err)
		}
		reportSustain(stdout, w, sc, r)
		return nil
	}
	logf("landing %d records of %d ids over %d cohorts, %d users, on %s", w.messages, w.idsPerMessage, w.cohorts, w.users, addr)
	if err := land(ctx, env.client, w, logf); err != nil {
		return err
	}
	if env.ends, err = ends(ctx, env.client, env.topic, kcfg.Partitions); err != nil {
		return err
	}

	var results []result
	for round := 1; round <= *rounds; round++ {
		type contender struct {
			name string
			fn   func(context.Context, driver.Conn, roundEnv, int) (result, error)
		}
		var cs []contender
		if *only != "cohortsync" {
			cs = append(cs, contender{"clickhouse-kafka-engine", engineRound})
		}
		if *only != "engine" {
			cs = append(cs, contender{"cohortsync", cohortsyncRound})
			if *binaryB != "" {
				cs = append(cs, contender{"cohortsync-b", func(ctx context.Context, conn driver.Conn, env roundEnv, round int) (result, error) {
					env.binary = *binaryB
					r, err := cohortsyncRound(ctx, conn, env, round)
					r.name = "cohortsync-b"
					return r, err
				}})
			}
		}
		for _, c := range cs {
			logf("round %d: %s", round, c.name)
			r, err := c.fn(ctx, conn, env, round)
			if err != nil {
				return fmt.Errorf("round %d: %w", round, err)
			}
			logf("round %d: %s %.1f s, %.0f rows/s", round, c.name, r.wall.Seconds(), r.rowsPerSec())
			results = append(results, r)
		}
	}
	report(stdout, w, results)
	return nil
}

func report(out io.Writer, w workload, results []result) {
	tw := tabwriter.NewWriter(out, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(out, "%d records × %d ids = %d changes, %d cohorts, %d users\n\n", w.messages, w.idsPerMessage, w.changes(), w.cohorts, w.users)
	fmt.Fprintln(tw, "contender\twall s\trows/s\town CPU-s/1M\tserver CPU-s/1M\ttotal CPU-s/1M\tready s\tstream s\tstream rows/s\tstream CPU-s/1M (own+server)\town peak RSS MiB\tserver peak RSS MiB\t")
	per := float64(w.changes()) / 1e6
	for _, r := range results {
		ready, own, ownRSS, stream, streamRate, streamCPU := "-", "-", "-", "-", "-", "-"
		if r.name != "clickhouse-kafka-engine" {
			ready = fmt.Sprintf("%.1f", r.ready.Seconds())
			own = fmt.Sprintf("%.2f", r.ownCPU/per)
			ownRSS = fmt.Sprint(r.ownRSS >> 20)
			s := (r.wall - r.ready).Seconds()
			stream = fmt.Sprintf("%.1f", s)
			streamRate = fmt.Sprintf("%.0f", float64(r.rows)/s)
			streamCPU = fmt.Sprintf("%.2f+%.2f", r.streamOwnCPU/per, r.streamServerCPU/per)
		}
		srvRSS := fmt.Sprint(r.serverRSS >> 20)
		if !r.serverRSSReset {
			srvRSS += " (lifetime)"
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.0f\t%s\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name, r.wall.Seconds(), r.rowsPerSec(), own, r.serverCPU/per, r.cpuPerMillion(w.changes()), ready, stream, streamRate, streamCPU, ownRSS, srvRSS)
	}
	tw.Flush()
	eng := medianRate(results, "clickhouse-kafka-engine")
	for _, name := range []string{"cohortsync", "cohortsync-b"} {
		if cs := medianRate(results, name); eng > 0 && cs > 0 {
			fmt.Fprintf(out, "\nmedian rows/s, start to last commit: engine %.0f, %s %.0f: %s/engine = %.2f×", eng, name, cs, name, cs/eng)
		}
	}
	fmt.Fprintln(out)
}

func medianRate(results []result, name string) float64 {
	var v []float64
	for _, r := range results {
		if r.name == name {
			v = append(v, r.rowsPerSec())
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.SortFunc(v, cmp.Compare)
	return v[len(v)/2]
}
