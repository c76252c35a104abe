#!/bin/bash
# Seconds from `serve` start to /readyz 200 (partner requests taken) and to
# /health/pipeline 200 (the stream has caught up), for a fresh instance whose
# identity replica must be rebuilt from a topic of USERS identities. Needs
# curl, python3 and bc. It reports; it never fails because a machine is slow.
#
#   go build -o /tmp/cs ./cmd/cohortsync
#   bash bench/freshstart/run.sh /tmp/cs 300000 [/tmp/cs-other ...]
set -eu
USERS=${2:?usage: run.sh BINARY USERS [BINARY...]}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
python3 -c "
import json, sys
with open('$W/ids.ndjson', 'w') as f:
    for i in range(int(sys.argv[1])):
        f.write(json.dumps({'user_id': f'u{i}', 'external_id': f'e{i}', 'device_ids': [f'd{i}']}) + '\n')
" "$USERS"
"$1" identities load "$W/ids.ndjson" --data-dir "$W/base" >/dev/null
export COHORTSYNC_EMBEDDED_KAFKA_ADDR=127.0.0.1:19094 COHORTSYNC_ADMIN_TOKEN=cst_freshstart-bench-admin
for B in "$1" "${@:3}"; do
  rm -rf "$W/d" && cp -r "$W/base" "$W/d"
  T0=$(date +%s.%N)
  "$B" serve --data-dir "$W/d" --http-addr 127.0.0.1:18082 >/dev/null 2>&1 &
  P=$!
  r="" p=""
  while [ -z "$p" ]; do
    now=$(date +%s.%N)
    if [ -z "$r" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18082/readyz)" = 200 ]; then r=$(echo "$now - $T0" | bc); fi
    if [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18082/health/pipeline)" = 200 ]; then p=$(echo "$now - $T0" | bc); fi
    sleep 0.1
  done
  echo "$B: /readyz 200 after ${r:-$p} s, /health/pipeline 200 after $p s"
  kill $P; wait $P 2>/dev/null || true
done
