#!/bin/bash
# How long /readyz and /health/pipeline stay failing after a full disk is
# freed, on the embedded default. Needs root (it mounts a 200 MiB tmpfs as the
# data directory's disk) and curl, python3 and bc.
#
#   go build -o /tmp/cs ./cmd/cohortsync && sudo bash bench/diskfull/run.sh /tmp/cs
#   HOLD=40 sudo bash bench/diskfull/run.sh /tmp/cs    # keep the disk full for 40 s
#
# It lands 400 requests of 1,000 ids, fills the disk while the stream applies
# them (a sink then fails), pushes 60 more (the embedded broker answers 503),
# waits HOLD seconds, frees the disk and times both endpoints back to 200.
# It reports; it never fails because a machine is slow.
set -u
CS=${1:?usage: run.sh PATH_TO_COHORTSYNC_BINARY}
M=/tmp/cohortsync-diskfull
mkdir -p $M
mountpoint -q $M || mount -t tmpfs -o size=200m tmpfs $M
D=$M/d
rm -rf $M/*
export COHORTSYNC_EMBEDDED_KAFKA_ADDR=127.0.0.1:19093 COHORTSYNC_ADMIN_TOKEN=cst_diskfull-measure-admin-token
"$CS" serve --data-dir $D --http-addr 127.0.0.1:18081 > $M.out 2> $M.err &
PID=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:18081/healthz >/dev/null && break; sleep 0.2; done
PK=$(python3 -c "import json;print(json.load(open('$D/bootstrap.json'))['partner_api_keys']['mixpanel'])")
KEY=$(grep -o 'csk_[A-Za-z0-9_-]*' $M.out | head -1)
python3 -c "
import json
for i in range(1000): print(json.dumps({'user_id':f'u{i}','external_id':f'e{i}'}))" | curl -s -X POST http://127.0.0.1:18081/v1/workspaces/default/identities -H "Authorization: Bearer $COHORTSYNC_ADMIN_TOKEN" -H 'Content-Type: application/x-ndjson' --data-binary @- ; echo
push() { python3 -c "
import json,sys
n=int(sys.argv[1])
print(json.dumps({'partner_api_key':'$PK','client_secret':'$KEY','cohort_id':f'c{n%50}','cohort_changes':[{'user_ids':[f'e{(n*7+j)%1000}' for j in range(1000)]}]}))" $1 | curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:18081/partners/mixpanel/cohorts/users -H 'Content-Type: application/json' --data-binary @-; }
export -f push; export PK KEY
seq 400 | xargs -P 4 -I{} bash -c 'push {} >/dev/null'
# fill the disk, leaving nothing
dd if=/dev/zero of=$M/filler bs=1M 2>/dev/null
echo "disk full: $(df -h $M | tail -1)"
codes=""; for i in $(seq 21 80); do codes="$codes $(push $i)"; done
echo "pushes on a full disk:$codes" | tr ' ' '\n' | sort | uniq -c | tr '\n' ' '; echo
sleep ${HOLD:-3}
echo "readyz: $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18081/readyz) pipeline: $(curl -s http://127.0.0.1:18081/health/pipeline)"
rm -f $M/filler
T0=$(date +%s.%N)
r=""; p=""
for i in $(seq 600); do
  now=$(date +%s.%N)
  if [ -z "$r" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18081/readyz)" = 200 ]; then r=$(echo "$now - $T0" | bc); fi
  if [ -z "$p" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18081/health/pipeline)" = 200 ]; then p=$(echo "$now - $T0" | bc); fi
  [ -n "$r" ] && [ -n "$p" ] && break
  sleep 0.1
done
echo "after freeing the disk: /readyz 200 after ${r:-never} s, /health/pipeline 200 after ${p:-never} s"
echo "push after recovery: $(push 99)"
kill $PID; wait $PID 2>/dev/null
umount $M
