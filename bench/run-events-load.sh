#!/usr/bin/env bash
# run-events-load -- durable POST /v1/events throughput and latency with wrk over keep-alive
# connections, against a durable throwaway PostgreSQL.
#
#   bench/run-events-load.sh [--seconds S] [--connections C] [--runs R] [--warmup S]
#
# Prints each run's JSON line (bench/events.lua) and the medians; appended to
# bench/results/events-load-<time>.jsonl. Needs wrk (apt install wrk).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=lib-daemon.sh
source bench/lib-daemon.sh
SECS=10 CONNS=32 RUNS=3 WARMUP=3
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) SECS=$2; shift 2;;
        --connections) CONNS=$2; shift 2;;
        --runs) RUNS=$2; shift 2;;
        --warmup) WARMUP=$2; shift 2;;
        *) echo "usage: $0 [--seconds S] [--connections C] [--runs R]" >&2; exit 2;;
    esac
done
command -v wrk >/dev/null || { echo "wrk is not installed: apt install wrk" >&2; exit 1; }
bench_build
mkdir -p bench/results
OUT=bench/results/events-load-$(date -u +%Y%m%dT%H%M%SZ).jsonl
bench_pg_start
for run in $(seq 1 "$RUNS"); do
    bench_daemon_start "events$run"
    curl -sf -H "Authorization: Bearer $TOKEN" -d '{"name":"sms"}' "http://127.0.0.1:$HPORT/v1/queues" >/dev/null
    # warm-up, not counted: the 1,000 customers and their conversations are created (a
    # different workload: new customers) and the store connections have their plans
    PREFIX=w TOKEN=$TOKEN wrk -t2 -c"$CONNS" -d"${WARMUP}s" -s bench/events.lua "http://127.0.0.1:$HPORT" >/dev/null
    PREFIX=m TOKEN=$TOKEN wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s bench/events.lua \
        "http://127.0.0.1:$HPORT" | grep '^{' | tee -a "$OUT"
    bench_daemon_stop
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("runs=%d POST /v1/events median %.0f/s, p99 median %.1f ms (targets >= 5,000/s, p99 <= 20 ms); non-2xx %d"
      % (len(rows), statistics.median(r["rps"] for r in rows),
         statistics.median(r["p99_ms"] for r in rows), sum(r["non2xx"] for r in rows)))
PY
