#!/usr/bin/env bash
# run-sla-timing -- how close to their due time SLA breaches reach supervisors.
#
#   bench/run-sla-timing.sh [--n N] [--budget S] [--runs R]
#
# Builds contactd (release) into build-bench/, starts a throwaway PostgreSQL (durable) and
# the daemon, then runs bench/sla-timing.py R times (default 3; each with its own policy
# and queue in a fresh database) and prints each run's JSON line plus the median of the
# medians. Lines are appended to bench/results/sla-timing-<time>.jsonl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
N=500 BUDGET=5 RUNS=3
while [[ $# -gt 0 ]]; do
    case $1 in
        --n) N=$2; shift 2;;
        --budget) BUDGET=$2; shift 2;;
        --runs) RUNS=$2; shift 2;;
        *) echo "usage: $0 [--n N] [--budget S] [--runs R]" >&2; exit 2;;
    esac
done
B=$ROOT/build-bench
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONTACTD_TESTS=OFF >/dev/null
cmake --build "$B" -j"$(nproc)" --target contactd >/dev/null

mkdir -p bench/results
OUT=bench/results/sla-timing-$(date -u +%Y%m%dT%H%M%SZ).jsonl
PGDIR=$(mktemp -d /tmp/ctd-bench-pg.XXXXXX); rmdir "$PGDIR"
CONN=$(scripts/pg-sandbox start --dir "$PGDIR")
DAEMON=""
cleanup() {
    [[ -n $DAEMON ]] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    scripts/pg-sandbox stop "$PGDIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for run in $(seq 1 "$RUNS"); do
    DB=sla$run
    psql -X -q "$CONN" -c "CREATE DATABASE $DB"
    CPORT=$(free_port) HPORT=$(free_port)
    CONF=$PGDIR.$run.conf
    cat >"$CONF" <<CFG
[daemon]
log_level = warn
[database]
conninfo = ${CONN/dbname=app/dbname=$DB}
pool_size = 4
[listen]
client = 127.0.0.1:$CPORT
phone =
lmtp =
http = 127.0.0.1:$HPORT
[limits]
max_connections = $((N + 100))
CFG
    "$B/contactd" -c "$CONF" --migrate >/dev/null
    TOKEN=$("$B/contactd" -c "$CONF" --create-api-token bench admin)
    "$B/contactd" -c "$CONF" 2>"$PGDIR.daemon.$run.log" &
    DAEMON=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HPORT/readyz" >/dev/null && break; sleep 0.1; done
    python3 bench/sla-timing.py --port "$CPORT" --http "$HPORT" --token "$TOKEN" --n "$N" \
        --budget "$BUDGET" | tee -a "$OUT"
    kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true; DAEMON=""
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
p50 = [r["late_ms_p50"] for r in rows if "late_ms_p50" in r]
p99 = [r["late_ms_p99"] for r in rows if "late_ms_p99" in r]
print("runs=%d breaches=%s duplicates=%d lateness median of p50 %.1f ms, median of p99 %.1f ms "
      "(target: within 100 ms)" % (len(rows), [r["breaches"] for r in rows],
                                   sum(r["duplicates"] for r in rows),
                                   statistics.median(p50) if p50 else -1,
                                   statistics.median(p99) if p99 else -1))
PY
