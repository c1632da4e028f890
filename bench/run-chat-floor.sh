#!/usr/bin/env bash
# run-chat-floor -- what PostgreSQL alone can ingest with contactd's chat data model, next to
# the batched ceiling measured in the same run, without the daemon.
#
#   bench/run-chat-floor.sh [--seconds S] [--clients "1 2"]
#
# run-chat-load.sh measures the daemon end to end.  This benchmark answers a narrower
# question: how many customer chat messages per second PostgreSQL can durably store on this
# machine with contactd's schema, when nothing else competes for the CPU.  pgbench commits
# 100 messages per transaction (synchronous_commit on, as the daemon's group commit does),
# each client writing for its own 100 customers:
#
#   full      SELECT cd_chat_customer_messages(<100 items>): what the daemon runs for a batch
#             (validation, retries by client_msg_id, the open conversation, the message
#             rows, the events log, the answer).  The items are built by the server in the
#             same statement (a few microseconds a message).
#   rows      the two writes no chat message can do without, and nothing else: INSERT the 100
#             message rows into `messages` and UPDATE the 100 conversations' last_message_at
#             (with the table's foreign keys and triggers, as in production).
#   bare      the same two statements into a copy of `messages` with its indexes and checks
#             but no foreign keys and no triggers (no events log, no SLA hook).
#
# Prints one JSON line per measurement (label, clients, msgs_per_s, ratio to the ceiling, and
# the CPU time PostgreSQL's processes spent per message or row: pg_cpu_us) and appends them
# to bench/results/chat-floor-<time>.jsonl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
SECONDS_=10 CLIENTS="1 2"
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) SECONDS_=$2; shift 2;;
        --clients) CLIENTS=$2; shift 2;;
        *) echo "usage: $0 [--seconds S] [--clients \"1 2\"]" >&2; exit 2;;
    esac
done
command -v pgbench >/dev/null || { echo "run-chat-floor: pgbench is missing (apt-get install postgresql-contrib)" >&2; exit 1; }
B=$ROOT/build-bench
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONTACTD_TESTS=OFF >/dev/null
cmake --build "$B" -j"$(nproc)" --target contactd >/dev/null
SHARED=$ROOT/../shared/bench
gcc -O2 -o "$B/pg-ceiling" "$SHARED/pg-ceiling.c" $(pkg-config --cflags --libs libpq) -lpthread

mkdir -p bench/results
OUT=bench/results/chat-floor-$(date -u +%Y%m%dT%H%M%SZ).jsonl
PGDIR=$(mktemp -d /tmp/ctd-floor-pg.XXXXXX); rmdir "$PGDIR"
CONN=$(scripts/pg-sandbox start --dir "$PGDIR")
SQLDIR=$(mktemp -d /tmp/ctd-floor-sql.XXXXXX)
cleanup() {
    scripts/pg-sandbox stop "$PGDIR" >/dev/null 2>&1 || true
    rm -rf "$SQLDIR" "$PGDIR.conf"
}
trap cleanup EXIT

# shellcheck source=lib-cpu.sh
source bench/lib-cpu.sh
PGUSER_OS=$(stat -c %U "$PGDIR/data")
pg_ticks() { cpu_ticks $(pgrep -u "$PGUSER_OS"); }
HZ=$(getconf CLK_TCK)

echo "== pg-ceiling pipeline batch 100 (its own database)" >&2
psql -X -q "$CONN" -c "CREATE DATABASE ceiling"
T0=$(pg_ticks)
"$B/pg-ceiling" --conninfo "${CONN/dbname=app/dbname=ceiling}" --mode pipeline --batch 100 \
    --seconds "$SECONDS_" --label ceiling >"$SQLDIR/ceiling.json"
T1=$(pg_ticks)
python3 -c 'import json,sys
d = json.loads(open(sys.argv[1]).readline())
# the warm-up second is not in rows: CPU per row is a slight overestimate
d["pg_cpu_us"] = round((int(sys.argv[2]) / int(sys.argv[3])) * 1e6 / d["rows"], 1)
print(json.dumps(d))' "$SQLDIR/ceiling.json" "$((T1 - T0))" "$HZ" | tee -a "$OUT"

echo "== contactd schema, one queue, 100 customers per client, each with an open conversation" >&2
printf '[database]\nconninfo = %s\n' "$CONN" >"$PGDIR.conf"
"$B/contactd" -c "$PGDIR.conf" --migrate >/dev/null
NCUST=$(( 100 * $(tr ' ' '\n' <<<"$CLIENTS" | sort -n | tail -1) ))
psql -X -q -v ON_ERROR_STOP=1 "$CONN" <<SQL
SELECT cd_admin_create('queues', '{"name":"general"}');
INSERT INTO customers (name) SELECT 'floor ' || g FROM generate_series(1, $NCUST) g;
-- one message each opens every customer's conversation
SELECT count(*) FROM jsonb_array_elements(cd_chat_customer_messages(
    (SELECT jsonb_agg(jsonb_build_object('customer', id, 'body', 'hello', 'queue', 'general'))
       FROM customers))) r WHERE (r ->> 'ok')::boolean;
-- client k (0-based) writes for the customers ranked 100k+1 .. 100k+100
CREATE TABLE floor_pairs AS
SELECT (row_number() OVER (ORDER BY c.id) - 1) / 100 AS client, c.id AS cust, v.id AS conv
  FROM customers c JOIN conversations v ON v.customer_id = c.id;
CREATE INDEX ON floor_pairs (client);
CREATE TABLE floor_messages (LIKE messages INCLUDING ALL);
SQL
psql -X -q "$CONN" -c ANALYZE 2>/dev/null

BODY="hello there, this is a customer message of about sixty bytes"
cat >"$SQLDIR/full.sql" <<SQL
\set c random(0, 1000000000)
SELECT length(cd_chat_customer_messages((SELECT jsonb_agg(jsonb_build_object('customer', p.cust, 'body', '$BODY', 'client_msg_id', 'f' || :c || '-' || p.cust)) FROM floor_pairs p WHERE p.client = :client_id))::text);
SQL
for t in messages floor_messages; do
    cat >"$SQLDIR/$t.sql" <<SQL
\set c random(0, 1000000000)
BEGIN;
INSERT INTO $t (conversation_id, channel, direction, author_kind, author_customer_id, body, client_msg_id) SELECT p.conv, 'chat', 'in', 'customer', p.cust, '$BODY', 'r' || :c || '-' || p.cust FROM floor_pairs p WHERE p.client = :client_id;
UPDATE conversations SET last_message_at = now() WHERE id IN (SELECT p.conv FROM floor_pairs p WHERE p.client = :client_id);
COMMIT;
SQL
done

CEIL=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["rows_per_s"])' "$OUT")
run() { # label script clients
    local out t0 t1
    psql -X -q "$CONN" -c "CHECKPOINT" >/dev/null 2>&1 || true
    t0=$(pg_ticks)
    out=$(pgbench -n -f "$2" -c "$3" -j "$3" -T "$SECONDS_" "$CONN" 2>&1)
    t1=$(pg_ticks)
    python3 -c 'import json, re, sys
label, clients, out, ceil = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ticks, hz = int(sys.argv[5]), int(sys.argv[6])
tps = float(re.search(r"^tps = ([0-9.]+)", out, re.M).group(1))
n = int(re.search(r"number of transactions actually processed: ([0-9]+)", out).group(1)) * 100
print(json.dumps({"bench": "chat-floor-" + label, "clients": clients, "batch": 100,
                  "msgs_per_s": round(tps * 100), "ceiling_rows_per_s": ceil,
                  "ratio": round(tps * 100 / ceil, 3),
                  "pg_cpu_us": round(ticks / hz * 1e6 / n, 1)}))' \
        "$1" "$3" "$out" "$CEIL" "$((t1 - t0))" "$HZ" | tee -a "$OUT"
}
# interleaved: a slow stretch of the machine hits every variant alike
for c in $CLIENTS; do
    run full "$SQLDIR/full.sql" "$c"
    run rows "$SQLDIR/messages.sql" "$c"
    run bare "$SQLDIR/floor_messages.sql" "$c"
done
echo "results: $OUT" >&2
