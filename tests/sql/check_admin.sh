#!/usr/bin/env bash
# check_admin.sh -- verifies the SQL migrations (sql/NNNN_*.sql) and the
# administration functions of 0002_admin.sql against a throwaway PostgreSQL.
#
#   tests/sql/check_admin.sh [-v]
#
# 1. starts a cluster with scripts/pg-sandbox (or $PG_SANDBOX),
# 2. applies every migration the way the daemon does (BEGIN; the whole file as
#    one simple query; INSERT INTO schema_migrations; COMMIT) into schema public,
# 3. applies them again from empty into a fresh schema, this time split into
#    statements by psql -f inside BEGIN/COMMIT, and compares the two schemas,
# 4. exercises cd_admin_* and cd_token_lookup (plus a few schema rules),
#    checking results and SQLSTATE / COLUMN / MESSAGE of every error.
# Prints PASS/FAIL per check; exits 1 when any check failed.  -v shows the
# output of failed checks in full.  The sandbox is stopped on exit.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SANDBOX=${PG_SANDBOX:-$ROOT/scripts/pg-sandbox}
[[ -x $SANDBOX ]] || { echo "pg-sandbox not found: $SANDBOX" >&2; exit 1; }
VERBOSE=0
[[ ${1:-} == -v ]] && VERBOSE=1

# shellcheck source=lib.sh
source "$ROOT/tests/sql/lib.sh"

SBDIR=$(mktemp -d /tmp/cd-check-admin.XXXXXX)
chmod 755 "$SBDIR"
cleanup() { "$SANDBOX" stop "$SBDIR" >/dev/null 2>&1 || rm -rf "$SBDIR"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# the unix socket and the real psql binary (not Debian's perl wrapper) keep
# the ~250 connections of this script fast
CONN=$("$SANDBOX" start --dir "$SBDIR" --unix --fsync off --sync off --shared-buffers 128MB 2>"$SBDIR.start.log") || {
    cat "$SBDIR.start.log" >&2; rm -f "$SBDIR.start.log"; echo "FAIL cannot start PostgreSQL"; exit 1; }
rm -f "$SBDIR.start.log"
export PGCONNECT_TIMEOUT=10

echo "# PostgreSQL: $(q 'SHOW server_version')"

# ---------------------------------------------------------------------------
# Migrations
# ---------------------------------------------------------------------------
shopt -s nullglob
FILES=("$ROOT"/sql/[0-9][0-9][0-9][0-9]_*.sql)
shopt -u nullglob
if (( ${#FILES[@]} >= 2 )); then pass "migrations: ${#FILES[@]} files found"; else fail "migrations: files found" "${FILES[*]}"; fi

bad=$(grep -n -i -E '^[[:space:]]*(BEGIN|COMMIT|ROLLBACK|START[[:space:]]+TRANSACTION|ABORT)[[:space:]]*(WORK|TRANSACTION)?[[:space:]]*;' "${FILES[@]}" || true)
if [[ -z $bad ]]; then pass "migrations: no transaction control statements"; else fail "migrations: no transaction control statements" "$bad"; fi

bad=$(grep -n -E '^[[:space:]]*\\' "${FILES[@]}" || true)
if [[ -z $bad ]]; then pass "migrations: no psql meta-commands"; else fail "migrations: no psql meta-commands" "$bad"; fi

versions=$(for f in "${FILES[@]}"; do b=${f##*/}; echo "$((10#${b:0:4}))"; done)
if [[ $(sort -n <<<"$versions" | uniq -d) == "" ]]; then pass "migrations: versions unique"; else fail "migrations: versions unique" "$versions"; fi

MIGTABLE='CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())'

# A: like the daemon (src/store/migrate.c): one PQexec per file inside its own transaction
out=$(q "$MIGTABLE")
[[ -z $out ]] || fail "migrations: create schema_migrations" "$out"
okA=1
for f in "${FILES[@]}"; do
    b=${f##*/}; v=$((10#${b:0:4}))
    out=$(psqlc -c "SET client_min_messages = warning" -c "BEGIN" \
                -c "$(cat "$f")" \
                -c "INSERT INTO schema_migrations (version, name) VALUES ($v, '$b')" -c "COMMIT" 2>&1)
    if [[ -n $out ]]; then okA=0; fail "migrations: apply $b (daemon style, schema public)" "$out"; fi
done
(( okA )) && pass "migrations: all applied (daemon style, schema public)"
check_eq "migrations: schema_migrations records every version" "$(sort -n <<<"$versions" | paste -sd,)" <<'SQL'
SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations
SQL

# B: again from empty, in a fresh schema, split by psql, BEGIN/COMMIT around each file
out=$(q "CREATE SCHEMA fresh")
[[ -z $out ]] || fail "migrations: create schema fresh" "$out"
okB=1
for f in "${FILES[@]}"; do
    b=${f##*/}; v=$((10#${b:0:4}))
    out=$({ echo "SET client_min_messages = warning;"
            echo "$MIGTABLE;"
            echo "BEGIN;"
            cat "$f"
            echo
            echo "INSERT INTO schema_migrations (version, name) VALUES ($v, '$b');"
            echo "COMMIT;"; } | PGOPTIONS="-c search_path=fresh" psqlc 2>&1)
    if [[ -n $out ]]; then okB=0; fail "migrations: apply $b (psql -f style, fresh schema)" "$out"; fi
done
(( okB )) && pass "migrations: all applied again from empty (fresh schema)"

check "migrations: both schemas have the same tables, columns, indexes and functions" <<'SQL'
WITH cols AS (
    SELECT table_schema s, table_name || '.' || column_name || ':' || data_type || ':' || is_nullable
           || ':' || coalesce(column_default, '') x
      FROM information_schema.columns WHERE table_schema IN ('public', 'fresh')
    UNION ALL
    SELECT schemaname, tablename || ':' || indexname || ':' || replace(indexdef, schemaname || '.', '')
      FROM pg_indexes WHERE schemaname IN ('public', 'fresh')
    UNION ALL
    SELECT n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'fresh'))
SELECT count(*) > 100
       AND NOT EXISTS ((SELECT x FROM cols WHERE s = 'public' EXCEPT ALL SELECT x FROM cols WHERE s = 'fresh')
                       UNION ALL
                       (SELECT x FROM cols WHERE s = 'fresh' EXCEPT ALL SELECT x FROM cols WHERE s = 'public'))
  FROM cols
SQL

check "migrations: functions work in the fresh schema too" <<'SQL'
SET search_path = fresh;
SELECT cd_admin_create('skills', '{"name":"x"}') ->> 'name' = 'x';
SELECT cd_admin_list('skills', NULL, 10) -> 'items' -> 0 ->> 'name' = 'x'
   AND (SELECT count(*) FROM fresh.skills) = 1 AND (SELECT count(*) FROM public.skills) = 0
SQL
q "DROP SCHEMA fresh CASCADE" >/dev/null

check "schema: every table is present" <<'SQL'
SELECT count(*) = 25 FROM information_schema.tables
 WHERE table_schema = 'public' AND table_name IN (
   'customers','customer_identities','customer_resume_tokens','skills','sla_policies','queues',
   'queue_skills','agents','agent_skills','agent_status_log','inboxes','conversations','messages',
   'client_requests','email_message_ids','attachments','conversation_events','offers','surveys',
   'calls','phone_events','api_tokens','idempotency_keys','outbox','events_log')
SQL

# ---------------------------------------------------------------------------
# Unknown kinds
# ---------------------------------------------------------------------------
check_err "kind: list unknown kind" P0002 - 'unknown kind "widgets"' <<'SQL'
SELECT cd_admin_list('widgets', NULL, 10)
SQL
check_err "kind: get unknown kind" P0002 - 'unknown kind "widgets"' <<'SQL'
SELECT cd_admin_get('widgets', '1')
SQL
check_err "kind: create unknown kind" P0002 - 'unknown kind "widgets"' <<'SQL'
SELECT cd_admin_create('widgets', '{}')
SQL
check_err "kind: update unknown kind" P0002 - 'unknown kind "widgets"' <<'SQL'
SELECT cd_admin_update('widgets', '1', '{}')
SQL
check_err "kind: delete unknown kind" P0002 - 'unknown kind "widgets"' <<'SQL'
SELECT cd_admin_delete('widgets', '1')
SQL
check_err "kind: NULL kind" P0002 - 'unknown kind ""' <<'SQL'
SELECT cd_admin_get(NULL, '1')
SQL

# ---------------------------------------------------------------------------
# skills
# ---------------------------------------------------------------------------
check "skills: create returns the object with its id" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_admin_create('skills', '{"name":"billing"}') j;
SELECT j = jsonb_build_object('id', (SELECT id FROM skills WHERE name = 'billing'), 'name', 'billing') FROM r
SQL
check "skills: create more" <<'SQL'
SELECT cd_admin_create('skills', '{"name":"Spanish"}') ->> 'name' = 'Spanish'
   AND cd_admin_create('skills', '{"name":"tech.L2"}') ->> 'name' = 'tech.L2'
   AND cd_admin_create('skills', '{"name":"a@b_c-d"}') ->> 'name' = 'a@b_c-d'
SQL
check "skills: get by id" <<'SQL'
SELECT cd_admin_get('skills', (SELECT id::text FROM skills WHERE name = 'billing')) ->> 'name' = 'billing'
SQL
check "skills: get by name, case-insensitive" <<'SQL'
SELECT cd_admin_get('skills', 'BILLING') ->> 'name' = 'billing'
   AND cd_admin_get('skills', 'spanish') ->> 'name' = 'Spanish'
SQL
check_err "skills: get unknown name" P0002 - 'skill "nope" not found' <<'SQL'
SELECT cd_admin_get('skills', 'nope')
SQL
check_err "skills: get unknown id" P0002 - 'skill "999999" not found' <<'SQL'
SELECT cd_admin_get('skills', '999999')
SQL
check_err "skills: get huge id" P0002 - 'skill "99999999999999999999999" not found' <<'SQL'
SELECT cd_admin_get('skills', '99999999999999999999999')
SQL
check_err "skills: get empty key" P0002 - 'skill "" not found' <<'SQL'
SELECT cd_admin_get('skills', '')
SQL
check_err "skills: duplicate name (any case)" 23505 name 'skill "BILLING" already exists' <<'SQL'
SELECT cd_admin_create('skills', '{"name":"BILLING"}')
SQL
check_err "skills: name required" 22023 name 'name: is required' <<'SQL'
SELECT cd_admin_create('skills', '{}')
SQL
check_err "skills: name must be a string" 22023 name 'name: must be a string' <<'SQL'
SELECT cd_admin_create('skills', '{"name":12}')
SQL
check_err "skills: name null" 22023 name 'name: must be a string' <<'SQL'
SELECT cd_admin_create('skills', '{"name":null}')
SQL
check_err "skills: name all digits" 22023 name 'name: must be 1 to 64 characters*' <<'SQL'
SELECT cd_admin_create('skills', '{"name":"123"}')
SQL
check_err "skills: name starting with a digit" 22023 name 'name: must be 1 to 64 characters*' <<'SQL'
SELECT cd_admin_create('skills', '{"name":"1abc"}')
SQL
check_err "skills: name with a space" 22023 name 'name: must be 1 to 64 characters*' <<'SQL'
SELECT cd_admin_create('skills', '{"name":"a b"}')
SQL
check_err "skills: empty name" 22023 name 'name: must be 1 to 64 characters*' <<'SQL'
SELECT cd_admin_create('skills', '{"name":""}')
SQL
check_err "skills: name of 65 characters" 22023 name 'name: must be 1 to 64 characters*' <<'SQL'
SELECT cd_admin_create('skills', jsonb_build_object('name', 'a' || repeat('b', 64)))
SQL
check "skills: name of 64 characters" <<'SQL'
SELECT cd_admin_delete('skills', (cd_admin_create('skills', jsonb_build_object('name', 'a' || repeat('b', 63))) ->> 'id')) ->> 'deleted' = 'true'
SQL
check_err "skills: unknown field" 22023 color 'color: unknown field' <<'SQL'
SELECT cd_admin_create('skills', '{"name":"x","color":"red"}')
SQL
check_err "skills: body not an object" 22023 body 'body: must be a JSON object' <<'SQL'
SELECT cd_admin_create('skills', '[1]')
SQL
check_err "skills: body NULL" 22023 body 'body: must be a JSON object' <<'SQL'
SELECT cd_admin_create('skills', NULL)
SQL
check "skills: id in the body is ignored" <<'SQL'
SELECT (cd_admin_create('skills', '{"name":"withid","id":424242}') ->> 'id')::bigint <> 424242
SQL
check "skills: update renames" <<'SQL'
SELECT cd_admin_update('skills', 'withid', '{"name":"renamed"}') ->> 'name' = 'renamed';
SELECT NOT EXISTS (SELECT 1 FROM skills WHERE name = 'withid')
SQL
check "skills: update with an empty body keeps everything" <<'SQL'
SELECT cd_admin_update('skills', 'renamed', '{}') ->> 'name' = 'renamed'
SQL
check "skills: update to the same name in another case" <<'SQL'
SELECT cd_admin_update('skills', 'renamed', '{"name":"Renamed"}') ->> 'name' = 'Renamed'
SQL
check_err "skills: update to a taken name" 23505 name 'skill "billing" already exists' <<'SQL'
SELECT cd_admin_update('skills', 'renamed', '{"name":"billing"}')
SQL
check_err "skills: update unknown" P0002 - 'skill "ghost" not found' <<'SQL'
SELECT cd_admin_update('skills', 'ghost', '{"name":"x"}')
SQL
check_err "skills: update with unknown field" 22023 size 'size: unknown field' <<'SQL'
SELECT cd_admin_update('skills', 'renamed', '{"size":1}')
SQL
check_err "skills: delete unknown" P0002 - 'skill "ghost" not found' <<'SQL'
SELECT cd_admin_delete('skills', 'ghost')
SQL
check "skills: delete returns {deleted, id}" <<'SQL'
SELECT cd_admin_delete('skills', 'renamed') = jsonb_build_object('deleted', true, 'id', (SELECT id FROM skills WHERE name = 'Renamed'))
SQL
check_err "skills: deleted one is gone" P0002 - 'skill "Renamed" not found' <<'SQL'
SELECT cd_admin_get('skills', 'Renamed')
SQL

# paging: make 12 skills p01..p12 in a clean table of known content
check "skills: paging setup" <<'SQL'
SELECT count(cd_admin_create('skills', jsonb_build_object('name', format('p%s', lpad(g::text, 2, '0'))))) = 12
  FROM generate_series(1, 12) g
SQL
check "skills: list from the start, ordered by id" <<'SQL'
WITH l AS (SELECT cd_admin_list('skills', NULL, 500) j)
SELECT jsonb_array_length(j -> 'items') = (SELECT count(*) FROM skills)
   AND j -> 'next' = 'null'
   AND (SELECT array_agg((e ->> 'id')::bigint ORDER BY o) FROM jsonb_array_elements(j -> 'items') WITH ORDINALITY AS x(e, o))
       = (SELECT array_agg(id ORDER BY id) FROM skills)
  FROM l
SQL
check "skills: list with after='' is from the start" <<'SQL'
SELECT cd_admin_list('skills', '', 500) = cd_admin_list('skills', NULL, 500)
SQL
check "skills: pages of 5 cover every row once, next = last id, null at the end" <<'SQL'
DO $$
DECLARE
    v_after text := NULL; v_page jsonb; v_ids bigint[] := '{}'; v_pages int := 0; v_n int;
BEGIN
    LOOP
        v_page := cd_admin_list('skills', v_after, 5);
        v_pages := v_pages + 1;
        v_n := jsonb_array_length(v_page -> 'items');
        v_ids := v_ids || ARRAY(SELECT (e ->> 'id')::bigint FROM jsonb_array_elements(v_page -> 'items') e);
        IF v_page ->> 'next' IS NULL THEN EXIT; END IF;
        IF v_n <> 5 OR v_page ->> 'next' <> (v_page -> 'items' -> 4 ->> 'id') THEN
            RAISE EXCEPTION 'bad page %', v_page;
        END IF;
        v_after := v_page ->> 'next';
        IF v_pages > 100 THEN RAISE EXCEPTION 'no end'; END IF;
    END LOOP;
    IF v_ids <> ARRAY(SELECT id FROM skills ORDER BY id) THEN
        RAISE EXCEPTION 'pages % <> table', v_ids;
    END IF;
END $$;
SELECT true
SQL
check "skills: exact multiple of the page size ends with next null" <<'SQL'
WITH n AS (SELECT count(*)::int c FROM skills)
SELECT cd_admin_list('skills', NULL, (SELECT c FROM n)) -> 'next' = 'null'
   AND cd_admin_list('skills', NULL, (SELECT c FROM n) - 1) ->> 'next' IS NOT NULL
SQL
check "skills: after the last id gives an empty page" <<'SQL'
SELECT cd_admin_list('skills', (SELECT max(id)::text FROM skills), 10) = '{"items":[],"next":null}'
   AND cd_admin_list('skills', '99999999999999999999999', 10) = '{"items":[],"next":null}'
SQL
check "skills: lim is clamped to 1..500" <<'SQL'
SELECT jsonb_array_length(cd_admin_list('skills', NULL, 0) -> 'items') = 1
   AND jsonb_array_length(cd_admin_list('skills', NULL, -5) -> 'items') = 1
   AND jsonb_array_length(cd_admin_list('skills', NULL, 100000) -> 'items') = (SELECT least(count(*), 500) FROM skills)
SQL
check_err "skills: non-numeric after" 22023 after 'after: must be the id*' <<'SQL'
SELECT cd_admin_list('skills', 'abc', 10)
SQL
check_err "skills: negative after" 22023 after 'after: must be the id*' <<'SQL'
SELECT cd_admin_list('skills', '-1', 10)
SQL
check "skills: paging teardown" <<'SQL'
SELECT count(cd_admin_delete('skills', name)) = 12 FROM skills WHERE name ~ '^p[0-9]{2}$'
SQL

# ---------------------------------------------------------------------------
# sla-policies
# ---------------------------------------------------------------------------
check "sla-policies: create with defaults" <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"basic"}') - 'id' =
       '{"name":"basic","first_response_s":null,"next_response_s":null,"resolution_s":null,
         "warn_pct":80,"timezone":"UTC","hours":null,"holidays":[]}'
SQL
check "sla-policies: create with every field (hours sorted, holidays sorted and deduplicated, zone canonical)" <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"std","first_response_s":3600,"next_response_s":7200,
          "resolution_s":86400,"warn_pct":75,"timezone":"europe/madrid",
          "hours":{"mon":["13:00-17:00","09:00-12:00"],"fri":["09:00-24:00"],"sun":[]},
          "holidays":["2026-12-25","2026-01-01","2026-12-25"]}') - 'id' =
       '{"name":"std","first_response_s":3600,"next_response_s":7200,"resolution_s":86400,
         "warn_pct":75,"timezone":"Europe/Madrid",
         "hours":{"mon":["09:00-12:00","13:00-17:00"],"fri":["09:00-24:00"],"sun":[]},
         "holidays":["2026-01-01","2026-12-25"]}'
SQL
check "sla-policies: stored as date[]" <<'SQL'
SELECT holidays = '{2026-01-01,2026-12-25}'::date[] FROM sla_policies WHERE name = 'std'
SQL
check "sla-policies: get by name and by id" <<'SQL'
SELECT cd_admin_get('sla-policies', 'STD') = cd_admin_get('sla-policies', (SELECT id::text FROM sla_policies WHERE name = 'std'))
   AND cd_admin_get('sla-policies', 'std') ->> 'warn_pct' = '75'
SQL
check "sla-policies: holidays shown as ISO dates whatever DateStyle" <<'SQL'
SET DateStyle = 'SQL, DMY';
SELECT cd_admin_get('sla-policies', 'std') -> 'holidays' = '["2026-01-01","2026-12-25"]'
SQL
check "sla-policies: update changes only the fields given" <<'SQL'
SELECT cd_admin_update('sla-policies', 'std', '{"warn_pct":90,"first_response_s":null}') - 'id' =
       '{"name":"std","first_response_s":null,"next_response_s":7200,"resolution_s":86400,
         "warn_pct":90,"timezone":"Europe/Madrid",
         "hours":{"mon":["09:00-12:00","13:00-17:00"],"fri":["09:00-24:00"],"sun":[]},
         "holidays":["2026-01-01","2026-12-25"]}'
SQL
check "sla-policies: update hours to null (24x7) and holidays to []" <<'SQL'
SELECT cd_admin_update('sla-policies', 'std', '{"hours":null,"holidays":[]}') @> '{"hours":null,"holidays":[]}'
SQL
check "sla-policies: a GET response can be PUT back unchanged" <<'SQL'
SELECT cd_admin_update('sla-policies', 'std', cd_admin_get('sla-policies', 'std')) = cd_admin_get('sla-policies', 'std')
SQL
check_err "sla-policies: duplicate name" 23505 name 'sla-policy "Std" already exists' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"Std"}')
SQL
check_err "sla-policies: name required" 22023 name 'name: is required' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"warn_pct":50}')
SQL
check_err "sla-policies: timer 0" 22023 first_response_s 'first_response_s: must be between 1 and 31536000' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","first_response_s":0}')
SQL
check_err "sla-policies: timer too large" 22023 resolution_s 'resolution_s: must be between 1 and 31536000' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","resolution_s":31536001}')
SQL
check_err "sla-policies: timer as a string" 22023 next_response_s 'next_response_s: must be an integer or null' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","next_response_s":"60"}')
SQL
check_err "sla-policies: timer as a fraction" 22023 first_response_s 'first_response_s: must be an integer or null' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","first_response_s":60.5}')
SQL
check "sla-policies: 60.0 is an integer" <<'SQL'
SELECT cd_admin_update('sla-policies', 'basic', '{"first_response_s":60.0}') -> 'first_response_s' = '60'
SQL
check_err "sla-policies: warn_pct 100" 22023 warn_pct 'warn_pct: must be between 1 and 99' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","warn_pct":100}')
SQL
check_err "sla-policies: warn_pct 0" 22023 warn_pct 'warn_pct: must be between 1 and 99' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","warn_pct":0}')
SQL
check_err "sla-policies: warn_pct null" 22023 warn_pct 'warn_pct: must be an integer' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","warn_pct":null}')
SQL
check_err "sla-policies: unknown time zone" 22023 timezone 'timezone: unknown time zone "Mars/Olympus"*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","timezone":"Mars/Olympus"}')
SQL
check_err "sla-policies: time zone not a string" 22023 timezone 'timezone: must be a string' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","timezone":1}')
SQL
check_err "sla-policies: hours not an object" 22023 hours 'hours: must be null (24x7) or an object*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":["09:00-17:00"]}')
SQL
check_err "sla-policies: hours unknown day" 22023 hours 'hours: unknown day "monday"*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{"monday":["09:00-17:00"]}}')
SQL
check_err "sla-policies: hours day not an array" 22023 hours 'hours: mon must be an array*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{"mon":"09:00-17:00"}}')
SQL
check_err "sla-policies: hours bad interval format" 22023 hours 'hours: tue: "9:00-17:00" is not an interval*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{"tue":["9:00-17:00"]}}')
SQL
check_err "sla-policies: hours 25:00" 22023 hours 'hours: tue: "09:00-25:00" is not an interval*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{"tue":["09:00-25:00"]}}')
SQL
check_err "sla-policies: hours interval not a string" 22023 hours 'hours: tue: 9 is not an interval*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{"tue":[9]}}')
SQL
check_err "sla-policies: hours start >= end" 22023 hours 'hours: wed: interval "17:00-09:00" must end after it starts' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{"wed":["17:00-09:00"]}}')
SQL
check_err "sla-policies: hours empty interval" 22023 hours 'hours: wed: interval "09:00-09:00" must end after it starts' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{"wed":["09:00-09:00"]}}')
SQL
check_err "sla-policies: hours overlap" 22023 hours 'hours: thu: intervals "09:00-13:00" and "12:00-17:00" overlap' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{"thu":["12:00-17:00","09:00-13:00"]}}')
SQL
check "sla-policies: adjacent intervals are fine" <<'SQL'
SELECT cd_admin_update('sla-policies', 'basic', '{"hours":{"thu":["09:00-12:00","12:00-17:00"]}}') -> 'hours' = '{"thu":["09:00-12:00","12:00-17:00"]}'
SQL
check_err "sla-policies: hours with no interval at all" 22023 hours 'hours: must contain at least one interval*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{"mon":[],"tue":[]}}')
SQL
check_err "sla-policies: hours {}" 22023 hours 'hours: must contain at least one interval*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","hours":{}}')
SQL
check_err "sla-policies: holidays not an array" 22023 holidays 'holidays: must be an array*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","holidays":"2026-12-25"}')
SQL
check_err "sla-policies: holiday not a date" 22023 holidays 'holidays: "2026-02-30" is not a date*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","holidays":["2026-02-30"]}')
SQL
check_err "sla-policies: holiday in another format" 22023 holidays 'holidays: "25/12/2026" is not a date*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","holidays":["25/12/2026"]}')
SQL
check_err "sla-policies: holiday null" 22023 holidays 'holidays: null is not a date*' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","holidays":[null]}')
SQL
check_err "sla-policies: unknown field" 22023 business_hours 'business_hours: unknown field' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"x","business_hours":null}')
SQL
check "sla-policies: failed creates left nothing behind" <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM sla_policies WHERE name = 'x')
SQL

# ---------------------------------------------------------------------------
# queues
# ---------------------------------------------------------------------------
check "queues: create with defaults" <<'SQL'
SELECT cd_admin_create('queues', '{"name":"general"}') - 'id' =
       '{"name":"general","skills":{},"priority":0,"sla_policy":null,"service_level_s":20,"overflow":[]}'
SQL
check "queues: create with every field (skills by name and id, sla by name, overflow sorted)" <<'SQL'
SELECT cd_admin_create('queues', jsonb_build_object(
          'name', 'billing',
          'skills', jsonb_build_object('Billing', 2, (SELECT id::text FROM skills WHERE name = 'Spanish'), 1),
          'priority', 5, 'sla_policy', 'STD', 'service_level_s', 30,
          'overflow', '[{"after_s":120,"tier":3},{"after_s":60,"tier":2}]'::jsonb)) - 'id' =
       '{"name":"billing","skills":{"billing":2,"Spanish":1},"priority":5,"sla_policy":"std",
         "service_level_s":30,"overflow":[{"after_s":60,"tier":2},{"after_s":120,"tier":3}]}'
SQL
check "queues: sla_policy by id, overflow with equal tiers" <<'SQL'
SELECT cd_admin_create('queues', jsonb_build_object('name', 'vip', 'sla_policy', (SELECT id FROM sla_policies WHERE name = 'basic'),
          'overflow', '[{"after_s":0,"tier":2},{"after_s":30,"tier":2}]'::jsonb)) @> '{"sla_policy":"basic","overflow":[{"after_s":0,"tier":2},{"after_s":30,"tier":2}]}'
SQL
check "queues: get by name and id" <<'SQL'
SELECT cd_admin_get('queues', 'Billing') = cd_admin_get('queues', (SELECT id::text FROM queues WHERE name = 'billing'))
SQL
check "queues: list" <<'SQL'
SELECT (SELECT array_agg(e ->> 'name') FROM jsonb_array_elements(cd_admin_list('queues', NULL, 100) -> 'items') e)
       = ARRAY['general', 'billing', 'vip']
SQL
check "queues: update keeps absent fields, replaces skills whole" <<'SQL'
SELECT cd_admin_update('queues', 'billing', '{"skills":{"spanish":3},"priority":-1000}') - 'id' =
       '{"name":"billing","skills":{"Spanish":3},"priority":-1000,"sla_policy":"std",
         "service_level_s":30,"overflow":[{"after_s":60,"tier":2},{"after_s":120,"tier":3}]}'
SQL
check "queues: update sla_policy to null, overflow to []" <<'SQL'
SELECT cd_admin_update('queues', 'vip', '{"sla_policy":null,"overflow":[]}') @> '{"sla_policy":null,"overflow":[]}'
SQL
check "queues: a GET response can be PUT back unchanged" <<'SQL'
SELECT cd_admin_update('queues', 'billing', cd_admin_get('queues', 'billing')) = cd_admin_get('queues', 'billing')
SQL
check_err "queues: duplicate name" 23505 name 'queue "BILLING" already exists' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"BILLING"}')
SQL
check_err "queues: rename to a taken name" 23505 name 'queue "general" already exists' <<'SQL'
SELECT cd_admin_update('queues', 'vip', '{"name":"general"}')
SQL
check_err "queues: name required" 22023 name 'name: is required' <<'SQL'
SELECT cd_admin_create('queues', '{"priority":1}')
SQL
check_err "queues: unknown skill" 22023 skills 'skills: unknown skill "x"' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","skills":{"x":1}}')
SQL
check_err "queues: unknown skill id" 22023 skills 'skills: unknown skill "987654"' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","skills":{"987654":1}}')
SQL
check_err "queues: skill given twice (name and id)" 22023 skills 'skills: skill "*" is given twice' <<'SQL'
SELECT cd_admin_create('queues', jsonb_build_object('name', 'q', 'skills',
          jsonb_build_object('billing', 1, (SELECT id::text FROM skills WHERE name = 'billing'), 2)))
SQL
check_err "queues: skill level 0" 22023 skills 'skills: level of "billing" must be between 1 and 5' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","skills":{"billing":0}}')
SQL
check_err "queues: skill level 6" 22023 skills 'skills: level of "billing" must be between 1 and 5' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","skills":{"billing":6}}')
SQL
check_err "queues: skill level as a string" 22023 skills 'skills: level of "billing" must be an integer' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","skills":{"billing":"2"}}')
SQL
check_err "queues: skills not an object" 22023 skills 'skills: must be an object*' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","skills":["billing"]}')
SQL
check_err "queues: priority too high" 22023 priority 'priority: must be between -1000 and 1000' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","priority":1001}')
SQL
check_err "queues: priority as a string" 22023 priority 'priority: must be an integer' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","priority":"5"}')
SQL
check_err "queues: priority fraction" 22023 priority 'priority: must be an integer' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","priority":1.5}')
SQL
check_err "queues: priority true" 22023 priority 'priority: must be an integer' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","priority":true}')
SQL
check_err "queues: unknown sla_policy" 22023 sla_policy 'sla_policy: unknown sla-policy "gold"' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","sla_policy":"gold"}')
SQL
check_err "queues: sla_policy of a wrong type" 22023 sla_policy 'sla_policy: must be a name or an id or null' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","sla_policy":{"name":"std"}}')
SQL
check_err "queues: service_level_s 0" 22023 service_level_s 'service_level_s: must be between 1 and 86400' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","service_level_s":0}')
SQL
check_err "queues: service_level_s too large" 22023 service_level_s 'service_level_s: must be between 1 and 86400' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","service_level_s":86401}')
SQL
check_err "queues: overflow not an array" 22023 overflow 'overflow: must be an array*' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","overflow":{"after_s":60,"tier":2}}')
SQL
check_err "queues: overflow step without tier" 22023 overflow 'overflow: each step must be an object*' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","overflow":[{"after_s":60}]}')
SQL
check_err "queues: overflow step with an extra key" 22023 overflow 'overflow: each step must be an object*' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","overflow":[{"after_s":60,"tier":2,"x":1}]}')
SQL
check_err "queues: overflow negative after_s" 22023 overflow 'overflow: after_s must be between 0 and 31536000' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","overflow":[{"after_s":-1,"tier":2}]}')
SQL
check_err "queues: overflow tier 0" 22023 overflow 'overflow: tier must be between 1 and 100' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","overflow":[{"after_s":10,"tier":0}]}')
SQL
check_err "queues: overflow tier as a string" 22023 overflow 'overflow: tier must be an integer' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","overflow":[{"after_s":10,"tier":"2"}]}')
SQL
check_err "queues: overflow duplicate after_s" 22023 overflow 'overflow: two steps have after_s 60' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","overflow":[{"after_s":60,"tier":2},{"after_s":60,"tier":3}]}')
SQL
check_err "queues: overflow tier going down" 22023 overflow 'overflow: tier 2 after 120 s is lower than tier 3 after 60 s' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","overflow":[{"after_s":120,"tier":2},{"after_s":60,"tier":3}]}')
SQL
check_err "queues: unknown field" 22023 tier 'tier: unknown field' <<'SQL'
SELECT cd_admin_create('queues', '{"name":"q","tier":2}')
SQL
check "queues: failed creates left nothing behind" <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM queues WHERE name = 'q')
SQL
check "queues: a failed update changes nothing" <<'SQL'
WITH before AS (SELECT cd_admin_get('queues', 'billing') j)
SELECT (SELECT j FROM before) = cd_admin_get('queues', 'billing')
SQL

# ---------------------------------------------------------------------------
# agents
# ---------------------------------------------------------------------------
check "agents: create with defaults (name = login, never a password hash)" <<'SQL'
SELECT cd_admin_create('agents', '{"login":"alice","password_hash":"$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"}') - 'id' =
       '{"login":"alice","name":"alice","role":"agent","tier":1,"skills":{},
         "capacity":{"chat":3,"email":5,"voice":1},"extension":null,"status":"offline"}'
SQL
check "agents: create with every field" <<'SQL'
SELECT cd_admin_create('agents', '{"login":"bob.smith","name":"  Bob Smith ","password_hash":"$argon2id$v=19$x",
          "role":"supervisor","tier":2,"skills":{"billing":3,"spanish":5},
          "capacity":{"chat":0,"voice":2},"extension":"1001","status":"available"}') - 'id' =
       '{"login":"bob.smith","name":"Bob Smith","role":"supervisor","tier":2,"skills":{"billing":3,"Spanish":5},
         "capacity":{"chat":0,"email":5,"voice":2},"extension":"1001","status":"offline"}'
SQL
check "agents: password hash stored, not shown by get or list" <<'SQL'
SELECT (SELECT password_hash FROM agents WHERE login = 'alice') LIKE '$argon2id$%'
   AND NOT cd_admin_get('agents', 'alice') ? 'password_hash'
   AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(cd_admin_list('agents', NULL, 100) -> 'items') e
                    WHERE e ? 'password_hash' OR e::text LIKE '%argon2%')
SQL
check "agents: get by login (any case) and by id" <<'SQL'
SELECT cd_admin_get('agents', 'ALICE') = cd_admin_get('agents', (SELECT id::text FROM agents WHERE login = 'alice'))
SQL
check "agents: update capacity of one channel keeps the others; status and id are ignored" <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"capacity":{"voice":0},"status":"available","id":0}') @>
       '{"login":"alice","capacity":{"chat":3,"email":5,"voice":0},"status":"offline"}'
SQL
check "agents: update replaces skills whole, keeps the rest" <<'SQL'
SELECT cd_admin_update('agents', 'bob.smith', '{"skills":{"billing":1},"extension":null}') - 'id' =
       '{"login":"bob.smith","name":"Bob Smith","role":"supervisor","tier":2,"skills":{"billing":1},
         "capacity":{"chat":0,"email":5,"voice":2},"extension":null,"status":"offline"}'
SQL
check "agents: update password_hash" <<'SQL'
SELECT NOT cd_admin_update('agents', 'alice', '{"password_hash":"$argon2id$v=19$new"}') ? 'password_hash';
SELECT (SELECT password_hash FROM agents WHERE login = 'alice') = '$argon2id$v=19$new'
SQL
check "agents: a GET response can be PUT back unchanged" <<'SQL'
SELECT cd_admin_update('agents', 'bob.smith', cd_admin_get('agents', 'bob.smith')) = cd_admin_get('agents', 'bob.smith')
SQL
check_err "agents: password required on create" 22023 password 'password: is required' <<'SQL'
SELECT cd_admin_create('agents', '{"login":"carol"}')
SQL
check_err "agents: login required" 22023 login 'login: is required' <<'SQL'
SELECT cd_admin_create('agents', '{"password_hash":"$argon2id$x"}')
SQL
check_err "agents: plain password is not accepted here" 22023 password 'password: unknown field' <<'SQL'
SELECT cd_admin_create('agents', '{"login":"carol","password":"secret123","password_hash":"$argon2id$x"}')
SQL
check_err "agents: password_hash must be Argon2id" 22023 password_hash 'password_hash: must be an Argon2id hash' <<'SQL'
SELECT cd_admin_create('agents', '{"login":"carol","password_hash":"secret123"}')
SQL
check_err "agents: duplicate login (any case)" 23505 login 'agent "Alice" already exists' <<'SQL'
SELECT cd_admin_create('agents', '{"login":"Alice","password_hash":"$argon2id$x"}')
SQL
check_err "agents: bad login" 22023 login 'login: must be 1 to 64 characters*' <<'SQL'
SELECT cd_admin_create('agents', '{"login":"4711","password_hash":"$argon2id$x"}')
SQL
check_err "agents: empty name" 22023 name 'name: must be 1 to 200 characters*' <<'SQL'
SELECT cd_admin_create('agents', '{"login":"carol","name":"  ","password_hash":"$argon2id$x"}')
SQL
check_err "agents: bad role" 22023 role 'role: must be one of agent, supervisor, admin' <<'SQL'
SELECT cd_admin_create('agents', '{"login":"carol","role":"root","password_hash":"$argon2id$x"}')
SQL
check_err "agents: tier 0" 22023 tier 'tier: must be between 1 and 100' <<'SQL'
SELECT cd_admin_create('agents', '{"login":"carol","tier":0,"password_hash":"$argon2id$x"}')
SQL
check_err "agents: tier 101" 22023 tier 'tier: must be between 1 and 100' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"tier":101}')
SQL
check_err "agents: unknown skill" 22023 skills 'skills: unknown skill "german"' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"skills":{"german":3}}')
SQL
check_err "agents: capacity unknown channel" 22023 capacity 'capacity: unknown channel "sms"*' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"capacity":{"sms":3}}')
SQL
check_err "agents: capacity negative" 22023 capacity 'capacity: chat must be between 0 and 1000' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"capacity":{"chat":-1}}')
SQL
check_err "agents: capacity too large" 22023 capacity 'capacity: email must be between 0 and 1000' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"capacity":{"email":1001}}')
SQL
check_err "agents: capacity not an object" 22023 capacity 'capacity: must be an object*' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"capacity":3}')
SQL
check_err "agents: extension with a space" 22023 extension 'extension: must be 1 to 64 characters without spaces, or null' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"extension":"10 01"}')
SQL
check_err "agents: extension as a number" 22023 extension 'extension: must be a string or null' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"extension":1001}')
SQL
check_err "agents: unknown field" 22023 email 'email: unknown field' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"email":"a@example.com"}')
SQL
check_err "agents: rename to a taken login" 23505 login 'agent "BOB.SMITH" already exists' <<'SQL'
SELECT cd_admin_update('agents', 'alice', '{"login":"BOB.SMITH"}')
SQL
check "agents: failed writes changed nothing" <<'SQL'
SELECT cd_admin_get('agents', 'alice') - 'id' =
       '{"login":"alice","name":"alice","role":"agent","tier":1,"skills":{},
         "capacity":{"chat":3,"email":5,"voice":0},"extension":null,"status":"offline"}'
   AND NOT EXISTS (SELECT 1 FROM agents WHERE login = 'carol')
SQL

# ---------------------------------------------------------------------------
# inboxes
# ---------------------------------------------------------------------------
check "inboxes: create (address trimmed and lower-cased, queue by name)" <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"  Support@Example.COM ","queue":"Billing"}') - 'id' =
       '{"address":"support@example.com","queue":"billing"}'
SQL
check "inboxes: create a channel address, queue by id" <<'SQL'
SELECT cd_admin_create('inboxes', jsonb_build_object('address', 'SMS:+15550100', 'queue', (SELECT id FROM queues WHERE name = 'general'))) - 'id' =
       '{"address":"sms:+15550100","queue":"general"}';
SELECT (SELECT channel FROM inboxes WHERE address = 'sms:+15550100') = 'sms'
   AND (SELECT channel FROM inboxes WHERE address = 'support@example.com') = 'email'
SQL
check "inboxes: queue as a string id" <<'SQL'
SELECT cd_admin_create('inboxes', jsonb_build_object('address', 'sales@example.com', 'queue', (SELECT id::text FROM queues WHERE name = 'vip'))) ->> 'queue' = 'vip'
SQL
check "inboxes: get by address (any case, spaces) and by id" <<'SQL'
SELECT cd_admin_get('inboxes', ' SUPPORT@example.com') = cd_admin_get('inboxes', (SELECT id::text FROM inboxes WHERE address = 'support@example.com'))
   AND cd_admin_get('inboxes', 'sms:+15550100') ->> 'queue' = 'general'
SQL
check "inboxes: update queue keeps address" <<'SQL'
SELECT cd_admin_update('inboxes', 'sales@example.com', '{"queue":"general"}') - 'id' = '{"address":"sales@example.com","queue":"general"}'
SQL
check "inboxes: update address" <<'SQL'
SELECT cd_admin_update('inboxes', 'sales@example.com', '{"address":"Sales2@Example.com"}') ->> 'address' = 'sales2@example.com'
SQL
check_err "inboxes: duplicate address" 23505 address 'inbox "support@example.com" already exists' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"SUPPORT@example.com","queue":"general"}')
SQL
check_err "inboxes: address required" 22023 address 'address: is required' <<'SQL'
SELECT cd_admin_create('inboxes', '{"queue":"general"}')
SQL
check_err "inboxes: queue required" 22023 queue 'queue: is required' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"x@example.com"}')
SQL
check_err "inboxes: unknown queue" 22023 queue 'queue: unknown queue "nowhere"' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"x@example.com","queue":"nowhere"}')
SQL
check_err "inboxes: queue null" 22023 queue 'queue: must be a name or an id' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"x@example.com","queue":null}')
SQL
check_err "inboxes: address without @" 22023 address 'address: must be an e-mail address*' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"support","queue":"general"}')
SQL
check_err "inboxes: address with two @" 22023 address 'address: must be an e-mail address*' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"a@b@c","queue":"general"}')
SQL
check_err "inboxes: address with a space" 22023 address 'address: must be an e-mail address*' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"a b@example.com","queue":"general"}')
SQL
check_err "inboxes: unknown channel" 22023 address 'address: must be an e-mail address*' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"fax:+15550100","queue":"general"}')
SQL
check_err "inboxes: empty channel value" 22023 address 'address: must be an e-mail address*' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"sms:","queue":"general"}')
SQL
check_err "inboxes: address not a string" 22023 address 'address: must be a string' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":42,"queue":"general"}')
SQL
check_err "inboxes: unknown field" 22023 channel 'channel: unknown field' <<'SQL'
SELECT cd_admin_create('inboxes', '{"address":"x@example.com","queue":"general","channel":"email"}')
SQL
check_err "inboxes: get unknown" P0002 - 'inbox "nobody@example.com" not found' <<'SQL'
SELECT cd_admin_get('inboxes', 'nobody@example.com')
SQL

# ---------------------------------------------------------------------------
# api-tokens and cd_token_lookup
# ---------------------------------------------------------------------------
H1=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1
H2=BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB2
check "api-tokens: create (scopes canonical, no hash shown)" <<SQL
SELECT j - 'id' - 'created_at' = '{"name":"ci","scopes":["events:write","conversations:read","admin"],"last_used_at":null}'
   AND j ->> 'created_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$'
   AND NOT j ? 'token_hash'
  FROM (SELECT cd_admin_create('api-tokens', '{"name":"ci","scopes":["admin","events:write","conversations:read","admin"],"token_hash":"$H1"}') j) s
SQL
check "api-tokens: upper-case hash stored lower-case" <<SQL
SELECT cd_admin_create('api-tokens', '{"name":"pbx","scopes":["events:write"],"token_hash":"$H2"}') ->> 'name' = 'pbx';
SELECT (SELECT token_hash FROM api_tokens WHERE name = 'pbx') = lower('$H2')
SQL
check "api-tokens: get by name and id; list hides hashes" <<'SQL'
SELECT cd_admin_get('api-tokens', 'CI') = cd_admin_get('api-tokens', (SELECT id::text FROM api_tokens WHERE name = 'ci'))
   AND cd_admin_list('api-tokens', NULL, 10)::text NOT LIKE '%aaaaaaaa%'
   AND jsonb_array_length(cd_admin_list('api-tokens', NULL, 10) -> 'items') = 2
SQL
check "token lookup: a live token" <<SQL
SELECT cd_token_lookup('$H1') = jsonb_build_object('id', (SELECT id FROM api_tokens WHERE name = 'ci'), 'name', 'ci',
                                                    'scopes', '["events:write","conversations:read","admin"]'::jsonb)
SQL
check "token lookup: sets last_used_at" <<'SQL'
SELECT last_used_at IS NOT NULL AND cd_admin_get('api-tokens', 'ci') ->> 'last_used_at' IS NOT NULL
  FROM api_tokens WHERE name = 'ci'
SQL
check "token lookup: upper-case hex works" <<SQL
SELECT cd_token_lookup(upper('$H1')) ->> 'name' = 'ci'
SQL
check "token lookup: last_used_at written at most once a minute" <<SQL
UPDATE api_tokens SET last_used_at = now() - interval '30 seconds' WHERE name = 'ci';
SELECT cd_token_lookup('$H1') IS NOT NULL;
SELECT last_used_at < now() - interval '29 seconds' FROM api_tokens WHERE name = 'ci';
UPDATE api_tokens SET last_used_at = now() - interval '61 seconds' WHERE name = 'ci';
SELECT cd_token_lookup('$H1') IS NOT NULL;
SELECT last_used_at > now() - interval '5 seconds' FROM api_tokens WHERE name = 'ci';
SQL
check "token lookup: unknown, empty and NULL give NULL" <<'SQL'
SELECT cd_token_lookup('0000000000000000000000000000000000000000000000000000000000000000') IS NULL
   AND cd_token_lookup('') IS NULL AND cd_token_lookup(NULL) IS NULL
SQL
check "api-tokens: update name and scopes" <<'SQL'
SELECT cd_admin_update('api-tokens', 'pbx', '{"name":"pbx-main","scopes":["events:write","reports:read"]}') @>
       '{"name":"pbx-main","scopes":["events:write","reports:read"]}'
SQL
check "api-tokens: a GET response can be PUT back unchanged" <<'SQL'
SELECT cd_admin_update('api-tokens', 'ci', cd_admin_get('api-tokens', 'ci')) = cd_admin_get('api-tokens', 'ci')
SQL
check_err "api-tokens: token_hash cannot be changed" 22023 token_hash 'token_hash: cannot be changed' <<SQL
SELECT cd_admin_update('api-tokens', 'ci', '{"token_hash":"$H1"}')
SQL
check_err "api-tokens: duplicate name" 23505 name 'api-token "CI" already exists' <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"CI","scopes":["admin"],"token_hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}')
SQL
check_err "api-tokens: token_hash required" 22023 token_hash 'token_hash: is required' <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"x","scopes":["admin"]}')
SQL
check_err "api-tokens: token_hash not hex" 22023 token_hash 'token_hash: must be a hex SHA-256' <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"x","scopes":["admin"],"token_hash":"zz"}')
SQL
check_err "api-tokens: scopes required" 22023 scopes 'scopes: is required' <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"x","token_hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}')
SQL
check_err "api-tokens: scopes empty" 22023 scopes 'scopes: must be a non-empty array*' <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"x","scopes":[],"token_hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}')
SQL
check_err "api-tokens: scopes not an array" 22023 scopes 'scopes: must be a non-empty array*' <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"x","scopes":"admin","token_hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}')
SQL
check_err "api-tokens: unknown scope" 22023 scopes 'scopes: unknown scope "root"*' <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"x","scopes":["admin","root"],"token_hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}')
SQL
check_err "api-tokens: name rule" 22023 name 'name: must be 1 to 64 characters*' <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"my token","scopes":["admin"],"token_hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}')
SQL
check_err "api-tokens: the token itself is not a field" 22023 token 'token: unknown field' <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"x","token":"ctd_abc","scopes":["admin"],"token_hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}')
SQL
check "api-tokens: delete revokes" <<SQL
SELECT cd_admin_delete('api-tokens', 'ci') ->> 'deleted' = 'true';
SELECT cd_token_lookup('$H1') IS NULL
   AND (SELECT revoked_at IS NOT NULL FROM api_tokens WHERE name = 'ci')
   AND jsonb_array_length(cd_admin_list('api-tokens', NULL, 10) -> 'items') = 1
SQL
check_err "api-tokens: revoked token is not found" P0002 - 'api-token "ci" not found' <<'SQL'
SELECT cd_admin_get('api-tokens', 'ci')
SQL
check_err "api-tokens: revoked token cannot be updated" P0002 - 'api-token "*" not found' <<'SQL'
SELECT cd_admin_update('api-tokens', (SELECT id::text FROM api_tokens WHERE name = 'ci'), '{"name":"zz"}')
SQL
check "api-tokens: a revoked token's name can be reused" <<'SQL'
SELECT cd_admin_create('api-tokens', '{"name":"ci","scopes":["reports:read"],"token_hash":"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"}') ->> 'name' = 'ci';
SELECT count(*) = 2 FROM api_tokens WHERE name = 'ci'
SQL

# ---------------------------------------------------------------------------
# Paging, every kind: pages of 1 and of 2 list each live row once, in id order
# ---------------------------------------------------------------------------
for kind in skills sla-policies queues agents inboxes api-tokens; do
check "$kind: list pages of 1 and 2 cover every live row once, in id order" <<SQL
DO \$\$
DECLARE
    v_after text; v_page jsonb; v_ids bigint[]; v_want bigint[]; v_lim int; v_pages int;
BEGIN
    v_want := CASE '$kind'
        WHEN 'skills' THEN ARRAY(SELECT id FROM skills ORDER BY id)
        WHEN 'sla-policies' THEN ARRAY(SELECT id FROM sla_policies ORDER BY id)
        WHEN 'queues' THEN ARRAY(SELECT id FROM queues ORDER BY id)
        WHEN 'agents' THEN ARRAY(SELECT id FROM agents WHERE deleted_at IS NULL ORDER BY id)
        WHEN 'inboxes' THEN ARRAY(SELECT id FROM inboxes ORDER BY id)
        WHEN 'api-tokens' THEN ARRAY(SELECT id FROM api_tokens WHERE revoked_at IS NULL ORDER BY id) END;
    IF cardinality(v_want) < 2 THEN RAISE EXCEPTION 'too few rows to page: %', v_want; END IF;
    FOREACH v_lim IN ARRAY ARRAY[1, 2] LOOP
        v_after := NULL; v_ids := '{}'; v_pages := 0;
        LOOP
            v_page := cd_admin_list('$kind', v_after, v_lim);
            v_pages := v_pages + 1;
            IF jsonb_array_length(v_page -> 'items') > v_lim THEN RAISE EXCEPTION 'page too long: %', v_page; END IF;
            v_ids := v_ids || ARRAY(SELECT (e ->> 'id')::bigint FROM jsonb_array_elements(v_page -> 'items') e);
            EXIT WHEN v_page ->> 'next' IS NULL;
            v_after := v_page ->> 'next';
            IF v_pages > 1000 THEN RAISE EXCEPTION 'no end'; END IF;
        END LOOP;
        IF v_ids IS DISTINCT FROM v_want THEN RAISE EXCEPTION 'lim %: listed % want %', v_lim, v_ids, v_want; END IF;
        -- a page is exactly what get returns for each item
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(cd_admin_list('$kind', NULL, 500) -> 'items') e
                    WHERE e IS DISTINCT FROM cd_admin_get('$kind', e ->> 'id')) THEN
            RAISE EXCEPTION 'list and get differ';
        END IF;
    END LOOP;
END \$\$;
SELECT true
SQL
done

# ---------------------------------------------------------------------------
# Deletes and what is in use
# ---------------------------------------------------------------------------
check "delete skill: removed from queues and agents" <<'SQL'
SELECT cd_admin_delete('skills', 'billing') ->> 'deleted' = 'true';
SELECT cd_admin_get('queues', 'billing') -> 'skills' = '{"Spanish":3}'
   AND cd_admin_get('agents', 'bob.smith') -> 'skills' = '{}'
   AND NOT EXISTS (SELECT 1 FROM queue_skills qs LEFT JOIN skills s ON s.id = qs.skill_id WHERE s.id IS NULL)
SQL
check_err "delete sla-policy used by a queue" 23503 - 'sla-policy "std" is used by queue "billing"' <<'SQL'
SELECT cd_admin_delete('sla-policies', 'std')
SQL
check_err "delete sla-policy used by several queues" 23503 - 'sla-policy "std" is used by queues "billing", "general"' <<'SQL'
SELECT cd_admin_update('queues', 'general', '{"sla_policy":"std"}');
SELECT cd_admin_delete('sla-policies', 'std')
SQL
check_err "delete queue used by inboxes" 23503 - 'queue "general" is used by inboxes "sales2@example.com", "sms:+15550100"' <<'SQL'
SELECT cd_admin_delete('queues', 'general')
SQL
check "conversation setup" <<'SQL'
WITH c AS (INSERT INTO customers (name) VALUES ('Ana') RETURNING id)
INSERT INTO conversations (customer_id, channel, queue_id, sla_policy_id, inbox_id)
SELECT c.id, 'email', (SELECT id FROM queues WHERE name = 'vip'), (SELECT id FROM sla_policies WHERE name = 'basic'),
       (SELECT id FROM inboxes WHERE address = 'sales2@example.com')
  FROM c;
SELECT count(*) = 1 FROM conversations
SQL
check_err "delete queue used by a conversation" 23503 - 'queue "vip" is used by 1 conversation' <<'SQL'
SELECT cd_admin_delete('queues', 'vip')
SQL
check_err "delete sla-policy used by a conversation" 23503 - 'sla-policy "basic" is used by 1 conversation' <<'SQL'
SELECT cd_admin_delete('sla-policies', 'basic')
SQL
check_err "delete inbox used by a conversation" 23503 - 'inbox "sales2@example.com" is used by 1 conversation' <<'SQL'
SELECT cd_admin_delete('inboxes', 'sales2@example.com')
SQL
check "delete inbox not in use" <<'SQL'
SELECT cd_admin_delete('inboxes', 'sms:+15550100') ->> 'deleted' = 'true';
SELECT NOT EXISTS (SELECT 1 FROM inboxes WHERE address = 'sms:+15550100')
SQL
check "delete queue and sla-policy once unused" <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"temp"}') IS NOT NULL;
SELECT cd_admin_create('skills', '{"name":"tmpskill"}') IS NOT NULL;
SELECT cd_admin_create('queues', '{"name":"temp","sla_policy":"temp","skills":{"tmpskill":1}}') IS NOT NULL;
SELECT cd_admin_delete('queues', 'temp') ->> 'deleted' = 'true';
SELECT cd_admin_delete('sla-policies', 'temp') ->> 'deleted' = 'true';
SELECT cd_admin_delete('skills', 'tmpskill') ->> 'deleted' = 'true';
SELECT NOT EXISTS (SELECT 1 FROM queues WHERE name = 'temp') AND NOT EXISTS (SELECT 1 FROM sla_policies WHERE name = 'temp')
SQL
check "delete agent: soft, login freed, offers revoked, history kept" <<'SQL'
WITH a AS (SELECT id FROM agents WHERE login = 'alice')
INSERT INTO offers (conversation_id, agent_id, expires_at)
SELECT (SELECT min(id) FROM conversations), a.id, now() + interval '20 seconds' FROM a;
WITH a AS (SELECT id FROM agents WHERE login = 'alice')
INSERT INTO messages (conversation_id, channel, direction, author_kind, author_agent_id, body)
SELECT (SELECT min(id) FROM conversations), 'email', 'out', 'agent', a.id, 'hello' FROM a;
SELECT cd_admin_delete('agents', 'alice') = jsonb_build_object('deleted', true, 'id', (SELECT id FROM agents WHERE login = 'alice'));
SELECT (SELECT deleted_at IS NOT NULL AND status = 'offline' FROM agents WHERE login = 'alice')
   AND (SELECT state = 'revoked' AND decided_at IS NOT NULL FROM offers)
   AND (SELECT count(*) = 1 FROM messages m JOIN agents a ON a.id = m.author_agent_id WHERE a.login = 'alice')
   AND jsonb_array_length(cd_admin_list('agents', NULL, 10) -> 'items') = 1
SQL
check_err "delete agent: gone from get" P0002 - 'agent "alice" not found' <<'SQL'
SELECT cd_admin_get('agents', 'alice')
SQL
check_err "delete agent: gone by id too" P0002 - 'agent "*" not found' <<'SQL'
SELECT cd_admin_get('agents', (SELECT id::text FROM agents WHERE login = 'alice'))
SQL
check_err "delete agent: cannot be deleted twice" P0002 - 'agent "*" not found' <<'SQL'
SELECT cd_admin_delete('agents', (SELECT id::text FROM agents WHERE login = 'alice'))
SQL
check "delete agent: the login can be given to a new agent" <<'SQL'
SELECT (cd_admin_create('agents', '{"login":"Alice","password_hash":"$argon2id$y"}') ->> 'id')::bigint >
       (SELECT id FROM agents WHERE login = 'alice');
SELECT cd_admin_get('agents', 'alice') ->> 'login' = 'Alice'
SQL
check_err "delete agent: renaming onto a live login still collides" 23505 login 'agent "alice" already exists' <<'SQL'
SELECT cd_admin_update('agents', 'bob.smith', '{"login":"alice"}')
SQL

# ---------------------------------------------------------------------------
# NOTIFY, resolve helper
# ---------------------------------------------------------------------------
out=$(psqlc 2>&1 <<'SQL'
LISTEN contactd_admin;
SELECT cd_admin_create('skills', '{"name":"notified"}') IS NOT NULL;
SELECT 1;
SQL
)
if grep -q 'Asynchronous notification "contactd_admin" with payload "{"id": [0-9]*, "op": "create", "kind": "skills"}"' <<<"$out"; then
    pass "notify: create sends contactd_admin"
else
    fail "notify: create sends contactd_admin" "$out"
fi
check "resolve: names and ids, NULL when unknown" <<'SQL'
SELECT cd_admin_resolve('queues', 'BILLING') = (SELECT id FROM queues WHERE name = 'billing')
   AND cd_admin_resolve('queues', (SELECT id::text FROM queues WHERE name = 'billing')) = (SELECT id FROM queues WHERE name = 'billing')
   AND cd_admin_resolve('queues', 'nope') IS NULL
   AND cd_admin_resolve('agents', 'bob.smith') IS NOT NULL
   AND cd_admin_resolve('inboxes', 'Support@Example.com') IS NOT NULL
SQL

# ---------------------------------------------------------------------------
# Schema rules the daemon relies on (0001)
# ---------------------------------------------------------------------------
check "schema: client_msg_id retry is detected per sender" <<'SQL'
WITH c AS (SELECT min(id) id FROM conversations), cu AS (SELECT customer_id id FROM conversations ORDER BY id LIMIT 1),
ins AS (
    INSERT INTO messages (conversation_id, channel, direction, author_kind, author_customer_id, body, client_msg_id)
    SELECT c.id, 'chat', 'in', 'customer', cu.id, 'hi', 'm-1' FROM c, cu
    ON CONFLICT (author_customer_id, client_msg_id) WHERE author_kind = 'customer' AND client_msg_id IS NOT NULL DO NOTHING
    RETURNING id)
SELECT count(*) = 1 FROM ins;
WITH c AS (SELECT min(id) id FROM conversations), cu AS (SELECT customer_id id FROM conversations ORDER BY id LIMIT 1),
ins AS (
    INSERT INTO messages (conversation_id, channel, direction, author_kind, author_customer_id, body, client_msg_id)
    SELECT c.id, 'chat', 'in', 'customer', cu.id, 'hi', 'm-1' FROM c, cu
    ON CONFLICT DO NOTHING RETURNING id)
SELECT count(*) = 0 FROM ins;
SQL
check "schema: same client_msg_id from another sender is fine" <<'SQL'
WITH c AS (SELECT min(id) id FROM conversations), a AS (SELECT id FROM agents WHERE login = 'bob.smith'),
ins AS (
    INSERT INTO messages (conversation_id, channel, direction, author_kind, author_agent_id, body, client_msg_id)
    SELECT c.id, 'chat', 'out', 'agent', a.id, 'hello', 'm-1' FROM c, a ON CONFLICT DO NOTHING RETURNING id)
SELECT count(*) = 1 FROM ins
SQL
check "schema: (channel, external_id) stored once" <<'SQL'
WITH c AS (SELECT min(id) id, min(customer_id) cu FROM conversations),
ins AS (
    INSERT INTO messages (conversation_id, channel, direction, author_kind, author_customer_id, body, external_id)
    SELECT c.id, 'sms', 'in', 'customer', c.cu, 'x', 'SM1' FROM c, generate_series(1, 1)
    ON CONFLICT DO NOTHING RETURNING id)
SELECT count(*) = 1 FROM ins;
WITH c AS (SELECT min(id) id, min(customer_id) cu FROM conversations),
ins AS (
    INSERT INTO messages (conversation_id, channel, direction, author_kind, author_customer_id, body, external_id)
    SELECT c.id, 'sms', 'in', 'customer', c.cu, 'x', 'SM1' FROM c ON CONFLICT DO NOTHING RETURNING id)
SELECT count(*) = 0 FROM ins;
SQL
check "schema: phone event dedupe rules" <<'SQL'
INSERT INTO phone_events (call_id, event, event_id, at) VALUES
  ('c1', 'held', 'e1', '2026-01-01 10:00Z'), ('c1', 'held', 'e1', '2026-01-01 10:05Z'),
  ('c1', 'answered', NULL, '2026-01-01 10:00Z'), ('c1', 'answered', NULL, '2026-01-01 10:01Z'),
  ('c1', 'held', NULL, '2026-01-01 10:02Z'), ('c1', 'held', NULL, '2026-01-01 10:02Z'),
  ('c1', 'held', NULL, '2026-01-01 10:03Z'), ('c2', 'answered', NULL, '2026-01-01 10:00Z')
ON CONFLICT DO NOTHING;
SELECT count(*) = 5 FROM phone_events
SQL
check "schema: e-mail Message-ID unique per inbox" <<'SQL'
WITH m AS (SELECT min(id) id, min(conversation_id) c FROM messages), i AS (SELECT id FROM inboxes ORDER BY id LIMIT 2)
INSERT INTO email_message_ids (inbox_id, message_id, conversation_id, message_row_id)
SELECT i.id, 'abc@example.com', m.c, m.id FROM i, m, generate_series(1, 2) ON CONFLICT DO NOTHING;
SELECT count(*) = 2 AND count(DISTINCT inbox_id) = 2 FROM email_message_ids
SQL
check_err "schema: inbox address must be normalised" 23514 - '*inboxes_address_normalised*' <<'SQL'
INSERT INTO inboxes (address, queue_id) VALUES ('Upper@Example.com', (SELECT min(id) FROM queues))
SQL
check_err "schema: one pending offer per conversation" 23505 - '*offers_one_pending_uq*' <<'SQL'
INSERT INTO offers (conversation_id, agent_id, expires_at)
SELECT c.id, a.id, now() + interval '20 s' FROM (SELECT min(id) id FROM conversations) c, agents a WHERE a.deleted_at IS NULL
SQL
check_err "schema: api token scopes checked" 23514 - '*api_tokens_scopes_check*' <<'SQL'
INSERT INTO api_tokens (name, token_hash, scopes) VALUES ('zz', repeat('e', 64), '{root}')
SQL
check "schema: updated_at maintained by trigger" <<'SQL'
UPDATE conversations SET updated_at = '2000-01-01', status = 'pending';
SELECT bool_and(updated_at > '2001-01-01') FROM conversations
SQL

# ---------------------------------------------------------------------------
echo "# $PASSES passed, $FAILS failed"
if (( FAILS > 0 )); then
    printf '# failed: %s\n' "${FAILED[@]}"
    exit 1
fi
exit 0
