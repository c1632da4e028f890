# lib.sh -- shared by the tests/sql/check_*.sh scripts: PASS/FAIL bookkeeping and psql
# helpers. The caller sets ROOT before sourcing it, VERBOSE (default 0) and, before the
# first query, CONN (sql_check_start or sandbox_start set it).
# shellcheck shell=bash

VERBOSE=${VERBOSE:-0}
PASSES=0
FAILS=0
FAILED=()
pass() { PASSES=$((PASSES + 1)); echo "PASS $1"; }
fail() {
    FAILS=$((FAILS + 1)); FAILED+=("$1")
    echo "FAIL $1"
    if [[ -n ${2:-} ]]; then
        if (( VERBOSE )); then sed 's/^/     | /' <<<"$2"; else head -n 3 <<<"$2" | sed 's/^/     | /'; fi
    fi
}

PSQL=${PG_BIN:-/usr/lib/postgresql/15/bin}/psql
[[ -x $PSQL ]] || PSQL=psql
psqlc() { "$PSQL" "$CONN" -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }

# q SQL -> its output (stdout+stderr)
q() { psqlc -c "$1" 2>&1; }

# check NAME  (SQL on stdin; every line it prints must be "t", and there
# must be at least one).  Each statement runs with its own snapshot, so a
# statement that changes something and the one that verifies it are apart:
# within ONE statement, STABLE functions such as cd_admin_get do not see
# what a volatile call earlier in that statement wrote.
check() {
    local name=$1 sql out
    sql=$(cat)
    out=$(psqlc <<<"$sql" 2>&1)
    local ok=1 line
    [[ -n $out ]] || ok=0
    while IFS= read -r line; do [[ $line == t ]] || ok=0; done <<<"$out"
    if (( ok )); then pass "$name"; else fail "$name" "got: $out"; fi
}

# check_eq NAME EXPECTED  (SQL on stdin; its output must equal EXPECTED)
check_eq() {
    local name=$1 want=$2 sql out
    sql=$(cat)
    out=$(psqlc <<<"$sql" 2>&1)
    if [[ $out == "$want" ]]; then pass "$name"; else fail "$name" "want: $want
got:  $out"; fi
}

# check_err NAME SQLSTATE COLUMN MESSAGE  (SQL on stdin must fail like that)
#   COLUMN '-' = the error must name no column; MESSAGE is a glob pattern.
#   COLUMN is read from psql's verbose "COLUMN NAME:" line, i.e. the
#   PG_DIAG_COLUMN_NAME field that the daemon reads.
check_err() {
    local name=$1 want_state=$2 want_col=$3 want_msg=$4 sql out line state msg col
    sql=$(cat)
    out=$(printf '\\set VERBOSITY verbose\n%s\n' "$sql" | psqlc 2>&1)
    local re_err=$'(^|\n)(psql:[^ ]* )?ERROR:  ([0-9A-Z]{5}): ([^\n]*)' re_col=$'(^|\n)COLUMN NAME:  ([^\n]*)'
    if [[ ! $out =~ $re_err ]]; then fail "$name" "no error; output: $out"; return; fi
    state=${BASH_REMATCH[3]}
    msg=${BASH_REMATCH[4]}
    col=""
    [[ $out =~ $re_col ]] && col=${BASH_REMATCH[2]}
    [[ $want_col == - ]] && want_col=""
    # shellcheck disable=SC2053  # want_msg is a glob on purpose
    if [[ $state == "$want_state" && $col == "$want_col" && $msg == $want_msg ]]; then
        pass "$name"
    else
        fail "$name" "want: $want_state [$want_col] $want_msg
got:  $state [$col] $msg"
    fi
}

# sql_check_start NAME [ARGS...]  -- the start of a check whose only option is -v: parses
# ARGS, starts a throwaway cluster (128MB shared buffers) in /tmp/cd-check-NAME.XXXXXX,
# stopped and removed when the script exits; sets SANDBOX, SBDIR and CONN.
sql_check_start() {
    local name=$1 a
    shift
    SANDBOX=${PG_SANDBOX:-$ROOT/scripts/pg-sandbox}
    [[ -x $SANDBOX ]] || { echo "pg-sandbox not found: $SANDBOX" >&2; exit 1; }
    for a in "$@"; do
        case $a in
            -v) VERBOSE=1;;
            *) echo "usage: $0 [-v]" >&2; exit 2;;
        esac
    done
    SBDIR=$(mktemp -d "/tmp/cd-check-$name.XXXXXX")
    chmod 755 "$SBDIR"
    trap sql_check_cleanup EXIT
    trap 'exit 130' INT TERM
    sandbox_start 128MB
}

# shellcheck disable=SC2317  # invoked by the trap
sql_check_cleanup() { "$SANDBOX" stop "$SBDIR" >/dev/null 2>&1 || rm -rf "$SBDIR"; }

# sandbox_start SHARED_BUFFERS  -- a throwaway cluster in $SBDIR ($SANDBOX; fsync and
# synchronous_commit off: tests only); sets CONN, or exits when it cannot start.
sandbox_start() {
    CONN=$("$SANDBOX" start --dir "$SBDIR" --unix --fsync off --sync off --shared-buffers "$1" \
               2>"$SBDIR.start.log") || {
        cat "$SBDIR.start.log" >&2; rm -f "$SBDIR.start.log"; echo "FAIL cannot start PostgreSQL"; exit 1; }
    rm -f "$SBDIR.start.log"
    export PGCONNECT_TIMEOUT=10
}

# migrate_daemon_style FILE  -- checks that sql/FILE (the migration the caller tests) is there
# without transaction control statements, then applies every sql/NNNN_*.sql as
# src/store/migrate.c does (one transaction each: the script, then its schema_migrations row).
# Sets FILES; exits when the schema could not be built.
migrate_daemon_style() {
    local key=$1 num=${1:0:4} bad out ok=1 f b v
    shopt -s nullglob
    FILES=("$ROOT"/sql/[0-9][0-9][0-9][0-9]_*.sql)
    shopt -u nullglob
    if [[ " ${FILES[*]} " == *"/$key "* ]]; then pass "migrations: $key present"; else fail "migrations: $key present" "${FILES[*]}"; fi
    bad=$(grep -n -i -E '^[[:space:]]*(BEGIN|COMMIT|ROLLBACK|START[[:space:]]+TRANSACTION|ABORT)[[:space:]]*(WORK|TRANSACTION)?[[:space:]]*;' "$ROOT/sql/$key" || true)
    if [[ -z $bad ]]; then pass "migrations: $num has no transaction control statements"; else fail "migrations: $num has no transaction control statements" "$bad"; fi
    out=$(q 'CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())')
    [[ -z $out ]] || fail "migrations: create schema_migrations" "$out"
    for f in "${FILES[@]}"; do
        b=${f##*/}; v=$((10#${b:0:4}))
        out=$(psqlc -c "SET client_min_messages = warning" -c "BEGIN" -c "$(cat "$f")" \
                    -c "INSERT INTO schema_migrations (version, name) VALUES ($v, '$b')" -c "COMMIT" 2>&1)
        if [[ -n $out ]]; then ok=0; fail "migrations: apply $b (daemon style)" "$out"; fi
    done
    (( ok )) && pass "migrations: all applied (daemon style)"
    if (( ! ok )); then echo "# cannot go on without the schema"; exit 1; fi
}
