# lib-daemon.sh -- shared by bench/run-*.sh: a release build, a durable throwaway PostgreSQL
# and contactd daemons on free ports.  Source it after `set -euo pipefail` and cd "$ROOT".
#   bench_build [targets...]         builds into $B (build-bench/)
#   bench_pg_start                   sets CONN and PGDIR; stopped on exit
#   bench_daemon_start DB [KEY=VAL]  a fresh database DB (the previous one dropped, the cluster
#                                    checkpointed); sets CPORT PPORT HPORT LPORT TOKEN DAEMON
#   bench_daemon_stop
B=$ROOT/build-bench
DAEMON=""
PGDIR=""
BENCH_LAST_DB=""

bench_build() {
    cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONTACTD_TESTS=OFF >/dev/null
    cmake --build "$B" -j"$(nproc)" --target contactd "$@" >/dev/null
}

bench_cleanup() {
    bench_daemon_stop
    [[ -n $PGDIR ]] && "$ROOT/scripts/pg-sandbox" stop "$PGDIR" >/dev/null 2>&1 || true
}

bench_pg_start() {
    PGDIR=$(mktemp -d /tmp/ctd-bench-pg.XXXXXX); rmdir "$PGDIR"
    CONN=$("$ROOT/scripts/pg-sandbox" start --dir "$PGDIR")
    trap bench_cleanup EXIT
    # A new cluster has no WAL segments to recycle: each 16 MB of WAL makes the writer
    # create and zero-fill a new segment file and fsync it (15-30 ms, with the WAL write
    # lock held: every commit waits). A server that has run for a while renames old
    # segments instead. So that benchmarks see the latter, ~640 MB of WAL is written and
    # checkpointed first (min_wal_size = 1GB keeps the segments for reuse).
    psql -X -q "$CONN" -c "CREATE TABLE bench_wal_warmup AS SELECT g, repeat(md5(g::text), 30) AS x
                              FROM generate_series(1, 640000) g" \
        -c "DROP TABLE bench_wal_warmup" -c "CHECKPOINT"
}

bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_daemon_start() {
    local db=$1
    # Every run starts from the same state, as pg-ceiling's do (it truncates and
    # checkpoints): the previous run's database is dropped (else autovacuum works through
    # its tables, and its dirty buffers are written out, during this run) and the cluster
    # checkpointed.
    if [[ -n $BENCH_LAST_DB && -z $DAEMON ]]; then
        psql -X -q "$CONN" -c "DROP DATABASE IF EXISTS $BENCH_LAST_DB"
    fi
    psql -X -q "$CONN" -c "CHECKPOINT" -c "CREATE DATABASE $db"
    BENCH_LAST_DB=$db
    CPORT=$(bench_free_port) PPORT=$(bench_free_port) HPORT=$(bench_free_port) LPORT=$(bench_free_port)
    local conf=$PGDIR.$db.conf
    cat >"$conf" <<CFG
[daemon]
log_level = ${CTD_BENCH_LOG_LEVEL:-warn}
[database]
conninfo = ${CONN/dbname=app/dbname=$db}
pool_size = 4
[listen]
client = 127.0.0.1:$CPORT
phone = 127.0.0.1:$PPORT
lmtp = 127.0.0.1:$LPORT
http = 127.0.0.1:$HPORT
CFG
    "$B/contactd" -c "$conf" --migrate >/dev/null
    TOKEN=$("$B/contactd" -c "$conf" --create-api-token bench admin)
    "$B/contactd" -c "$conf" 2>"$PGDIR.$db.log" &
    DAEMON=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HPORT/readyz" >/dev/null && return 0; sleep 0.1; done
    echo "contactd did not become ready; see $PGDIR.$db.log" >&2
    return 1
}

bench_daemon_stop() {
    if [[ -n $DAEMON ]]; then
        kill "$DAEMON" 2>/dev/null || true
        wait "$DAEMON" 2>/dev/null || true
        DAEMON=""
    fi
}
