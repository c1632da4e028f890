#!/usr/bin/env bash
# run-phone-route -- phone event to `route` push latency (SPEC §2) with an agent that
# accepts at once, against a durable throwaway PostgreSQL.
#
#   bench/run-phone-route.sh [--calls N] [--runs R]
#
# Prints each run's JSON line (bench/phone-route.c, built as build-bench/phone-route) and the
# median of the p99s; lines are appended to bench/results/phone-route-<time>.jsonl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=lib-daemon.sh
source bench/lib-daemon.sh
CALLS=2000 RUNS=3
while [[ $# -gt 0 ]]; do
    case $1 in
        --calls) CALLS=$2; shift 2;;
        --runs) RUNS=$2; shift 2;;
        *) echo "usage: $0 [--calls N] [--runs R]" >&2; exit 2;;
    esac
done
bench_build phone-route
mkdir -p bench/results
OUT=bench/results/phone-route-$(date -u +%Y%m%dT%H%M%SZ).jsonl
bench_pg_start
for run in $(seq 1 "$RUNS"); do
    bench_daemon_start "phone$run"
    "$B/phone-route" --port "$CPORT" --phone "$PPORT" --http "$HPORT" \
        --token "$TOKEN" --calls "$CALLS" | tee -a "$OUT"
    bench_daemon_stop
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("runs=%d route p50 median %.2f ms, p99 median %.2f ms (target p99 <= 5 ms), %.0f calls/s"
      % (len(rows), statistics.median(r["route_ms_p50"] for r in rows),
         statistics.median(r["route_ms_p99"] for r in rows),
         statistics.median(r["calls_per_s"] for r in rows)))
PY
