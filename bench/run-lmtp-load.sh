#!/usr/bin/env bash
# run-lmtp-load -- inbound e-mail throughput and latency (SPEC §3): LMTP senders in a closed
# loop (bench/lmtp-load.py), 250 only after each mail's commit, against a durable throwaway
# PostgreSQL. Four cases: 4 KB and 100 KB mails, 1 and 8 concurrent senders.
#
#   bench/run-lmtp-load.sh [--seconds S] [--size B] [--senders N]
#
# --size / --senders run only the cases with that mail size / number of senders.
# Prints one JSON line per case; lines are appended to bench/results/lmtp-load-<time>.jsonl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=lib-daemon.sh
source bench/lib-daemon.sh
SECONDS_PER=10
ONLY_SIZE=""
ONLY_SENDERS=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) SECONDS_PER=$2; shift 2;;
        --size) ONLY_SIZE=$2; shift 2;;
        --senders) ONLY_SENDERS=$2; shift 2;;
        *) echo "usage: $0 [--seconds S] [--size B] [--senders N]" >&2; exit 2;;
    esac
done
bench_build
mkdir -p bench/results
OUT=bench/results/lmtp-load-$(date -u +%Y%m%dT%H%M%SZ).jsonl
bench_pg_start
run=0
for size in 4096 102400; do
    for senders in 1 8; do
        run=$((run + 1))
        [[ -n $ONLY_SIZE && $ONLY_SIZE != "$size" ]] && continue
        [[ -n $ONLY_SENDERS && $ONLY_SENDERS != "$senders" ]] && continue
        bench_daemon_start "lmtp$run"
        python3 bench/lmtp-load.py --port "$LPORT" --http "$HPORT" --token "$TOKEN" \
            --size "$size" --senders "$senders" --seconds "$SECONDS_PER" | tee -a "$OUT"
        bench_daemon_stop
    done
done
