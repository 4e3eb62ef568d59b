#!/usr/bin/env bash
# warm-job.sh QUIRE SCHEMA DATA_DIR ROUNDS [JOB]: the connections job of a library's steady state.
#
# A `quire worker` on PostgreSQL (schema SCHEMA of $QUIRE_BENCH_DATABASE_URL) warms its indexes;
# then the book of process job JOB (default 4) is reprocessed ROUNDS times, one after the other
# (`quire replay JOB --from-stage chunking`), each time queueing its detect_connections job.
# Prints each such job's time from lease to completion, read from the worker's log.
set -euo pipefail
quire=$1 schema=$2 data_dir=$3 rounds=$4 job=${5:-4}
url=${QUIRE_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
log=$(mktemp)
q() { "$quire" --data-dir "$data_dir" --database-url "$url" --database-schema "$schema" "$@"; }
RUST_LOG=${RUST_LOG:-info,worker=debug,checkpoint_store=debug} q worker --metrics-addr off >"$log" 2>&1 &
worker=$!
sleep 8
finished() { grep -c 'kind=detect_connections.*worker::attempt: completed' "$log" || true; }
for _ in $(seq 1 "$rounds"); do
    before=$(finished)
    q replay "$job" --from-stage chunking >/dev/null
    for _ in $(seq 1 240); do
        [ "$(finished)" -gt "$before" ] && break
        sleep 0.5
    done
    sleep 3
done
kill -TERM "$worker"
wait "$worker" || true
python3 - "$log" <<'PY'
import datetime, re, sys
started, times = {}, []
for line in open(sys.argv[1]):
    m = re.match(r'(\S+Z)\s+\w+\s+job\{job_id=(\d+) kind=detect_connections[^}]*\}: worker::attempt: (started|completed)', line)
    if not m:
        continue
    at = datetime.datetime.fromisoformat(m.group(1).replace('Z', '+00:00'))
    if m.group(3) == 'started':
        started[m.group(2)] = at
    elif m.group(2) in started:
        times.append(round((at - started[m.group(2)]).total_seconds() * 1000))
print('detect_connections ms:', times, 'median', sorted(times)[len(times) // 2] if times else None)
PY
echo "worker log: $log"
