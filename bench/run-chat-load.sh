#!/usr/bin/env bash
# run-chat-load -- durable chat ingest of contactd next to this machine's PostgreSQL ceiling,
# measured in the same run.
#
#   bench/run-chat-load.sh [--seconds S] [--customers N] [--window W]
#
# 1. builds contactd (release) and chat-load into build-bench/, and pg-ceiling from
#    ../shared/bench into build-bench/;
# 2. starts a throwaway PostgreSQL (scripts/pg-sandbox, durable: fsync and synchronous_commit
#    on);
# 3. pg-ceiling --mode pipeline --batch 100 (the batched ceiling);
# 4. contactd with a client listener; chat-load open loop at 2,000 messages/s for latency
#    (first: steady state), then closed loop (N customers x W in flight) for throughput;
# 5. prints the figures, the ratio and the CPU that PostgreSQL, contactd and chat-load each
#    spent per message, and appends every JSON line to bench/results/chat-load-<time>.jsonl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
SECONDS_=10 CUSTOMERS=200 WINDOW=4
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) SECONDS_=$2; shift 2;;
        --customers) CUSTOMERS=$2; shift 2;;
        --window) WINDOW=$2; shift 2;;
        *) echo "usage: $0 [--seconds S] [--customers N] [--window W]" >&2; exit 2;;
    esac
done
B=$ROOT/build-bench
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONTACTD_TESTS=OFF >/dev/null
cmake --build "$B" -j"$(nproc)" --target contactd chat-load >/dev/null
SHARED=$ROOT/../shared/bench
gcc -O2 -o "$B/pg-ceiling" "$SHARED/pg-ceiling.c" $(pkg-config --cflags --libs libpq) -lpthread

mkdir -p bench/results
OUT=bench/results/chat-load-$(date -u +%Y%m%dT%H%M%SZ).jsonl
PGDIR=$(mktemp -d /tmp/ctd-bench-pg.XXXXXX); rmdir "$PGDIR"
CONN=$(scripts/pg-sandbox start --dir "$PGDIR")
DAEMON=""
cleanup() {
    [[ -n $DAEMON ]] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    scripts/pg-sandbox stop "$PGDIR" >/dev/null 2>&1 || true
    rm -f "$PGDIR.closed.json"
}
trap cleanup EXIT

echo "== pg-ceiling pipeline batch 100 (its own database)" >&2
psql -X -q "$CONN" -c "CREATE DATABASE ceiling"
CEIL_CONN="${CONN/dbname=app/dbname=ceiling}"
"$B/pg-ceiling" --conninfo "$CEIL_CONN" --mode pipeline --batch 100 --seconds "$SECONDS_" | tee -a "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CPORT=$(free_port) HPORT=$(free_port)
CONF=$PGDIR.conf
cat >"$CONF" <<CFG
[daemon]
log_level = warn
[database]
conninfo = $CONN
pool_size = 4
[listen]
client = 127.0.0.1:$CPORT
phone =
lmtp =
http = 127.0.0.1:$HPORT
CFG
"$B/contactd" -c "$CONF" --migrate >/dev/null
TOKEN=$("$B/contactd" -c "$CONF" --create-api-token bench admin)
"$B/contactd" -c "$CONF" 2>"$PGDIR.daemon.log" &
DAEMON=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HPORT/readyz" >/dev/null && break; sleep 0.1; done
curl -sf -H "Authorization: Bearer $TOKEN" -d '{"name":"general"}' "http://127.0.0.1:$HPORT/v1/queues" >/dev/null

# The open loop runs first: it measures steady-state latency, not the checkpoint and
# autovacuum that follow the closed loop's burst of writes.
echo "== chat-load open loop: 2000 messages/s" >&2
"$B/chat-load" --port "$CPORT" --customers 100 --rate 2000 --seconds "$SECONDS_" \
    --label chat-load-2000 | tee -a "$OUT"
echo "== chat-load closed loop: $CUSTOMERS customers x $WINDOW in flight" >&2
"$B/chat-load" --port "$CPORT" --customers "$CUSTOMERS" --window "$WINDOW" --seconds "$SECONDS_" \
    --label chat-load-closed >"$PGDIR.closed.json" &
LOADGEN=$!
# CPU of each party while the closed loop is measured (after chat-load's 2 s warm-up, up to
# a second before its end): user + system ticks of PostgreSQL's processes, of contactd and of
# chat-load
PGOS=$(stat -c %U "$PGDIR/data")
# shellcheck source=lib-cpu.sh
source bench/lib-cpu.sh
sleep 2
P0=$(cpu_ticks $(pgrep -u "$PGOS")) D0=$(cpu_ticks "$DAEMON") L0=$(cpu_ticks "$LOADGEN") T0=$(date +%s.%N)
sleep $(( SECONDS_ > 2 ? SECONDS_ - 1 : 1 ))
P1=$(cpu_ticks $(pgrep -u "$PGOS")) D1=$(cpu_ticks "$DAEMON") L1=$(cpu_ticks "$LOADGEN") T1=$(date +%s.%N)
wait "$LOADGEN"
tee -a "$OUT" <"$PGDIR.closed.json"
python3 -c 'import json, sys
hz, secs = int(sys.argv[1]), float(sys.argv[2]) - float(sys.argv[3])
print(json.dumps({"bench": "chat-load-closed-cpu", "seconds": round(secs, 2),
                  "pg_cores": round(int(sys.argv[4]) / hz / secs, 3),
                  "contactd_cores": round(int(sys.argv[5]) / hz / secs, 3),
                  "chat_load_cores": round(int(sys.argv[6]) / hz / secs, 3)}))' \
    "$(getconf CLK_TCK)" "$T1" "$T0" "$((P1 - P0))" "$((D1 - D0))" "$((L1 - L0))" | tee -a "$OUT"

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
ceil = next(r for r in rows if "rows_per_s" in r)
closed = next(r for r in rows if r.get("bench") == "chat-load-closed")
rate = next(r for r in rows if r.get("bench") == "chat-load-2000")
print("\nPostgreSQL ceiling (pipeline, 100 rows/commit): %.0f rows/s" % ceil["rows_per_s"])
print("contactd durable chat ingest: %.0f msgs/s = %.1f %% of the ceiling (target >= 60 %%)"
      % (closed["msgs_per_s"], 100 * closed["msgs_per_s"] / ceil["rows_per_s"]))
print("ack latency at 2000 msgs/s: p50 %.2f ms, p99 %.2f ms (target p99 <= 10 ms)"
      % (rate["p50_ms"], rate["p99_ms"]))
cpu = next(r for r in rows if r.get("bench") == "chat-load-closed-cpu")
us = lambda cores: cores * 1e6 / closed["msgs_per_s"]
print("CPU per message in the closed loop: PostgreSQL %.0f us, contactd %.0f us, chat-load %.0f us"
      " (%.2f of the machine's cores busy)"
      % (us(cpu["pg_cores"]), us(cpu["contactd_cores"]), us(cpu["chat_load_cores"]),
         cpu["pg_cores"] + cpu["contactd_cores"] + cpu["chat_load_cores"]))
PY
echo "results: $OUT" >&2
