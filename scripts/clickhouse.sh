#!/usr/bin/env bash
# Runs a local ClickHouse server for tests and CI, without Docker or systemd.
#
#   scripts/clickhouse.sh install   apt-get install Debian's clickhouse-server and -client
#   scripts/clickhouse.sh up        write a config under .clickhouse/, start the server, wait for SELECT 1
#   scripts/clickhouse.sh down      SIGTERM the server started by `up` and wait for it to exit
#   scripts/clickhouse.sh status    say whether it runs and which version answers
#
# Everything the server writes (config, data, logs, pid file) stays under
# CLICKHOUSE_DIR (default: .clickhouse/ in the repository, which git ignores).
# Environment: CLICKHOUSE_DIR, CLICKHOUSE_TCP_PORT (9000), CLICKHOUSE_HTTP_PORT
# (8123), CLICKHOUSE_START_TIMEOUT and CLICKHOUSE_STOP_TIMEOUT in seconds (30).
#
# Debian bookworm ships ClickHouse 18.16.1; cohortsync's SQL runs on it and on
# current releases (see DESIGN §7 for the dialect notes).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${CLICKHOUSE_DIR:-$repo/.clickhouse}"
tcp_port="${CLICKHOUSE_TCP_PORT:-9000}"
http_port="${CLICKHOUSE_HTTP_PORT:-8123}"
start_timeout="${CLICKHOUSE_START_TIMEOUT:-30}"
stop_timeout="${CLICKHOUSE_STOP_TIMEOUT:-30}"
pid_file="$dir/clickhouse-server.pid"
log_file="$dir/log/clickhouse-server.log"
err_file="$dir/log/clickhouse-server.err.log"
out_file="$dir/log/stdout.log"

say() { printf 'clickhouse: %s\n' "$*"; }
die() { printf 'clickhouse: %s\n' "$*" >&2; exit 1; }

# Debian puts the server in /usr/sbin, which is not on every user's PATH.
server_bin() {
  command -v clickhouse-server 2>/dev/null && return
  [ -x /usr/sbin/clickhouse-server ] && { echo /usr/sbin/clickhouse-server; return; }
  return 1
}

# port_in_use PORT: true when something accepts TCP connections on it.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

answers() {
  clickhouse-client --host 127.0.0.1 --port "$tcp_port" -q 'SELECT 1' >/dev/null 2>&1
}

# running_pid prints the pid of the server `up` started, if it still runs
# (a stale pid file whose pid now belongs to another program does not count).
running_pid() {
  [ -f "$pid_file" ] || return 1
  local pid
  pid="$(cat "$pid_file")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    grep -qa clickhouse-server "/proc/$pid/cmdline" || return 1
  fi
  echo "$pid"
}

show_logs() {
  local f
  for f in "$out_file" "$err_file" "$log_file"; do
    [ -s "$f" ] || continue
    printf -- '--- last lines of %s\n' "$f" >&2
    tail -n 30 "$f" >&2
  done
}

cmd_install() {
  if server_bin >/dev/null && command -v clickhouse-client >/dev/null; then
    say "already installed: $(clickhouse-client --version 2>&1 | head -n1)"
    return
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
  say "installed: $(clickhouse-client --version 2>&1 | head -n1)"
}

write_config() {
  mkdir -p "$dir/conf" "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  cat >"$dir/conf/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/clickhouse.sh; rewritten on every 'up'. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$log_file</log>
        <errorlog>$err_file</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$tcp_port</tcp_port>
    <http_port>$http_port</http_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
EOF
  cat >"$dir/conf/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- Written by scripts/clickhouse.sh: one passwordless default user, local only. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <!-- How often an idle connection checks for shutdown; the default
                 (10 s) makes 'down' wait that long for pooled test clients. -->
            <poll_interval>1</poll_interval>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

cmd_up() {
  local bin pid
  bin="$(server_bin)" || die "clickhouse-server is not installed: run '$0 install'"
  command -v clickhouse-client >/dev/null || die "clickhouse-client is not installed: run '$0 install'"
  if pid="$(running_pid)"; then
    answers || die "server pid $pid is running but does not answer on port $tcp_port"
    say "already running (pid $pid) on 127.0.0.1:$tcp_port"
    return
  fi
  # Otherwise the wait below could be answered by another server while ours
  # died with "Address already in use".
  local port
  for port in "$tcp_port" "$http_port"; do
    port_in_use "$port" && die "port $port is already in use; stop what listens there or set CLICKHOUSE_TCP_PORT/CLICKHOUSE_HTTP_PORT"
  done

  write_config
  : >"$out_file"
  # setsid: the server must not die with the shell that started it (make, CI step).
  setsid "$bin" --config-file="$dir/conf/config.xml" >>"$out_file" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pid_file"

  local deadline=$((SECONDS + start_timeout))
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pid_file"
      show_logs
      die "server exited during start-up"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_logs
      kill -TERM "$pid" 2>/dev/null || true
      rm -f "$pid_file"
      die "server did not answer SELECT 1 within ${start_timeout}s"
    fi
    sleep 0.2
  done
  say "up (pid $pid): 127.0.0.1:$tcp_port native, 127.0.0.1:$http_port http, $(clickhouse-client --port "$tcp_port" -q 'SELECT version()')"
}

cmd_down() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pid_file"
    say "not running"
    return
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + stop_timeout))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_logs
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$pid_file"
      die "server pid $pid did not stop within ${stop_timeout}s after SIGTERM; killed it"
    fi
    sleep 0.2
  done
  rm -f "$pid_file"
  say "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if answers; then
      say "running (pid $pid) on 127.0.0.1:$tcp_port, version $(clickhouse-client --port "$tcp_port" -q 'SELECT version()')"
      return
    fi
    say "pid $pid is running but does not answer on port $tcp_port"
    return 1
  fi
  say "not running"
  return 1
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
