#!/usr/bin/env bash
# run-sla-timing -- how close to their due time SLA breaches reach supervisors.
#
#   bench/run-sla-timing.sh [--n N] [--budget S] [--runs R]
#
# Builds contactd (release) into build-bench/, starts a throwaway PostgreSQL (durable) and,
# per run, a daemon on a fresh database, then bench/sla-timing.py (default 3 runs). Prints
# each run's JSON line plus the median of the medians; lines are appended to
# bench/results/sla-timing-<time>.jsonl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=lib-daemon.sh
source bench/lib-daemon.sh
N=500 BUDGET=5 RUNS=3
while [[ $# -gt 0 ]]; do
    case $1 in
        --n) N=$2; shift 2;;
        --budget) BUDGET=$2; shift 2;;
        --runs) RUNS=$2; shift 2;;
        *) echo "usage: $0 [--n N] [--budget S] [--runs R]" >&2; exit 2;;
    esac
done
bench_build
mkdir -p bench/results
OUT=bench/results/sla-timing-$(date -u +%Y%m%dT%H%M%SZ).jsonl
bench_pg_start
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for run in $(seq 1 "$RUNS"); do
    bench_daemon_start "sla$run"
    python3 bench/sla-timing.py --port "$CPORT" --http "$HPORT" --token "$TOKEN" --n "$N" \
        --budget "$BUDGET" | tee -a "$OUT"
    bench_daemon_stop
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
