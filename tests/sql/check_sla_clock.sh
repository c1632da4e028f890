#!/usr/bin/env bash
# check_sla_clock.sh -- verifies the SLA business-time arithmetic of
# sql/0004_sla_clock.sql (cd_sla_due, cd_sla_elapsed, cd_sla_policy_due)
# against a throwaway PostgreSQL.
#
#   tests/sql/check_sla_clock.sh [-v] [--no-bench]
#
# 1. starts a cluster with scripts/pg-sandbox (or $PG_SANDBOX),
# 2. applies every migration the way the daemon does (BEGIN; the whole file as
#    one simple query; INSERT INTO schema_migrations; COMMIT),
# 3. checks due times and elapsed business time against values computed by
#    hand (24x7 with pauses, business hours, holidays, DST in Europe/Madrid
#    and America/New_York, nonexistent / ambiguous local times), then two
#    properties over many generated cases (elapsed(start, due(b)) = b, and
#    elapsed = a minute-by-minute count),
# 4. prints the cost of one call (not a pass/fail; --no-bench skips it).
# Prints PASS/FAIL per check; exits 1 when any check failed.  -v shows the
# output of failed checks in full.  The sandbox is stopped on exit.
#
# Expected instants are written with the offset in force locally (Madrid:
# +01 winter / +02 summer; New York: -05 / -04), so each one reads as the
# local wall-clock time it stands for.  Sessions run with TimeZone UTC (PGTZ):
# a failing check prints "got ..., want ..." in UTC.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SANDBOX=${PG_SANDBOX:-$ROOT/scripts/pg-sandbox}
[[ -x $SANDBOX ]] || { echo "pg-sandbox not found: $SANDBOX" >&2; exit 1; }
VERBOSE=0
BENCH=1
for a in "$@"; do
    case $a in
        -v) VERBOSE=1;;
        --no-bench) BENCH=0;;
        *) echo "usage: $0 [-v] [--no-bench]" >&2; exit 2;;
    esac
done

# shellcheck source=lib.sh
source "$ROOT/tests/sql/lib.sh"

SBDIR=$(mktemp -d /tmp/cd-check-sla-clock.XXXXXX)
chmod 755 "$SBDIR"
# shellcheck disable=SC2317  # invoked by the trap
cleanup() { "$SANDBOX" stop "$SBDIR" >/dev/null 2>&1 || rm -rf "$SBDIR"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

sandbox_start 128MB
# the functions must not depend on it; UTC makes failure output comparable
export PGTZ=UTC

echo "# PostgreSQL: $(q 'SHOW server_version')"

# ---------------------------------------------------------------------------
# Migrations, as src/store/migrate.c applies them
# ---------------------------------------------------------------------------
migrate_daemon_style 0004_sla_clock.sql

# Test helpers:
#   t_is(got, want)   't' when equal (NULLs equal), else 'got X, want Y'
#   t_near(got, want) 't' when the two numbers differ by at most 1 us
#   wk()              Mon-Fri 09:00-17:00
#   split()           Mon-Fri 09:00-13:00 and 14:00-18:00
#   every(iv)         the same interval every day of the week
out=$(psqlc 2>&1 <<'SQL'
CREATE FUNCTION t_is(p_got anyelement, p_want anyelement) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_got IS NOT DISTINCT FROM p_want THEN 't'
                ELSE format('got %s, want %s', coalesce(p_got::text, 'NULL'), coalesce(p_want::text, 'NULL')) END $$;
CREATE FUNCTION t_near(p_got double precision, p_want double precision) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_got IS NOT DISTINCT FROM p_want OR abs(p_got - p_want) <= 1e-6 THEN 't'
                ELSE format('got %s, want %s', coalesce(p_got::text, 'NULL'), coalesce(p_want::text, 'NULL')) END $$;
CREATE FUNCTION wk() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT '{"mon":["09:00-17:00"],"tue":["09:00-17:00"],"wed":["09:00-17:00"],"thu":["09:00-17:00"],"fri":["09:00-17:00"]}'::jsonb $$;
CREATE FUNCTION split() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_object_agg(d, '["09:00-13:00","14:00-18:00"]'::jsonb) FROM unnest('{mon,tue,wed,thu,fri}'::text[]) d $$;
CREATE FUNCTION every(p_iv text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_object_agg(d, jsonb_build_array(p_iv)) FROM unnest('{mon,tue,wed,thu,fri,sat,sun}'::text[]) d $$;
SQL
)
[[ -z $out ]] || fail "test helpers" "$out"

check "functions: all STABLE (AT TIME ZONE reads the tz database), with the documented signatures" <<'SQL'
SELECT count(*) = 3 AND bool_and(provolatile = 's')
  FROM pg_proc
 WHERE oid IN ('cd_sla_due(text, jsonb, date[], timestamptz, double precision, tstzrange[])'::regprocedure,
               'cd_sla_elapsed(text, jsonb, date[], timestamptz, timestamptz, tstzrange[])'::regprocedure,
               'cd_sla_policy_due(bigint, timestamptz, double precision, tstzrange[])'::regprocedure)
SQL

# ---------------------------------------------------------------------------
# 24x7 (hours NULL), UTC: only pauses matter
# ---------------------------------------------------------------------------
check "24x7: due = start + budget" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600), '2026-01-05 11:00Z');
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00:00.5Z', 86400 * 365), '2027-01-05 10:00:00.5Z')
SQL
check "24x7: exact to the microsecond (no rounding to whole seconds)" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 90.123456), '2026-01-05 10:01:30.123456Z');
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 0.000001), '2026-01-05 10:00:00.000001Z');
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00:00.999999Z', 0.5), '2026-01-05 10:00:01.499999Z')
SQL
check "24x7: one pause in the middle (10:20-10:35) delays the due by 15 min" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 10:20Z', '2026-01-05 10:35Z')]), '2026-01-05 11:15Z')
SQL
check "24x7: two overlapping pauses (10:10-10:30, 10:20-10:50) count once: +40 min, in any order" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 10:10Z', '2026-01-05 10:30Z'),
                             tstzrange('2026-01-05 10:20Z', '2026-01-05 10:50Z')]), '2026-01-05 11:40Z');
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 10:20Z', '2026-01-05 10:50Z'),
                             tstzrange('2026-01-05 10:10Z', '2026-01-05 10:30Z')]), '2026-01-05 11:40Z');
-- touching pauses and one nested in another
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 10:10Z', '2026-01-05 10:20Z'),
                             tstzrange('2026-01-05 10:20Z', '2026-01-05 10:30Z'),
                             tstzrange('2026-01-05 10:12Z', '2026-01-05 10:14Z')]), '2026-01-05 11:20Z')
SQL
check "24x7: a pause before start is ignored; one straddling start counts from start" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 09:00Z', '2026-01-05 09:30Z')]), '2026-01-05 11:00Z');
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 09:30Z', '2026-01-05 10:15Z')]), '2026-01-05 11:15Z');
-- unbounded lower bound = paused since ever
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange(NULL, '2026-01-05 10:30Z')]), '2026-01-05 11:30Z')
SQL
check "24x7: open-ended pause starting before the due -> NULL (NULL upper or 'infinity')" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 10:30Z', NULL)]), NULL);
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 10:30Z', 'infinity')]), NULL);
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 0,
                       ARRAY[tstzrange('2026-01-05 09:00Z', NULL)]), NULL)
SQL
check "24x7: open-ended pause starting after the due, or exactly at it -> unchanged" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 11:30Z', NULL)]), '2026-01-05 11:00Z');
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 11:00Z', NULL)]), '2026-01-05 11:00Z')
SQL
check "24x7: a pause starting exactly at start" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 10:00Z', '2026-01-05 10:30Z')]), '2026-01-05 11:30Z');
-- budget 0: the first counted instant, i.e. the end of that pause
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 0,
                       ARRAY[tstzrange('2026-01-05 10:00Z', '2026-01-05 10:30Z')]), '2026-01-05 10:30Z')
SQL
check "24x7: bound inclusivity is ignored; NULL array, NULL elements and empty ranges are ignored" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 10:20Z', '2026-01-05 10:35Z', '[]')]), '2026-01-05 11:15Z');
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600,
                       ARRAY[tstzrange('2026-01-05 10:20Z', '2026-01-05 10:35Z', '()')]), '2026-01-05 11:15Z');
SELECT t_is(cd_sla_due('UTC', NULL, NULL, '2026-01-05 10:00Z', 3600, NULL), '2026-01-05 11:00Z');
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 3600, ARRAY[NULL, 'empty']::tstzrange[]), '2026-01-05 11:00Z')
SQL
check "24x7: the time zone is not consulted (any or none)" <<'SQL'
SELECT t_is(cd_sla_due(NULL, NULL, '{}', '2026-01-05 10:00Z', 3600), '2026-01-05 11:00Z');
SELECT t_is(cd_sla_due('Mars/Olympus', NULL, '{}', '2026-01-05 10:00Z', 3600), '2026-01-05 11:00Z')
SQL
check "budget 0 or negative -> the first counted instant >= start" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 0), '2026-01-05 10:00Z');
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', -5), '2026-01-05 10:00Z');
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 10:00+02', 0), '2026-06-01 10:00+02');   -- in a window: start
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-05 17:00+02', 0), '2026-06-08 09:00+02');   -- Fri at the close: Mon opening
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-06 12:00+02', -1), '2026-06-08 09:00+02')   -- Sat
SQL
check "NULL / NaN / Infinity / >= 1e12 s budget, NULL or infinite start -> NULL" <<'SQL'
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', NULL), NULL);
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 'NaN'), NULL);
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 'Infinity'), NULL);
SELECT t_is(cd_sla_due('UTC', NULL, '{}', '2026-01-05 10:00Z', 1e12), NULL);
SELECT t_is(cd_sla_due('UTC', wk(), '{}', NULL, 60), NULL);
SELECT t_is(cd_sla_due('UTC', NULL, '{}', 'infinity', 60), NULL);
SELECT t_is(cd_sla_due(NULL, wk(), '{}', '2026-01-05 10:00Z', 60), NULL)
SQL

# ---------------------------------------------------------------------------
# Business hours Mon-Fri 09:00-17:00, Europe/Madrid (June 2026: CEST, +02)
# 2026-06-01 is a Monday, 06-05 a Friday, 06-06/07 the weekend.
# ---------------------------------------------------------------------------
check "hours: start inside a window (Mon 10:00 + 2 h -> 12:00)" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 10:00+02', 7200), '2026-06-01 12:00+02')
SQL
check "hours: start before opening -> the clock starts at 09:00 (Mon 07:15 + 1 h -> 10:00)" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 07:15+02', 3600), '2026-06-01 10:00+02')
SQL
check "hours: Fri 16:30 + 1 h -> Mon 09:30 local" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-05 16:30+02', 3600), '2026-06-08 09:30+02')
SQL
check "hours: a budget ending exactly at a close is due at that close, not at the next opening" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-05 16:30+02', 1800), '2026-06-05 17:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 09:00+02', 5 * 8 * 3600), '2026-06-05 17:00+02')
SQL
check "hours: start on Saturday -> counts from Monday 09:00" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-06 12:00+02', 3600), '2026-06-08 10:00+02')
SQL
check "hours: start after Friday's close -> Monday" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-05 18:00+02', 3600), '2026-06-08 10:00+02')
SQL
check "hours: a holiday Monday pushes Fri 16:30 + 1 h to Tuesday 09:30" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{2026-06-08}', '2026-06-05 16:30+02', 3600), '2026-06-09 09:30+02')
SQL
check "hours: a budget spanning several days" <<'SQL'
-- Mon 15-17 (2 h) + Tue 8 h + Wed 8 h + Thu 2 h = 20 h
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 15:00+02', 72000), '2026-06-04 11:00+02');
-- 100000 s: Mon 7200 + Tue..Thu 86400 = 93600, 6400 s = 1:46:40 into Friday
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 15:00+02', 100000), '2026-06-05 10:46:40+02');
-- 9 business days from Monday: the second Friday's close
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 09:00+02', 10 * 28800), '2026-06-12 17:00+02')
SQL
check "hours: exact to the microsecond across a close" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 16:59:59.999999+02', 0.000002), '2026-06-02 09:00:00.000001+02');
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 16:00+02', 3600.25), '2026-06-02 09:00:00.25+02')
SQL
check "hours: split windows 09-13 / 14-18, the lunch gap does not count" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', split(), '{}', '2026-06-01 12:30+02', 3600), '2026-06-01 14:30+02');
SELECT t_is(cd_sla_due('Europe/Madrid', split(), '{}', '2026-06-01 13:20+02', 0), '2026-06-01 14:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', split(), '{}', '2026-06-01 13:20+02', 600), '2026-06-01 14:10+02');
SELECT t_is(cd_sla_due('Europe/Madrid', split(), '{}', '2026-06-01 08:00+02', 4 * 3600), '2026-06-01 13:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', split(), '{}', '2026-06-01 08:00+02', 4 * 3600 + 1), '2026-06-01 14:00:01+02');
SELECT t_is(cd_sla_due('Europe/Madrid', split(), '{}', '2026-06-01 17:30+02', 3600), '2026-06-02 09:30+02')
SQL

# ---------------------------------------------------------------------------
# DST.  Europe/Madrid: 2026-03-29 02:00 CET -> 03:00 CEST (23 h day),
# 2026-10-25 03:00 CEST -> 02:00 CET (25 h day).  America/New_York:
# 2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST.
# All four changes fall on a Sunday.
# ---------------------------------------------------------------------------
check "DST Madrid spring, 00:00-24:00 every day: 24 h from Sat 00:00 -> Sun 00:00 (a 24 h day)" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', every('00:00-24:00'), '{}', '2026-03-28 00:00+01', 86400), '2026-03-29 00:00+01')
SQL
check "DST Madrid spring, 00:00-24:00: the change day has 23 h; 24 h from its midnight -> Mon 01:00 CEST" <<'SQL'
SELECT t_near(cd_sla_elapsed('Europe/Madrid', every('00:00-24:00'), '{}', '2026-03-29 00:00+01', '2026-03-30 00:00+02'), 82800);
SELECT t_is(cd_sla_due('Europe/Madrid', every('00:00-24:00'), '{}', '2026-03-29 00:00+01', 86400), '2026-03-30 01:00+02')
SQL
check "DST Madrid fall, 00:00-24:00: 24 h from Sat 00:00 -> Sun 00:00 (a 24 h day)" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', every('00:00-24:00'), '{}', '2026-10-24 00:00+02', 86400), '2026-10-25 00:00+02')
SQL
check "DST Madrid fall, 00:00-24:00: the change day has 25 h; 24 h from its midnight -> Sun 23:00 CET" <<'SQL'
SELECT t_near(cd_sla_elapsed('Europe/Madrid', every('00:00-24:00'), '{}', '2026-10-25 00:00+02', '2026-10-26 00:00+01'), 90000);
SELECT t_is(cd_sla_due('Europe/Madrid', every('00:00-24:00'), '{}', '2026-10-25 00:00+02', 86400), '2026-10-25 23:00+01')
SQL
check "DST Madrid spring, 09:00-17:00 every day: still 8 h on the change day, opening at 09:00 CEST" <<'SQL'
SELECT t_near(cd_sla_elapsed('Europe/Madrid', every('09:00-17:00'), '{}', '2026-03-29 00:00+01', '2026-03-30 00:00+02'), 28800);
SELECT t_is(cd_sla_due('Europe/Madrid', every('09:00-17:00'), '{}', '2026-03-28 16:00+01', 5400), '2026-03-29 09:30+02');
-- Sat 1 h + Sun 8 h + Mon 1 h
SELECT t_is(cd_sla_due('Europe/Madrid', every('09:00-17:00'), '{}', '2026-03-28 16:00+01', 36000), '2026-03-30 10:00+02')
SQL
check "DST Madrid fall, 09:00-17:00 every day: still 8 h on the change day, opening at 09:00 CET" <<'SQL'
SELECT t_near(cd_sla_elapsed('Europe/Madrid', every('09:00-17:00'), '{}', '2026-10-25 00:00+02', '2026-10-26 00:00+01'), 28800);
SELECT t_is(cd_sla_due('Europe/Madrid', every('09:00-17:00'), '{}', '2026-10-24 16:00+02', 5400), '2026-10-25 09:30+01');
SELECT t_is(cd_sla_due('Europe/Madrid', every('09:00-17:00'), '{}', '2026-10-24 16:00+02', 36000), '2026-10-26 10:00+01')
SQL
check "DST Madrid, Mon-Fri 09-17 across the changing weekend: Fri 16:00 + 2 h -> Mon 10:00 local" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-03-27 16:00+01', 7200), '2026-03-30 10:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-10-23 16:00+02', 7200), '2026-10-26 10:00+01')
SQL
check "DST New York spring, 00:00-24:00: Sat 24 h day, Sun 23 h day" <<'SQL'
SELECT t_is(cd_sla_due('America/New_York', every('00:00-24:00'), '{}', '2026-03-07 00:00-05', 86400), '2026-03-08 00:00-05');
SELECT t_near(cd_sla_elapsed('America/New_York', every('00:00-24:00'), '{}', '2026-03-08 00:00-05', '2026-03-09 00:00-04'), 82800);
SELECT t_is(cd_sla_due('America/New_York', every('00:00-24:00'), '{}', '2026-03-08 00:00-05', 86400), '2026-03-09 01:00-04')
SQL
check "DST New York fall, 00:00-24:00: Sat 24 h day, Sun 25 h day" <<'SQL'
SELECT t_is(cd_sla_due('America/New_York', every('00:00-24:00'), '{}', '2026-10-31 00:00-04', 86400), '2026-11-01 00:00-04');
SELECT t_near(cd_sla_elapsed('America/New_York', every('00:00-24:00'), '{}', '2026-11-01 00:00-04', '2026-11-02 00:00-05'), 90000);
SELECT t_is(cd_sla_due('America/New_York', every('00:00-24:00'), '{}', '2026-11-01 00:00-04', 86400), '2026-11-01 23:00-05')
SQL
check "DST New York spring, 09:00-17:00 every day: 8 h on the change day, 09:00/17:00 local" <<'SQL'
SELECT t_near(cd_sla_elapsed('America/New_York', every('09:00-17:00'), '{}', '2026-03-08 00:00-05', '2026-03-09 00:00-04'), 28800);
SELECT t_is(cd_sla_due('America/New_York', every('09:00-17:00'), '{}', '2026-03-07 16:00-05', 5400), '2026-03-08 09:30-04');
SELECT t_is(cd_sla_due('America/New_York', every('09:00-17:00'), '{}', '2026-03-07 16:00-05', 36000), '2026-03-09 10:00-04')
SQL
check "DST New York fall, 09:00-17:00 every day: 8 h on the change day, 09:00/17:00 local" <<'SQL'
SELECT t_near(cd_sla_elapsed('America/New_York', every('09:00-17:00'), '{}', '2026-11-01 00:00-04', '2026-11-02 00:00-05'), 28800);
SELECT t_is(cd_sla_due('America/New_York', every('09:00-17:00'), '{}', '2026-10-31 16:00-04', 5400), '2026-11-01 09:30-05');
SELECT t_is(cd_sla_due('America/New_York', every('09:00-17:00'), '{}', '2026-10-31 16:00-04', 36000), '2026-11-02 10:00-05')
SQL
check "DST, hours NULL (24x7): pure elapsed real time across the changes" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', NULL, '{}', '2026-03-29 00:00+01', 86400), '2026-03-30 01:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', NULL, '{}', '2026-10-25 00:00+02', 86400), '2026-10-25 23:00+01');
SELECT t_is(cd_sla_due('America/New_York', NULL, '{}', '2026-03-08 00:00-05', 86400), '2026-03-09 01:00-04');
SELECT t_near(cd_sla_elapsed('Europe/Madrid', NULL, '{}', '2026-10-25 00:00+02', '2026-10-26 00:00+01'), 90000);
SELECT t_near(cd_sla_elapsed('America/New_York', NULL, '{}', '2026-03-08 00:00-05', '2026-03-09 00:00-04'), 82800)
SQL
check "DST edge: a window opening inside the spring-forward gap opens at the jump (02:30 -> 03:00 CEST)" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', '{"sun":["02:30-05:00"]}', '{}', '2026-03-28 12:00+01', 0), '2026-03-29 03:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', '{"sun":["02:30-05:00"]}', '{}', '2026-03-28 12:00+01', 3600), '2026-03-29 04:00+02');
SELECT t_near(cd_sla_elapsed('Europe/Madrid', '{"sun":["02:30-05:00"]}', '{}', '2026-03-29 00:00+01', '2026-03-30 00:00+02'), 7200);
SELECT t_is(cd_sla_due('America/New_York', '{"sun":["02:30-04:00"]}', '{}', '2026-03-07 12:00-05', 0), '2026-03-08 03:00-04');
SELECT t_near(cd_sla_elapsed('America/New_York', '{"sun":["02:30-04:00"]}', '{}', '2026-03-08 00:00-05', '2026-03-09 00:00-04'), 3600)
SQL
check "DST edge: a window closing inside the gap closes at the jump (00:00-02:30 is 2 real hours)" <<'SQL'
SELECT t_near(cd_sla_elapsed('Europe/Madrid', '{"sun":["00:00-02:30"]}', '{}', '2026-03-29 00:00+01', '2026-03-30 00:00+02'), 7200);
SELECT t_is(cd_sla_due('Europe/Madrid', '{"sun":["00:00-02:30"]}', '{}', '2026-03-28 12:00+01', 7200), '2026-03-29 03:00+02')
SQL
check "DST edge: a window entirely inside the gap is empty that day (next Sunday instead)" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', '{"sun":["02:00-03:00"]}', '{}', '2026-03-28 12:00+01', 0), '2026-04-05 02:00+02');
SELECT t_near(cd_sla_elapsed('Europe/Madrid', '{"sun":["02:00-03:00"]}', '{}', '2026-03-29 00:00+01', '2026-03-30 00:00+02'), 0)
SQL
check "DST edge: an ambiguous (fall-back) local time is its later occurrence" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', '{"sun":["02:30-04:00"]}', '{}', '2026-10-24 12:00+02', 0), '2026-10-25 02:30+01');
SELECT t_near(cd_sla_elapsed('Europe/Madrid', '{"sun":["02:30-04:00"]}', '{}', '2026-10-25 00:00+02', '2026-10-26 00:00+01'), 5400);
SELECT t_is(cd_sla_due('America/New_York', '{"sun":["01:30-03:00"]}', '{}', '2026-10-31 12:00-04', 0), '2026-11-01 01:30-05');
SELECT t_near(cd_sla_elapsed('America/New_York', '{"sun":["01:30-03:00"]}', '{}', '2026-11-01 00:00-04', '2026-11-02 00:00-05'), 5400)
SQL

# ---------------------------------------------------------------------------
# Pauses within business hours (Madrid, Mon-Fri 09-17, June 2026)
# ---------------------------------------------------------------------------
check "pauses: a pause during a window delays the due by exactly the paused business time" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 10:00+02', 7200,
                       ARRAY[tstzrange('2026-06-01 11:00+02', '2026-06-01 11:30+02')]), '2026-06-01 12:30+02');
-- 16:30-17:00 Mon and 09:00-09:15 Tue are paused: 45 min
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 16:00+02', 7200,
                       ARRAY[tstzrange('2026-06-01 16:30+02', '2026-06-02 09:15+02')]), '2026-06-02 10:45+02')
SQL
check "pauses: a pause entirely outside business hours changes nothing" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 16:00+02', 7200), '2026-06-02 10:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 16:00+02', 7200,
                       ARRAY[tstzrange('2026-06-01 17:00+02', '2026-06-02 09:00+02'),
                             tstzrange('2026-05-30 10:00+02', '2026-05-31 20:00+02')]), '2026-06-02 10:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-05 16:30+02', 3600,
                       ARRAY[tstzrange('2026-06-06 00:00+02', '2026-06-08 09:00+02')]), '2026-06-08 09:30+02')
SQL
check "pauses: start inside a pause that ends after the close -> next day" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 10:00+02', 7200,
                       ARRAY[tstzrange('2026-06-01 09:00+02', '2026-06-01 18:00+02')]), '2026-06-02 11:00+02')
SQL
check "pauses: a three-week pause is jumped over (30 min before it, 1 h 30 after it)" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 10:00+02', 7200,
                       ARRAY[tstzrange('2026-06-01 10:30+02', '2026-06-22 12:00+02')]), '2026-06-22 13:30+02')
SQL
check "pauses: open-ended pause before the due -> NULL, after it -> unchanged (business hours)" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 10:00+02', 7200,
                       ARRAY[tstzrange('2026-06-01 11:00+02', NULL)]), NULL);
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-01 10:00+02', 7200,
                       ARRAY[tstzrange('2026-06-02 08:00+02', NULL)]), '2026-06-01 12:00+02');
-- starts outside hours, before the next opening: the budget can never be used up
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-05 16:30+02', 3600,
                       ARRAY[tstzrange('2026-06-05 18:00+02', NULL)]), NULL)
SQL

# ---------------------------------------------------------------------------
# Calendars: "24:00", Sunday only, all closed, holidays
# ---------------------------------------------------------------------------
check "calendar: a window ending at 24:00 runs on into the next day's 00:00" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', '{"mon":["20:00-24:00"],"tue":["00:00-02:00"]}', '{}', '2026-06-01 23:00+02', 3600), '2026-06-02 00:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', '{"mon":["20:00-24:00"],"tue":["00:00-02:00"]}', '{}', '2026-06-01 23:00+02', 7200), '2026-06-02 01:00+02');
SELECT t_near(cd_sla_elapsed('Europe/Madrid', '{"mon":["20:00-24:00"],"tue":["00:00-02:00"]}', '{}', '2026-06-01 12:00+02', '2026-06-02 12:00+02'), 21600)
SQL
check "calendar: Sunday only (10-14 UTC): 6 h from a Monday -> the second Sunday 12:00" <<'SQL'
SELECT t_is(cd_sla_due('UTC', '{"sun":["10:00-14:00"]}', '{}', '2026-06-01 00:00Z', 14400), '2026-06-07 14:00Z');
SELECT t_is(cd_sla_due('UTC', '{"sun":["10:00-14:00"]}', '{}', '2026-06-01 00:00Z', 21600), '2026-06-14 12:00Z')
SQL
check "calendar: hours {} or all days [] -> never due (NULL), nothing elapses" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', '{}', '{}', '2026-06-01 10:00+02', 60), NULL);
SELECT t_is(cd_sla_due('Europe/Madrid', '{"mon":[],"sun":[]}', '{}', '2026-06-01 10:00+02', 0), NULL);
SELECT t_near(cd_sla_elapsed('Europe/Madrid', '{}', '{}', '2026-06-01 10:00+02', '2027-06-01 10:00+02'), 0)
SQL
check "calendar: holidays as the only difference (Fri 16:30 + 1 h)" <<'SQL'
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-05 16:30+02', 3600), '2026-06-08 09:30+02');
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{2026-06-08}', '2026-06-05 16:30+02', 3600), '2026-06-09 09:30+02');
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{2026-06-08,2026-06-09}', '2026-06-05 16:30+02', 3600), '2026-06-10 09:30+02');
-- a holiday on the start day closes it too; one on a closed day changes nothing
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{2026-06-05}', '2026-06-05 16:30+02', 3600), '2026-06-08 10:00+02');
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{2026-06-06,2026-06-07}', '2026-06-05 16:30+02', 3600), '2026-06-08 09:30+02')
SQL
check "calendar: holidays are local dates of the policy's zone (New York, 00:00-24:00)" <<'SQL'
-- start Sun 22:00 EDT (Mon 02:00 UTC): 2 h on Sunday, Monday closed, 1 h on Tuesday
SELECT t_is(cd_sla_due('America/New_York', every('00:00-24:00'), '{2026-06-08}', '2026-06-08 02:00Z', 10800), '2026-06-09 01:00-04')
SQL
check "calendar: no open day for 800 days (holidays) -> NULL; 699 days -> due right after them" <<'SQL'
SELECT t_is(cd_sla_due('UTC', every('09:00-17:00'),
                       ARRAY(SELECT d::date FROM generate_series(date '2026-01-01', date '2028-03-31', interval '1 day') d),
                       '2026-01-01 00:00Z', 60), NULL);
SELECT t_is(cd_sla_due('UTC', every('09:00-17:00'),
                       ARRAY(SELECT d::date FROM generate_series(date '2026-01-01', date '2027-11-30', interval '1 day') d),
                       '2026-01-01 00:00Z', 60), '2027-12-01 09:01Z')
SQL
check "calendar: a finite pause longer than 800 days still gives a due after it" <<'SQL'
SELECT t_is(cd_sla_due('UTC', every('09:00-17:00'), '{}', '2026-01-01 00:00Z', 60,
                       ARRAY[tstzrange('2026-01-01 00:00Z', '2029-01-01 00:00Z')]), '2029-01-01 09:01Z')
SQL
check_err "calendar: an unknown time zone is an error (22023) when hours are used" 22023 - 'time zone "Mars/Olympus" not recognized' <<'SQL'
SELECT cd_sla_due('Mars/Olympus', wk(), '{}', '2026-06-01 10:00Z', 60)
SQL

# ---------------------------------------------------------------------------
# cd_sla_elapsed
# ---------------------------------------------------------------------------
check "elapsed: Fri 16:30 -> Mon 09:30 is 1 h; a full week of Mon-Fri 09-17 is 40 h" <<'SQL'
SELECT t_near(cd_sla_elapsed('Europe/Madrid', wk(), '{}', '2026-06-05 16:30+02', '2026-06-08 09:30+02'), 3600);
SELECT t_near(cd_sla_elapsed('Europe/Madrid', wk(), '{}', '2026-06-01 00:00+02', '2026-06-08 00:00+02'), 144000);
SELECT t_near(cd_sla_elapsed('Europe/Madrid', wk(), '{2026-06-03}', '2026-06-01 00:00+02', '2026-06-08 00:00+02'), 115200);
SELECT t_near(cd_sla_elapsed('Europe/Madrid', split(), '{}', '2026-06-01 12:00+02', '2026-06-01 15:30:00.25+02'), 9000.25)
SQL
check "elapsed: end <= start -> 0; NULL or infinite start/end -> NULL" <<'SQL'
SELECT t_near(cd_sla_elapsed('Europe/Madrid', wk(), '{}', '2026-06-01 12:00+02', '2026-06-01 11:00+02'), 0);
SELECT t_near(cd_sla_elapsed('UTC', NULL, '{}', '2026-06-01 12:00Z', '2026-06-01 12:00Z'), 0);
SELECT t_near(cd_sla_elapsed('UTC', NULL, '{}', '2026-06-01 12:00Z', NULL), NULL);
SELECT t_near(cd_sla_elapsed('UTC', NULL, '{}', '2026-06-01 12:00Z', 'infinity'), NULL);
SELECT t_near(cd_sla_elapsed('UTC', wk(), '{}', NULL, '2026-06-01 12:00Z'), NULL)
SQL
check "elapsed: pauses are subtracted; an open-ended pause stops the count at its start" <<'SQL'
SELECT t_near(cd_sla_elapsed('UTC', NULL, '{}', '2026-01-05 10:00Z', '2026-01-05 12:00Z',
                           ARRAY[tstzrange('2026-01-05 10:10Z', '2026-01-05 10:30Z'),
                                 tstzrange('2026-01-05 10:20Z', '2026-01-05 10:50Z')]), 4800);
SELECT t_near(cd_sla_elapsed('UTC', NULL, '{}', '2026-01-05 10:00Z', '2026-01-05 12:00Z',
                           ARRAY[tstzrange('2026-01-05 10:30Z', NULL)]), 1800);
SELECT t_near(cd_sla_elapsed('Europe/Madrid', wk(), '{}', '2026-06-01 00:00+02', '2026-06-08 00:00+02',
                           ARRAY[tstzrange('2026-06-02 16:00+02', '2026-06-04 10:00+02')]), 144000 - 3600 - 28800 - 3600)
SQL
check "elapsed(start, due(b)) = b for the cases above" <<'SQL'
WITH c(tz, hours, hol, st, budget, pauses) AS (VALUES
    ('UTC', NULL::jsonb, '{}'::date[], timestamptz '2026-01-05 10:00Z', 3600::float8,
     ARRAY[tstzrange('2026-01-05 10:10Z', '2026-01-05 10:30Z'), tstzrange('2026-01-05 10:20Z', '2026-01-05 10:50Z')]),
    ('Europe/Madrid', wk(), '{}', '2026-06-05 16:30+02', 3600, '{}'::tstzrange[]),
    ('Europe/Madrid', wk(), '{2026-06-08}', '2026-06-05 16:30+02', 3600, '{}'),
    ('Europe/Madrid', wk(), '{}', '2026-06-01 15:00+02', 100000, '{}'),
    ('Europe/Madrid', wk(), '{}', '2026-06-01 16:59:59.999999+02', 0.000002, '{}'),
    ('Europe/Madrid', split(), '{}', '2026-06-01 12:30+02', 3600, '{}'),
    ('Europe/Madrid', every('00:00-24:00'), '{}', '2026-03-29 00:00+01', 86400, '{}'),
    ('Europe/Madrid', every('00:00-24:00'), '{}', '2026-10-25 00:00+02', 86400, '{}'),
    ('America/New_York', every('09:00-17:00'), '{}', '2026-10-31 16:00-04', 36000, '{}'),
    ('Europe/Madrid', '{"sun":["02:30-05:00"]}', '{}', '2026-03-28 12:00+01', 3600, '{}'),
    ('Europe/Madrid', wk(), '{}', '2026-06-01 16:00+02', 7200, ARRAY[tstzrange('2026-06-01 16:30+02', '2026-06-02 09:15+02')]),
    ('Europe/Madrid', wk(), '{}', '2026-06-01 10:00+02', 7200, ARRAY[tstzrange('2026-06-01 10:30+02', '2026-06-22 12:00+02')]),
    ('UTC', '{"sun":["10:00-14:00"]}', '{}', '2026-06-01 00:00Z', 21600, '{}'))
SELECT t_near(cd_sla_elapsed(tz, hours, hol, st, cd_sla_due(tz, hours, hol, st, budget, pauses), pauses), budget) FROM c
SQL

# ---------------------------------------------------------------------------
# Properties over generated cases
# ---------------------------------------------------------------------------
# 400 cases: zone, calendar, holidays, start anywhere in 2026 (microseconds),
# budget 0 .. ~3 business weeks, 0-3 pauses near the start (some open-ended).
# For each: elapsed(start, due) = budget (to 1 us); due is the earliest such
# instant (elapsed(start, due - 1 us) < budget); a NULL due only with an
# open-ended pause, and then the budget is not used up before it starts.
check "property: elapsed(start, due(b)) = b and due is the earliest such instant (400 generated cases)" <<'SQL'
SELECT true FROM (SELECT setseed(0.42)) s;
CREATE TEMP TABLE gen AS
SELECT n,
       (ARRAY['UTC', 'Europe/Madrid', 'America/New_York', 'Asia/Kolkata'])[1 + floor(random() * 4)::int] AS tz,
       (ARRAY[NULL, wk(), split(), every('00:00-24:00'), every('09:00-17:00'),
              '{"sun":["02:30-05:00"],"sat":["10:00-14:00"],"wed":["08:00-20:00"]}'::jsonb,
              '{"mon":["00:00-01:00","23:00-24:00"],"fri":["12:00-24:00"],"sat":["00:00-12:00"]}'::jsonb])
           [1 + floor(random() * 7)::int] AS hours,
       CASE WHEN random() < 0.3 THEN '{2026-03-30,2026-06-08,2026-10-26,2026-12-25}'::date[] ELSE '{}' END AS hol,
       timestamptz '2026-01-01 00:00Z' + random() * interval '365 days' AS st,
       CASE WHEN random() < 0.1 THEN 0 ELSE round((random() * 600000)::numeric, 6)::float8 END AS budget,
       random() AS r1, random() AS r2, random() AS r3, random() AS r4
  FROM generate_series(1, 400) n;
CREATE TEMP TABLE gen2 AS
SELECT g.*, ARRAY(SELECT tstzrange(g.st + (x.a - 0.2) * interval '5 days',
                                   CASE WHEN x.open THEN NULL ELSE g.st + (x.a - 0.2) * interval '5 days' + x.len * interval '2 days' END)
                    FROM (VALUES (r2, r3, r4 < 0.15), (r3, r4, false), (r4, r2, false)) x(a, len, open)
                   LIMIT floor(r1 * 4)::int) AS pauses
  FROM gen g;
CREATE TEMP TABLE res AS
SELECT g.*, cd_sla_due(tz, hours, hol, st, budget, pauses) AS due FROM gen2 g;
SELECT coalesce(string_agg(format('case %s: %s %s start %s budget %s pauses %s -> due %s, elapsed %s',
                                  n, tz, hours, st, budget, pauses, due,
                                  cd_sla_elapsed(tz, hours, hol, st, due, pauses)), E'\n'), 't')
  FROM res
 WHERE CASE WHEN due IS NULL
            THEN NOT EXISTS (SELECT 1 FROM unnest(pauses) p WHERE upper_inf(p)
                               AND cd_sla_elapsed(tz, hours, hol, st, lower(p), pauses) < budget)
            ELSE abs(cd_sla_elapsed(tz, hours, hol, st, due, pauses) - budget) > 1e-6
                 OR (budget > 0 AND cd_sla_elapsed(tz, hours, hol, st, due - interval '1 microsecond', pauses) >= budget)
       END;
SELECT count(*) FILTER (WHERE due IS NULL) BETWEEN 1 AND 100 FROM res   -- the NULL branch was exercised
SQL
# Minute by minute: an instant counts when its local wall-clock time is in a
# window of its local date, the date is no holiday, and no pause holds it.
# Whole-minute edges everywhere, so sampling each minute is exact.  Calendars
# whose window edges are not ambiguous local times (edges in a
# spring-forward gap are fine: the wall clock reaches them at the jump).
check "property: elapsed = a minute-by-minute count, across the 2026 DST changes (Madrid, New York)" <<'SQL'
SELECT true FROM (SELECT setseed(0.17)) s;
CREATE TEMP TABLE bf AS
SELECT n, tz, hours, hol,
       date_trunc('minute', base + random() * interval '6 days') AS st,
       date_trunc('minute', random() * interval '5 days') AS span,
       random() AS r1, random() AS r2, random() AS r3
  FROM generate_series(1, 4) n,
       (VALUES ('Europe/Madrid', timestamptz '2026-03-25 00:00Z'), ('Europe/Madrid', '2026-10-21 00:00Z'),
               ('America/New_York', '2026-03-04 00:00Z'), ('America/New_York', '2026-10-28 00:00Z')) z(tz, base),
       (VALUES ('{"mon":["08:00-12:30","13:15-19:00"],"tue":["08:00-12:30","13:15-19:00"],"wed":["08:00-19:00"],
                  "thu":["08:00-12:30"],"fri":["08:00-12:30","13:15-19:00"],"sat":["10:00-14:00"],
                  "sun":["00:30-04:00","22:00-24:00"]}'::jsonb, '{2026-03-31,2026-10-27,2026-11-03}'::date[]),
               ('{"sat":["00:00-24:00"],"sun":["00:00-24:00"],"mon":["07:00-09:00"]}', '{}')) h(hours, hol);
INSERT INTO bf
SELECT 100 + n, 'Europe/Madrid', '{"sun":["02:30-05:00","12:00-13:00"],"mon":["09:00-17:00"]}', '{}',
       date_trunc('minute', timestamptz '2026-03-26 00:00Z' + random() * interval '3 days'),
       date_trunc('minute', random() * interval '5 days'), random(), random(), random()
  FROM generate_series(1, 4) n;
-- no pause (1/4), one (1/4) or two (1/2), up to 2 days long, starting
-- anywhere in the span (so they often cover a close and end inside a later
-- window)
CREATE TEMP TABLE bf2 AS
SELECT b.*, st + span AS en,
       ARRAY(SELECT tstzrange(date_trunc('minute', st + x.f * span), date_trunc('minute', st + x.f * span + x.len * interval '2 days'))
               FROM (VALUES (1, r2, r3), (2, r3, r2 * r3)) x(i, f, len)
              WHERE x.i <= CASE WHEN r1 < 0.25 THEN 0 WHEN r1 < 0.5 THEN 1 ELSE 2 END) AS pauses
  FROM bf b;
CREATE TEMP TABLE bfr AS
SELECT b.*, cd_sla_elapsed(tz, hours, hol, st, en, pauses) AS e,
       60 * (SELECT count(*)
               FROM generate_series(b.st, b.en - interval '1 minute', interval '1 minute') t,
                    LATERAL (SELECT t AT TIME ZONE b.tz AS l) l
              WHERE NOT (l.l::date = ANY (b.hol))
                AND EXISTS (SELECT 1
                              FROM jsonb_array_elements_text(b.hours -> (ARRAY['mon','tue','wed','thu','fri','sat','sun'])[extract(isodow FROM l.l)::int]) w
                             WHERE l.l::time >= substr(w, 1, 5)::time
                               AND (substr(w, 7, 5) = '24:00' OR l.l::time < substr(w, 7, 5)::time))
                AND NOT EXISTS (SELECT 1 FROM unnest(b.pauses) p WHERE p @> t)) AS m
  FROM bf2 b;
SELECT coalesce(string_agg(format('%s %s %s..%s pauses %s: elapsed %s, minutes*60 %s', tz, hours, st, en, pauses, e, m), E'\n'), 't')
  FROM bfr WHERE e IS DISTINCT FROM m::float8;
-- the cases are not trivial: most count something, some have a pause
SELECT count(*) = 36 AND count(*) FILTER (WHERE m > 0) >= 20 AND count(*) FILTER (WHERE pauses <> '{}') >= 18 FROM bfr
SQL

# ---------------------------------------------------------------------------
# The session's TimeZone does not matter
# ---------------------------------------------------------------------------
check "session TimeZone (Pacific/Chatham) changes nothing" <<'SQL'
SET TimeZone = 'Pacific/Chatham';
SELECT t_is(cd_sla_due('Europe/Madrid', wk(), '{}', '2026-06-05 16:30+02', 3600), '2026-06-08 09:30+02');
SELECT t_is(cd_sla_due('Europe/Madrid', every('00:00-24:00'), '{}', '2026-03-29 00:00+01', 86400), '2026-03-30 01:00+02');
SELECT t_is(cd_sla_due('UTC', '{"sun":["10:00-14:00"]}', '{}', '2026-06-01 00:00Z', 21600), '2026-06-14 12:00Z');
SELECT t_near(cd_sla_elapsed('America/New_York', every('00:00-24:00'), '{}', '2026-11-01 00:00-04', '2026-11-02 00:00-05'), 90000)
SQL

# ---------------------------------------------------------------------------
# cd_sla_policy_due, with real sla_policies rows
# ---------------------------------------------------------------------------
out=$(psqlc 2>&1 <<'SQL'
INSERT INTO sla_policies (name, timezone, hours, holidays, first_response_s, resolution_s)
VALUES ('madrid-office', 'Europe/Madrid',
        '{"mon":["09:00-17:00"],"tue":["09:00-17:00"],"wed":["09:00-17:00"],"thu":["09:00-17:00"],"fri":["09:00-17:00"]}',
        '{2026-06-08}', 3600, 144000),
       ('always', 'America/New_York', NULL, '{}', 900, NULL);
SQL
)
[[ -z $out ]] || fail "policy fixtures" "$out"
check "policy_due: reads zone, hours and holidays of the row (Fri 16:30 + first_response 1 h, Mon holiday)" <<'SQL'
SELECT t_is(cd_sla_policy_due(p.id, '2026-06-05 16:30+02', p.first_response_s), '2026-06-09 09:30+02')
  FROM sla_policies p WHERE p.name = 'madrid-office';
SELECT t_is(cd_sla_policy_due(p.id, '2026-06-01 09:00+02', p.resolution_s), '2026-06-05 17:00+02')
  FROM sla_policies p WHERE p.name = 'madrid-office';
SELECT t_is(cd_sla_policy_due(p.id, '2026-06-05 16:30+02', 3600), cd_sla_due(p.timezone, p.hours, p.holidays, '2026-06-05 16:30+02', 3600))
  FROM sla_policies p WHERE p.name = 'madrid-office'
SQL
check "policy_due: with pauses; a 24x7 policy" <<'SQL'
SELECT t_is(cd_sla_policy_due(p.id, '2026-06-01 10:00+02', 7200, ARRAY[tstzrange('2026-06-01 11:00+02', '2026-06-01 11:30+02')]),
            '2026-06-01 12:30+02')
  FROM sla_policies p WHERE p.name = 'madrid-office';
SELECT t_is(cd_sla_policy_due(p.id, '2026-03-08 00:00-05', 86400), '2026-03-09 01:00-04')
  FROM sla_policies p WHERE p.name = 'always'
SQL
check "policy_due: no such policy -> NULL" <<'SQL'
SELECT t_is(cd_sla_policy_due(-1, '2026-06-05 16:30+02', 3600), NULL);
SELECT t_is(cd_sla_policy_due(NULL, '2026-06-05 16:30+02', 3600), NULL)
SQL

# ---------------------------------------------------------------------------
# Cost of one call (information, not pass/fail)
# ---------------------------------------------------------------------------
if (( BENCH )); then
    # N calls from PL/pgSQL (no per-call client round trip), starts spread
    # over a year in 17-minute steps: 1 h budget on Mon-Fri 09-17 Madrid
    # hours, the same with two pauses and a holiday, 1 h on 24x7, and one
    # 40-business-hour budget (a week's walk).  The machine may be shared:
    # treat as a rough figure.
    out=$(psqlc 2>&1 <<'SQL'
CREATE FUNCTION t_bench(p_n integer, p_hours jsonb, p_budget float8, p_hol date[], p_pauses boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    st timestamptz;
    x  timestamptz;
    us float8;
BEGIN
    FOR g IN 1 .. p_n LOOP
        st := timestamptz '2026-01-01 00:00Z' + g * interval '17 minutes';
        x := cd_sla_due('Europe/Madrid', p_hours, p_hol, st, p_budget,
                        CASE WHEN p_pauses THEN ARRAY[tstzrange(st + interval '10 minutes', st + interval '20 minutes'),
                                                      tstzrange(st - interval '1 day', st - interval '23 hours')]
                             ELSE '{}' END);
    END LOOP;
    us := extract(epoch FROM clock_timestamp() - t0) * 1e6 / p_n;
    RETURN format('%s us/call, %s calls/s', round(us::numeric, 1), round(1e6 / us));
END
$$;
SQL
)
    [[ -z $out ]] || echo "# bench setup: $out"
    echo "# cost of cd_sla_due (load: $(cut -d' ' -f1-3 /proc/loadavg)):"
    echo "#   1 h budget, Mon-Fri 09-17 Madrid:            $(q "SELECT t_bench(20000, wk(), 3600, '{}', false)")"
    echo "#   1 h budget, 09-17, 2 pauses, 1 holiday:      $(q "SELECT t_bench(20000, wk(), 3600, '{2026-12-25}', true)")"
    echo "#   1 h budget, 24x7 (hours NULL):               $(q "SELECT t_bench(20000, NULL, 3600, '{}', false)")"
    echo "#   40 h budget (a week), Mon-Fri 09-17 Madrid:  $(q "SELECT t_bench(5000, wk(), 144000, '{}', false)")"
fi

# ---------------------------------------------------------------------------
echo "# $PASSES passed, $FAILS failed"
if (( FAILS > 0 )); then
    printf '# failed: %s\n' "${FAILED[@]}"
    exit 1
fi
exit 0
