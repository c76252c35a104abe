// Package chtest gives integration tests a real ClickHouse server: the shared
// one CI starts (scripts/clickhouse.sh up), a database of their own on it, or
// a private server process they can stop and start again.
//
// When no server is available a test is skipped with a message saying how to
// start one, except under CI=true, where it fails: CI must run them.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// EnvAddr names the variable holding the shared test server's native address.
const EnvAddr = "COHORTSYNC_TEST_CLICKHOUSE_ADDR"

// DefaultAddr is where `make clickhouse-up` listens.
const DefaultAddr = "127.0.0.1:9000"

const howToStart = "ClickHouse not running: start one with `make clickhouse-up`"

// Addr returns the shared server's address ($COHORTSYNC_TEST_CLICKHOUSE_ADDR,
// default 127.0.0.1:9000) once it has answered a ping. Otherwise the test is
// skipped, or fails when CI=true.
func Addr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(EnvAddr)
	if addr == "" {
		addr = DefaultAddr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ping(ctx, addr); err != nil {
		Unavailable(t, fmt.Sprintf("%s (%s: %v)", howToStart, addr, err))
	}
	return addr
}

// Unavailable skips the test because something it needs is missing (msg
// says what and how to get it), or fails it under CI=true, where every
// integration test must run.
func Unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; with CI=true the ClickHouse integration tests must run", msg)
	}
	t.Skip(msg)
}

// Open returns a connection to addr, closed when the test ends.
func Open(t testing.TB, addr string) driver.Conn {
	t.Helper()
	conn, err := open(addr)
	if err != nil {
		t.Fatalf("clickhouse %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func open(addr string) (driver.Conn, error) {
	return ch.Open(&ch.Options{
		Protocol:    ch.Native,
		Addr:        []string{addr},
		Auth:        ch.Auth{Database: "default", Username: "default"},
		DialTimeout: 3 * time.Second,
	})
}

func ping(ctx context.Context, addr string) error {
	conn, err := open(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Ping(ctx)
}

// NewDatabase creates a database with a name unique to this test on the
// shared server and drops it when the test ends. It returns the server's
// address and the database's name.
func NewDatabase(t testing.TB) (addr, database string) {
	t.Helper()
	addr = Addr(t)
	return addr, NewDatabaseAt(t, addr)
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// NewDatabaseAt is NewDatabase on the server at addr (a private one, say).
func NewDatabaseAt(t testing.TB, addr string) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.ToLower(unsafeChars.ReplaceAllString(t.Name(), "_"))
	if len(name) > 40 {
		name = name[:40]
	}
	name = "cstest_" + name + "_" + hex.EncodeToString(b[:])

	conn := Open(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := conn.Exec(ctx, "CREATE DATABASE `"+name+"`"); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	return name
}

// Server is a private clickhouse-server process with its own data directory
// and port, for tests that stop and restart the server.
type Server struct {
	// Addr is the native-protocol address; it stays the same across restarts.
	Addr string

	t       testing.TB
	bin     string
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// StartPrivateServer starts a private server and stops it when the test
// ends. extraXML is added inside the server's <yandex> configuration element
// (macros, remote_servers, ...). Without a clickhouse-server binary the test
// is skipped, or fails when CI=true.
func StartPrivateServer(t testing.TB, extraXML ...string) *Server {
	t.Helper()
	return startPrivateServer(t, strings.Join(extraXML, "\n"), "")
}

// queryLogXML turns on system.query_log; the short flush interval is only a
// default, since SYSTEM FLUSH LOGS writes it out at once.
const queryLogXML = `
    <query_log>
        <database>system</database>
        <table>query_log</table>
        <flush_interval_milliseconds>1000</flush_interval_milliseconds>
    </query_log>`

// StartQueryLoggingServer is StartPrivateServer for a server that records
// every statement in system.query_log (log_queries is on in the default
// profile, as a client's setting would be overridden by the code under test
// setting its own). A test reads back the SQL exactly as the server
// received it, with the driver's client-side "?" binding already applied;
// a client that sets log_queries=0 on its own statements keeps them out.
func StartQueryLoggingServer(t testing.TB) *Server {
	t.Helper()
	return startPrivateServer(t, queryLogXML, "<log_queries>1</log_queries>")
}

func startPrivateServer(t testing.TB, extraXML, profileXML string) *Server {
	t.Helper()
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		// Debian installs it in /usr/sbin, which is not on every PATH.
		bin = "/usr/sbin/clickhouse-server"
		if _, err := os.Stat(bin); err != nil {
			Unavailable(t, "clickhouse-server is not installed: run `bash scripts/clickhouse.sh install`")
		}
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	port, err := freePort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := s.writeConfig(port, extraXML, profileXML); err != nil {
		t.Fatalf("clickhouse config: %v", err)
	}
	t.Cleanup(func() {
		if s.Running() {
			s.Stop()
		}
	})
	s.Start()
	return s
}

// freePort asks the kernel for a port nobody listens on. Another process
// could take it before the server binds it; the start then fails loudly.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Port is the native-protocol port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Pid is the process id of the running server, 0 when it is stopped.
func (s *Server) Pid() int {
	if !s.Running() {
		return 0
	}
	return s.cmd.Process.Pid
}

// Running says whether the server process is alive.
func (s *Server) Running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Start starts the server and waits until it answers a ping. Data written
// before a Stop is still there.
func (s *Server) Start() {
	s.t.Helper()
	if s.Running() {
		s.t.Fatalf("clickhouse %s: already running", s.Addr)
	}
	logFile, err := os.OpenFile(filepath.Join(s.dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatalf("clickhouse log: %v", err)
	}
	cmd := exec.Command(s.bin, "--config-file="+filepath.Join(s.dir, "config.xml"))
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		s.t.Fatalf("start clickhouse-server: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(s.exited)
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := ping(ctx, s.Addr)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.exited:
			s.t.Fatalf("clickhouse-server exited during start-up (%v)\n%s", s.waitErr, s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("clickhouse-server did not answer within 30s: %v\n%s", err, s.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits for the process to exit (SIGKILL after 30s).
func (s *Server) Stop() {
	s.t.Helper()
	if !s.Running() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("clickhouse-server did not stop within 30s of SIGTERM; killed it\n%s", s.logTail())
	}
}

// logTail returns the end of the server's logs for failure messages.
func (s *Server) logTail() string {
	var b strings.Builder
	for _, name := range []string{"stdout.log", "log/clickhouse-server.err.log"} {
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", name, data)
	}
	return b.String()
}

// writeConfig writes the same configuration scripts/clickhouse.sh writes,
// with the server's own directory and port and no HTTP listener; profile is
// added to the default user's settings.
func (s *Server) writeConfig(port int, extra, profile string) error {
	for _, d := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return err
		}
	}
	config := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>%[1]s/log/clickhouse-server.log</log>
        <errorlog>%[1]s/log/clickhouse-server.err.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>%[2]d</tcp_port>
    <path>%[1]s/data/</path>
    <tmp_path>%[1]s/tmp/</tmp_path>
    <user_files_path>%[1]s/user_files/</user_files_path>
    <format_schema_path>%[1]s/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>67108864</mark_cache_size>
%[3]s
</yandex>
`, s.dir, port, extra)
	if err := os.WriteFile(filepath.Join(s.dir, "config.xml"), []byte(config), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.dir, "users.xml"), []byte(fmt.Sprintf(usersXML, profile)), 0o644)
}

const usersXML = `<?xml version="1.0"?>
<yandex>
    <profiles><default>
        <max_memory_usage>2000000000</max_memory_usage>
        <!-- How often an idle connection checks for shutdown: the default
             (10 s) keeps a stopping server waiting for pooled connections. -->
        <poll_interval>1</poll_interval>
        %s
    </default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
`
