package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/kafka"
)

// streamGroup is the consumer group of `cohortsync serve` (kafka.DefaultGroupConfig).
var streamGroup = kafka.DefaultGroupConfig().GroupID

// cohortsyncRound runs `cohortsync serve` against the broker and ClickHouse
// with a fresh data directory, database and consumer group, and times it
// until the group has committed the end of every partition: a commit comes
// only after every sink (ClickHouse state, history and data points, Parquet)
// has written the batch, so that is the end to end figure.
func cohortsyncRound(ctx context.Context, conn driver.Conn, env roundEnv, round int) (result, error) {
	db := fmt.Sprintf("peers_cohortsync_%d", round)
	dataDir := filepath.Join(env.tmp, fmt.Sprintf("cohortsync-%d", round))
	if err := resetServe(ctx, conn, env, db, dataDir); err != nil {
		return result{}, err
	}
	before, err := sample(env.serverPid)
	if err != nil {
		return result{}, err
	}
	rssReset := resetPeakRSS(env.serverPid)
	start := time.Now()
	sp, err := launchServe(ctx, env, db, dataDir)
	if err != nil {
		return result{}, err
	}
	defer sp.log.Close()
	cmd, stop, logFile := sp.cmd, sp.stop, sp.log
	readyAt := time.Since(start)
	ownReady, err := sample(cmd.Process.Pid)
	if err != nil {
		stop()
		return result{}, err
	}
	serverReady, err := sample(env.serverPid)
	if err != nil {
		stop()
		return result{}, err
	}
	for {
		done, err := committedAll(ctx, env)
		if err != nil {
			stop()
			return result{}, err
		}
		if done {
			break
		}
		if time.Since(start) > env.timeout {
			stop()
			return result{}, fmt.Errorf("cohortsync: not committed after %s (log: %s)", env.timeout, logFile.Name())
		}
		select {
		case <-sp.done:
			return result{}, fmt.Errorf("cohortsync exited: %v (log: %s)", sp.err, logFile.Name())
		case <-time.After(50 * time.Millisecond):
		}
	}
	wall := time.Since(start)
	own, err := sample(cmd.Process.Pid)
	if err != nil {
		stop()
		return result{}, err
	}
	after, err := sample(env.serverPid)
	stop()
	if err != nil {
		return result{}, err
	}
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".membership_changes").Scan(&rows); err != nil {
		return result{}, fmt.Errorf("cohortsync: count: %w", err)
	}
	if int64(rows) != env.work.changes() {
		return result{}, fmt.Errorf("cohortsync: %d history rows in %s, want %d", rows, db, env.work.changes())
	}
	if err := conn.Exec(ctx, "DROP DATABASE "+db); err != nil {
		return result{}, fmt.Errorf("cohortsync: %w", err)
	}
	return result{
		name: "cohortsync", rows: int64(rows), wall: wall, ready: readyAt,
		ownCPU: own.cpu, ownRSS: own.rss,
		streamOwnCPU: own.cpu - ownReady.cpu, streamServerCPU: after.cpu - serverReady.cpu,
		serverCPU: after.cpu - before.cpu, serverRSS: after.rss, serverRSSReset: rssReset,
	}, nil
}

// serveProc is a running `cohortsync serve`.
type serveProc struct {
	cmd *exec.Cmd
	log *os.File
	// done is closed once the process has exited, with its error in err, so
	// that a round's wait and its stop can both see it.
	done chan struct{}
	err  error
	once sync.Once // a round may stop the process before its deferred stop
}

// resetServe drops database db, the stream's consumer group and dataDir, so
// that the next launchServe starts from nothing. It is apart from the launch
// so that a round's clock and CPU figures leave it out.
func resetServe(ctx context.Context, conn driver.Conn, env roundEnv, db, dataDir string) error {
	if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
		return fmt.Errorf("cohortsync: %w", err)
	}
	if err := deleteGroup(ctx, env.client, streamGroup); err != nil {
		return err
	}
	return os.RemoveAll(dataDir)
}

// launchServe starts `cohortsync serve` against the broker and ClickHouse on
// database db and dataDir, and returns once its stream runs
// (/health/pipeline 200). The caller closes log and calls stop.
func launchServe(ctx context.Context, env roundEnv, db, dataDir string) (*serveProc, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(dataDir + ".log")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, env.binary, "serve",
		"--data-dir", dataDir, "--http-addr", httpAddr,
		"--kafka-brokers", env.brokerAddr,
		"--clickhouse-addr", env.clickhouseAddr, "--clickhouse-database", db,
		"--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "COHORTSYNC_DEBUG_ADDR="+env.debugAddr)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("cohortsync: %w", err)
	}
	sp := &serveProc{cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() {
		sp.err = cmd.Wait()
		close(sp.done)
	}()
	if err := waitReady(ctx, httpAddr, sp, env.timeout); err != nil {
		sp.stop()
		logFile.Close()
		return nil, fmt.Errorf("cohortsync: %w (log: %s)", err, logFile.Name())
	}
	return sp, nil
}

// stop asks the process to end and kills it if it has not after 30 s.
func (sp *serveProc) stop() {
	sp.once.Do(func() {
		_ = sp.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-sp.done:
		case <-time.After(30 * time.Second):
			_ = sp.cmd.Process.Kill()
			<-sp.done
		}
	})
}

// committedAll reports whether the stream's group has committed the end of
// every partition of the landing topic.
func committedAll(ctx context.Context, env roundEnv) (bool, error) {
	parts := make([]int, 0, len(env.ends))
	for p := range env.ends {
		parts = append(parts, p)
	}
	got, err := env.client.Committed(ctx, streamGroup, env.topic, parts)
	if err != nil {
		return false, err
	}
	for p, end := range env.ends {
		if got[p] < end {
			return false, nil
		}
	}
	return true, nil
}

// waitReady polls /health/pipeline until it answers 200: the stream side is
// up (the identity directory replicated), which /readyz, the ingest
// readiness, does not wait for.
func waitReady(ctx context.Context, addr string, sp *serveProc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/health/pipeline")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-sp.done:
			return fmt.Errorf("exited before ready: %v", sp.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("not ready in time")
}

func deleteGroup(ctx context.Context, client *kafka.Client, group string) error {
	resp, err := client.Admin().DeleteGroups(ctx, &kafkago.DeleteGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return fmt.Errorf("delete group %s: %w", group, err)
	}
	if gerr := resp.Errors[group]; gerr != nil && !errors.Is(gerr, kafkago.GroupIdNotFound) {
		return fmt.Errorf("delete group %s: %w", group, gerr)
	}
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
