#!/usr/bin/env bash
# check_phone_offer.sh -- cd_phone_event(p, p_offer) (sql/0020_phone_offer.sql): a new call's
# `queued` stored already offered to the router's pick, or, when the pick no longer holds,
# exactly as without one.
#
#   tests/sql/check_phone_offer.sh [-v]
#
# One throwaway cluster, every migration (daemon style).  Prints PASS/FAIL per check; exits
# 1 when any check failed.  -v shows full output of failures.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=lib.sh
source "$ROOT/tests/sql/lib.sh"
sql_check_start phone-offer "$@"
export PGTZ=UTC
echo "# PostgreSQL: $(q 'SHOW server_version')"
migrate_daemon_style 0020_phone_offer.sql

out=$(psqlc <<'SQL' 2>&1
SELECT cd_admin_create('queues', '{"name":"Sales","priority":3}') IS NOT NULL;
SELECT cd_admin_create('queues', '{"name":"Support"}') IS NOT NULL;
SELECT cd_admin_create('agents', '{"login":"ann","name":"Ann","password_hash":"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA","extension":"100"}') IS NOT NULL;
SELECT cd_admin_create('agents', '{"login":"bob","name":"Bob","password_hash":"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA","extension":"101"}') IS NOT NULL;
-- the router's pick for a call into Sales (queue 1): ann, a minute to answer
CREATE FUNCTION t_pick(p_agent bigint, p_queue bigint DEFAULT 1, p_in_ms bigint DEFAULT 60000,
                       p_sticky int DEFAULT 600) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('queue', p_queue, 'agent', p_agent, 'expires_at', cd_ms(now()) + p_in_ms,
                              'reason', '{"pick":"longest_idle","eligible":2}'::jsonb, 'sticky_s', p_sticky) $$;
CREATE FUNCTION t_call(p_call text, p_from text, p_pick jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT cd_phone_event(jsonb_build_object('call_id', p_call, 'event', 'queued', 'queue', 'sales',
                                             'from', p_from), p_pick) $$;
CREATE FUNCTION t_kinds(p_conv bigint) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(kind, ',' ORDER BY id) FROM conversation_events WHERE conversation_id = p_conv $$;
SQL
)
if [[ $out == $'t\nt\nt\nt' ]]; then pass "setup"; else fail "setup" "$out"; fi

check_eq "a new call with a pick: stored offered, its offer, events and route in one go" \
    "offered|offered|ann|pending|call_queued,enqueued,offered|longest_idle|t" <<'SQL'
-- (a statement does not see what a function it calls wrote: the answer is kept first)
CREATE TEMP TABLE r AS SELECT t_call('c1', '+15550000001', t_pick(1)) AS j;
SELECT r.j ->> 'status', r.j -> 'route' ->> 'status', a.login, o.state,
       t_kinds((r.j ->> 'conversation')::bigint),
       (SELECT e.data -> 'reason' ->> 'pick' FROM conversation_events e
         WHERE e.conversation_id = (r.j ->> 'conversation')::bigint AND e.kind = 'offered'),
       (r.j -> 'route' ->> 'offer')::bigint = (r.j ->> 'offer')::bigint
       -- the route built in place is cd_route_info's, read afterwards
       AND r.j -> 'route' = cd_route_info((r.j ->> 'conversation')::bigint)
  FROM r JOIN offers o ON o.id = (r.j ->> 'offer')::bigint JOIN agents a ON a.id = o.agent_id;
SQL

check_eq "... its route also for a returning caller (last_agent) and in a queue with an SLA policy" $'t\nt' <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"fast","first_response_s":60}') IS NOT NULL \g /dev/null
SELECT cd_admin_update('queues', 'Support', '{"sla_policy":"fast"}') IS NOT NULL \g /dev/null
UPDATE conversations SET agent_id = 2, status = 'closed', closed_at = now() - interval '1 hour'
 WHERE id = (SELECT conversation_id FROM calls WHERE call_id = 'c1');
CREATE TEMP TABLE r10 AS SELECT t_call('c10', '+15550000001', t_pick(1)) AS j;
CREATE TEMP TABLE r11 AS
SELECT cd_phone_event('{"call_id":"c11","event":"queued","queue":"support","from":"+15550000011"}',
                      t_pick(1, 2)) AS j;
SELECT r.j -> 'route' = cd_route_info((r.j ->> 'conversation')::bigint)
       AND (r.j -> 'route' ->> 'last_agent')::int = 2 AND r.j ? 'offer' FROM r10 r;
SELECT r.j -> 'route' = cd_route_info((r.j ->> 'conversation')::bigint)
       AND r.j -> 'route' -> 'sla' ->> 'first_response_due' IS NOT NULL AND r.j ? 'offer' FROM r11 r;
UPDATE conversations SET agent_id = NULL, status = 'offered', closed_at = NULL
 WHERE id = (SELECT conversation_id FROM calls WHERE call_id = 'c1');
SQL

check_eq "the offer is decided as any other (accept: assigned)" "assigned|1" <<'SQL'
CREATE TEMP TABLE d AS
SELECT o.conversation_id AS conv,
       cd_offer_decide(jsonb_build_object('offer', o.id, 'decision', 'accepted')) ->> 'status' AS st
  FROM offers o JOIN calls k ON k.conversation_id = o.conversation_id WHERE k.call_id = 'c1';
SELECT d.st, c.agent_id FROM d JOIN conversations c ON c.id = d.conv;
SQL

check_eq "a pick for another queue is ignored" "queued|null|0|call_queued,enqueued" <<'SQL'
WITH r AS (SELECT t_call('c2', '+15550000002', t_pick(1, 2)) AS j)
SELECT r.j ->> 'status', coalesce(r.j ->> 'offer', 'null'),
       (SELECT count(*) FROM offers o WHERE o.conversation_id = (r.j ->> 'conversation')::bigint),
       t_kinds((r.j ->> 'conversation')::bigint) FROM r;
SQL

check_eq "an expired pick is ignored" "queued|null" <<'SQL'
WITH r AS (SELECT t_call('c3', '+15550000003', t_pick(1, 1, -1)) AS j)
SELECT r.j ->> 'status', coalesce(r.j ->> 'offer', 'null') FROM r;
SQL

check_eq "a pick of a deleted agent is ignored" "queued|null" <<'SQL'
UPDATE agents SET deleted_at = now() WHERE login = 'bob';
WITH r AS (SELECT t_call('c4', '+15550000004', t_pick(2)) AS j)
SELECT r.j ->> 'status', coalesce(r.j ->> 'offer', 'null') FROM r;
UPDATE agents SET deleted_at = NULL WHERE login = 'bob';
SQL

check_eq "a caller served by another agent within sticky_s: ignored (the router prefers that one)" \
    "queued|null" <<'SQL'
WITH r AS (SELECT t_call('c5', '+15550000001', t_pick(2)) AS j)
SELECT r.j ->> 'status', coalesce(r.j ->> 'offer', 'null') FROM r;
SQL

check_eq "... a pick of that same agent stands" "offered|ann" <<'SQL'
CREATE TEMP TABLE r6 AS SELECT t_call('c6', '+15550000001', t_pick(1)) AS j;
SELECT r.j ->> 'status', a.login FROM r6 r JOIN offers o ON o.id = (r.j ->> 'offer')::bigint
  JOIN agents a ON a.id = o.agent_id;
SQL

check_eq "... and so does any pick once sticky_s has passed" "offered" <<'SQL'
WITH r AS (SELECT t_call('c7', '+15550000001', t_pick(2, 1, 60000, 0)) AS j)
SELECT r.j ->> 'status' FROM r;
SQL

check_eq "not the call's first event: the pick is ignored" "queued|null|0" <<'SQL'
CREATE TEMP TABLE e8 AS SELECT cd_phone_event('{"call_id":"c8","event":"offered","from":"+15550000008"}');
WITH r AS (SELECT t_call('c8', '+15550000008', t_pick(1)) AS j)
SELECT r.j ->> 'status', coalesce(r.j ->> 'offer', 'null'),
       (SELECT count(*) FROM offers o WHERE o.conversation_id = (r.j ->> 'conversation')::bigint) FROM r;
SQL

check_eq "a repeated queued (duplicate) records nothing and creates no offer" "true|0" <<'SQL'
WITH r AS (SELECT t_call('c2', '+15550000002', t_pick(1)) AS j)
SELECT r.j ->> 'duplicate',
       (SELECT count(*) FROM offers o WHERE o.conversation_id = (r.j ->> 'conversation')::bigint) FROM r;
SQL

check_eq "cd_phone_event(p) is cd_phone_event(p, NULL)" "queued|null" <<'SQL'
WITH r AS (SELECT cd_phone_event('{"call_id":"c9","event":"queued","queue":"sales"}') AS j)
SELECT r.j ->> 'status', coalesce(r.j ->> 'offer', 'null') FROM r;
SQL

echo "# $PASSES passed, $FAILS failed"
(( FAILS == 0 )) || { printf '# failed: %s\n' "${FAILED[@]}"; exit 1; }
