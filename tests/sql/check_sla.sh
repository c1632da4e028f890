#!/usr/bin/env bash
# check_sla.sh -- verifies the SLA timers of sql/0005_sla.sql (timers, pauses,
# firing, breach escalation, manual escalation, policy edits) against a
# throwaway PostgreSQL.
#
#   tests/sql/check_sla.sh [-v]
#
# 1. starts a cluster with scripts/pg-sandbox (or $PG_SANDBOX),
# 2. applies every migration the way the daemon does (BEGIN; the whole file as
#    one simple query; INSERT INTO schema_migrations; COMMIT),
# 3. drives conversations through the chat functions (0003 / 0006:
#    cd_chat_customer_messages, cd_agent_message, cd_offer_create / _decide,
#    cd_conversation_resolve / _transfer, cd_chat_customer_close) and checks
#    what the triggers of 0005 do to sla_timers / sla_pauses / conversations,
#    then cd_conversation_pending, cd_sla_upcoming, cd_sla_fire,
#    cd_conversation_escalate and policy edits (cd_admin_update).
# Most policies are 24x7 (hours null), so an expected instant is simply
# start + budget; one has business hours (Europe/Madrid) and is compared with
# cd_sla_due (0004) and with instants worked out by hand.
# A timer is made "due" by back-dating its start and rescheduling it:
#   UPDATE sla_timers SET started_at = started_at - N s ...; cd_sla_schedule(conv)
# (helper t_back).  Each statement of a check runs in its own transaction, so
# now() differs between statements: expectations that depend on now() are
# computed in the same statement as the call, or saved with it (CREATE TEMP
# TABLE r AS SELECT fn(...), now()).
# Prints PASS/FAIL per check; exits 1 when any check failed.  -v shows the
# output of failed checks in full.  The sandbox is stopped on exit.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SANDBOX=${PG_SANDBOX:-$ROOT/scripts/pg-sandbox}
[[ -x $SANDBOX ]] || { echo "pg-sandbox not found: $SANDBOX" >&2; exit 1; }
VERBOSE=0
for a in "$@"; do
    case $a in
        -v) VERBOSE=1;;
        *) echo "usage: $0 [-v]" >&2; exit 2;;
    esac
done

# shellcheck source=lib.sh
source "$ROOT/tests/sql/lib.sh"

SBDIR=$(mktemp -d /tmp/cd-check-sla.XXXXXX)
chmod 755 "$SBDIR"
BG_PIDS=()
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    local p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    "$SANDBOX" stop "$SBDIR" >/dev/null 2>&1 || rm -rf "$SBDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sandbox_start 128MB
# the functions must not depend on it; UTC makes failure output comparable
export PGTZ=UTC

echo "# PostgreSQL: $(q 'SHOW server_version')"

# ---------------------------------------------------------------------------
# Migrations, as src/store/migrate.c applies them
# ---------------------------------------------------------------------------
migrate_daemon_style 0005_sla.sql

# Test helpers:
#   t_set(k, id) / t(k)           named ids (as check_chat.sh)
#   t_tset(k, ts) / t_time(k)     named instants, kept across checks
#   h(text)                       hex SHA-256
#   t_is(got, want)               't' when equal (NULLs equal), else 'got X, want Y'
#   t_and(t_is(..), t_is(..), ..) 't' when all are 't', else the failures
#   t_open(queue)                 a new customer's first message in QUEUE -> the conversation id
#   t_say(conv [, body])          a customer message into CONV -> its item of the answer
#   t_reply(conv, agent [, internal])  cd_agent_message -> its answer
#   t_assign(conv, agent)         offer + accept -> the conversation's status
#   t_back(conv, secs [, timer])  back-date the running timers' start, then cd_sla_schedule
#   t_timer(conv, timer)          the sla_timers row
#   t_fire(conv, timer)           cd_sla_fire
#   t_nev(conv, kind)             number of timeline events of KIND
out=$(psqlc 2>&1 <<'SQL'
CREATE TABLE t_ids (k text PRIMARY KEY, v bigint);
CREATE FUNCTION t_set(p_k text, p_v bigint) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO t_ids VALUES (p_k, p_v) ON CONFLICT (k) DO UPDATE SET v = excluded.v RETURNING v $$;
CREATE FUNCTION t(p_k text) RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT v FROM t_ids WHERE k = p_k $$;
CREATE TABLE t_times (k text PRIMARY KEY, v timestamptz);
CREATE FUNCTION t_tset(p_k text, p_v timestamptz) RETURNS timestamptz LANGUAGE sql AS $$
    INSERT INTO t_times VALUES (p_k, p_v) ON CONFLICT (k) DO UPDATE SET v = excluded.v RETURNING v $$;
CREATE FUNCTION t_time(p_k text) RETURNS timestamptz LANGUAGE sql STABLE AS $$ SELECT v FROM t_times WHERE k = p_k $$;
CREATE FUNCTION h(p text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT encode(sha256(convert_to(p, 'UTF8')), 'hex') $$;
CREATE FUNCTION t_is(p_got anyelement, p_want anyelement) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_got IS NOT DISTINCT FROM p_want THEN 't'
                ELSE format('got %s, want %s', coalesce(p_got::text, 'NULL'), coalesce(p_want::text, 'NULL')) END $$;
CREATE FUNCTION t_and(VARIADIC p text[]) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(string_agg(x, '; '), 't') FROM unnest(p) x WHERE x IS DISTINCT FROM 't' $$;
CREATE FUNCTION t_open(p_queue text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_cust bigint;
BEGIN
    v_cust := (cd_chat_customer_hello(jsonb_build_object('new_resume_hash', h(gen_random_uuid()::text))) ->> 'customer')::bigint;
    RETURN (cd_chat_customer_messages(jsonb_build_array(jsonb_build_object(
                'customer', v_cust, 'body', 'hello', 'queue', p_queue))) -> 0 ->> 'conversation')::bigint;
END $$;
CREATE FUNCTION t_say(p_conv bigint, p_body text DEFAULT 'one more thing') RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN cd_chat_customer_messages(jsonb_build_array(jsonb_build_object(
               'customer', (SELECT customer_id FROM conversations WHERE id = p_conv), 'body', p_body))) -> 0;
END $$;
CREATE FUNCTION t_reply(p_conv bigint, p_agent bigint, p_internal boolean DEFAULT false) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN cd_agent_message(jsonb_build_object('agent', p_agent, 'conversation', p_conv,
                                               'body', 'an answer', 'internal', p_internal));
END $$;
CREATE FUNCTION t_assign(p_conv bigint, p_agent bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_offer bigint;
BEGIN
    v_offer := (cd_offer_create(jsonb_build_object('conversation', p_conv, 'agent', p_agent,
                                                   'expires_at', cd_ms(now()) + 60000)) ->> 'offer')::bigint;
    RETURN cd_offer_decide(jsonb_build_object('offer', v_offer, 'decision', 'accepted')) ->> 'status';
END $$;
CREATE FUNCTION t_back(p_conv bigint, p_secs double precision, p_timer text DEFAULT NULL) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sla_timers SET started_at = started_at - make_interval(secs => p_secs)
     WHERE conversation_id = p_conv AND stopped_at IS NULL AND (p_timer IS NULL OR timer = p_timer);
    PERFORM cd_sla_schedule(p_conv);
    RETURN true;
END $$;
CREATE FUNCTION t_timer(p_conv bigint, p_timer text) RETURNS sla_timers LANGUAGE sql STABLE AS $$
    SELECT * FROM sla_timers WHERE conversation_id = p_conv AND timer = p_timer $$;
CREATE FUNCTION t_fire(p_conv bigint, p_timer text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT cd_sla_fire(jsonb_build_object('conversation', p_conv, 'timer', p_timer)) $$;
CREATE FUNCTION t_nev(p_conv bigint, p_kind text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM conversation_events WHERE conversation_id = p_conv AND kind = p_kind $$;
SQL
)
[[ -z $out ]] || fail "test helpers" "$out"

# ---------------------------------------------------------------------------
# Fixtures: policies, queues, agents (tiers 1, 1, 3; a supervisor; a deleted
# tier-5 agent, which must not count as "a higher tier exists")
# ---------------------------------------------------------------------------
out=$(psqlc 2>&1 <<'SQL'
SELECT t_set('p24', (cd_admin_create('sla-policies', '{"name":"p24","first_response_s":600,"next_response_s":300,"resolution_s":3600}') ->> 'id')::bigint);
SELECT t_set('pfr', (cd_admin_create('sla-policies', '{"name":"pfr","first_response_s":1200,"warn_pct":50}') ->> 'id')::bigint);
SELECT t_set('pedit', (cd_admin_create('sla-policies', '{"name":"pedit","first_response_s":600,"next_response_s":300,"resolution_s":3600}') ->> 'id')::bigint);
SELECT t_set('pbiz', (cd_admin_create('sla-policies', '{"name":"pbiz","first_response_s":3600,"resolution_s":28800,"timezone":"Europe/Madrid","hours":{"mon":["09:00-17:00"],"tue":["09:00-17:00"],"wed":["09:00-17:00"],"thu":["09:00-17:00"],"fri":["09:00-17:00"]}}') ->> 'id')::bigint);
SELECT t_set('q24', (cd_admin_create('queues', '{"name":"q24","priority":5,"sla_policy":"p24"}') ->> 'id')::bigint);
SELECT t_set('qnone', (cd_admin_create('queues', '{"name":"qnone","priority":3}') ->> 'id')::bigint);
SELECT t_set('qfr', (cd_admin_create('queues', '{"name":"qfr","sla_policy":"pfr"}') ->> 'id')::bigint);
SELECT t_set('qedit', (cd_admin_create('queues', '{"name":"qedit","sla_policy":"pedit"}') ->> 'id')::bigint);
SELECT t_set('qbiz', (cd_admin_create('queues', '{"name":"qbiz","sla_policy":"pbiz"}') ->> 'id')::bigint);
SELECT t_set('alice', (cd_admin_create('agents', '{"login":"alice","password_hash":"$argon2id$a","tier":1}') ->> 'id')::bigint);
SELECT t_set('bob', (cd_admin_create('agents', '{"login":"bob","password_hash":"$argon2id$b","tier":1}') ->> 'id')::bigint);
SELECT t_set('carol', (cd_admin_create('agents', '{"login":"carol","password_hash":"$argon2id$c","tier":3}') ->> 'id')::bigint);
SELECT t_set('sue', (cd_admin_create('agents', '{"login":"sue","password_hash":"$argon2id$s","role":"supervisor"}') ->> 'id')::bigint);
SELECT t_set('gone', (cd_admin_create('agents', '{"login":"gone","password_hash":"$argon2id$g","tier":5}') ->> 'id')::bigint);
SELECT cd_admin_delete('agents', 'gone');
SQL
)
if [[ $out == *ERROR* ]]; then fail "fixtures" "$out"; echo "# cannot go on without fixtures"; exit 1; fi
pass "fixtures: policies (24x7, first-response only, business hours), queues, agents"

check "functions: cd_sla_upcoming is STABLE, the writers are VOLATILE" <<'SQL'
SELECT t_is(string_agg(proname || ':' || provolatile::text, ',' ORDER BY proname),
            'cd_conversation_escalate:v,cd_conversation_pending:v,cd_sla_fire:v,cd_sla_schedule:v,cd_sla_upcoming:s')
  FROM pg_proc WHERE proname IN ('cd_sla_upcoming', 'cd_sla_fire', 'cd_sla_schedule', 'cd_conversation_escalate',
                                 'cd_conversation_pending')
SQL

# ---------------------------------------------------------------------------
# 1. Timers of a new conversation
# ---------------------------------------------------------------------------
check "create: 24x7 policy -> first_response (600 s) and resolution (3600 s) timers of the policy" <<'SQL'
SELECT t_set('c1', t_open('q24')) IS NOT NULL;
SELECT t_is(string_agg(timer || ':' || budget_s || ':' || (policy_id = t('p24')), ',' ORDER BY timer),
            'first_response:600:true,resolution:3600:true')
  FROM sla_timers WHERE conversation_id = t('c1');
SELECT t_is(sla_policy_id, t('p24')) FROM conversations WHERE id = t('c1')
SQL
check "create: started_at = the conversation's created_at (= its first message's)" <<'SQL'
SELECT t_is(s.started_at, c.created_at) FROM sla_timers s JOIN conversations c ON c.id = s.conversation_id
 WHERE c.id = t('c1');
SELECT t_is(c.created_at, m.created_at) FROM conversations c JOIN messages m ON m.conversation_id = c.id
 WHERE c.id = t('c1')
SQL
check "create: due_at = started_at + budget, warn_at = started_at + budget * 80%, next_fire_at = warn_at" <<'SQL'
SELECT t_is(due_at, started_at + CASE timer WHEN 'first_response' THEN interval '600 s' ELSE interval '3600 s' END)
  FROM sla_timers WHERE conversation_id = t('c1');
SELECT t_is(warn_at, started_at + CASE timer WHEN 'first_response' THEN interval '480 s' ELSE interval '2880 s' END)
  FROM sla_timers WHERE conversation_id = t('c1');
SELECT t_is(next_fire_at, warn_at) FROM sla_timers WHERE conversation_id = t('c1');
SELECT t_is(num_nonnulls(warned_at, breached_at, stopped_at), 0) FROM sla_timers WHERE conversation_id = t('c1')
SQL
check "create: conversations.first_response_due / resolution_due = the timers' due_at, next_response_due null" <<'SQL'
SELECT t_is(c.first_response_due, (t_timer(c.id, 'first_response')).due_at) FROM conversations c WHERE c.id = t('c1');
SELECT t_is(c.resolution_due, (t_timer(c.id, 'resolution')).due_at) FROM conversations c WHERE c.id = t('c1');
SELECT next_response_due IS NULL FROM conversations WHERE id = t('c1')
SQL
check "create: a queue without a policy -> no timers, no due times (nor after a reply and a message)" <<'SQL'
SELECT t_set('cn', t_open('qnone')) IS NOT NULL;
SELECT NOT EXISTS (SELECT 1 FROM sla_timers WHERE conversation_id = t('cn'));
SELECT t_is(num_nonnulls(sla_policy_id, first_response_due, next_response_due, resolution_due), 0)
  FROM conversations WHERE id = t('cn');
SELECT t_assign(t('cn'), t('alice')) = 'assigned';
SELECT (t_reply(t('cn'), t('alice')) -> 'first_response')::boolean;
SELECT (t_say(t('cn')) -> 'ok')::boolean;
SELECT NOT EXISTS (SELECT 1 FROM sla_timers WHERE conversation_id = t('cn'))
SQL
check "create: a policy without resolution_s (nor next_response_s) -> only first_response (1200 s, warn 50%)" <<'SQL'
SELECT t_set('cfr', t_open('qfr')) IS NOT NULL;
SELECT t_is(string_agg(timer || ':' || budget_s, ','), 'first_response:1200') FROM sla_timers WHERE conversation_id = t('cfr');
SELECT t_is(due_at, started_at + interval '1200 s') FROM sla_timers WHERE conversation_id = t('cfr');
SELECT t_is(warn_at, started_at + interval '600 s') FROM sla_timers WHERE conversation_id = t('cfr');
SELECT t_is(next_fire_at, warn_at) FROM sla_timers WHERE conversation_id = t('cfr');
SELECT t_and(t_is(c.first_response_due, (t_timer(c.id, 'first_response')).due_at), t_is(c.resolution_due, NULL))
  FROM conversations c WHERE c.id = t('cfr')
SQL
check "create: several new conversations in one group commit each get their timers" <<'SQL'
SELECT t_set('g1', (t_open('qnone'))) IS NOT NULL;   -- a customer with a conversation elsewhere: not in the batch
CREATE TEMP TABLE cu AS SELECT (cd_chat_customer_hello(jsonb_build_object('new_resume_hash', h(gen_random_uuid()::text))) ->> 'customer')::bigint id
  FROM generate_series(1, 3);
CREATE TEMP TABLE r AS SELECT cd_chat_customer_messages((SELECT jsonb_agg(jsonb_build_object('customer', id, 'body', 'hi', 'queue', 'q24')) FROM cu)) j;
SELECT t_is(count(DISTINCT (e ->> 'conversation')), 3::bigint) FROM r, jsonb_array_elements(r.j) e;
SELECT t_is(count(*), 6::bigint) FROM sla_timers s JOIN r ON true
 WHERE s.conversation_id IN (SELECT (e ->> 'conversation')::bigint FROM jsonb_array_elements(r.j) e);
SELECT t_is(s.started_at, c.created_at) FROM r, jsonb_array_elements(r.j) e
  JOIN conversations c ON c.id = (e ->> 'conversation')::bigint JOIN sla_timers s ON s.conversation_id = c.id
SQL

# ---------------------------------------------------------------------------
# 2. The agent's messages
# ---------------------------------------------------------------------------
check "agent message: an internal note stops nothing" <<'SQL'
SELECT t_assign(t('c1'), t('alice')) = 'assigned';
SELECT (t_reply(t('c1'), t('alice'), true) -> 'internal')::boolean;
SELECT stopped_at IS NULL AND next_fire_at IS NOT NULL AND next_fire_at = warn_at FROM sla_timers WHERE conversation_id = t('c1');
SELECT first_response_due IS NOT NULL AND first_response_at IS NULL FROM conversations WHERE id = t('c1')
SQL
check "agent message: the first public reply stops first_response at the message's time; resolution runs on" <<'SQL'
CREATE TEMP TABLE r AS SELECT t_reply(t('c1'), t('alice')) j;
SELECT (j -> 'first_response')::boolean FROM r;
SELECT t_is(s.stopped_at, m.created_at) FROM r, messages m, sla_timers s
 WHERE m.id = (r.j ->> 'message')::bigint AND s.conversation_id = t('c1') AND s.timer = 'first_response';
SELECT next_fire_at IS NULL AND warned_at IS NULL AND breached_at IS NULL FROM sla_timers
 WHERE conversation_id = t('c1') AND timer = 'first_response';
SELECT stopped_at IS NULL AND next_fire_at = warn_at FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'resolution';
SELECT first_response_due IS NULL AND resolution_due = (t_timer(id, 'resolution')).due_at FROM conversations WHERE id = t('c1');
SELECT NOT EXISTS (SELECT 1 FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response')
SQL
check "agent message: a second public reply changes nothing (first_response keeps its stop time)" <<'SQL'
CREATE TEMP TABLE b AS SELECT * FROM sla_timers WHERE conversation_id = t('c1');
SELECT NOT (t_reply(t('c1'), t('alice')) -> 'first_response')::boolean;
SELECT NOT EXISTS ((SELECT * FROM sla_timers WHERE conversation_id = t('c1')) EXCEPT (SELECT * FROM b))
SQL

# ---------------------------------------------------------------------------
# 3. next_response
# ---------------------------------------------------------------------------
check "next_response: a customer message after the first response starts it at the message's created_at" <<'SQL'
CREATE TEMP TABLE r AS SELECT t_say(t('c1'), 'and another question') j;
SELECT t_is(s.started_at, m.created_at) FROM r, messages m, sla_timers s
 WHERE m.id = (r.j ->> 'message')::bigint AND s.conversation_id = t('c1') AND s.timer = 'next_response';
SELECT t_and(t_is(budget_s, 300), t_is(policy_id, t('p24'))) FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response';
SELECT t_is(due_at, started_at + interval '300 s') FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response';
SELECT t_is(warn_at, started_at + interval '240 s') FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response';
SELECT t_is(next_fire_at, warn_at) FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response';
SELECT t_is(next_response_due, (t_timer(id, 'next_response')).due_at) FROM conversations WHERE id = t('c1');
SELECT t_tset('c1_nr_start', started_at) IS NOT NULL FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response'
SQL
check "next_response: a second customer message does not restart it (oldest unanswered message)" <<'SQL'
CREATE TEMP TABLE b AS SELECT * FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response';
SELECT (t_say(t('c1'), 'hello?') -> 'ok')::boolean;
SELECT t_is(s.started_at, t_time('c1_nr_start')) FROM sla_timers s WHERE s.conversation_id = t('c1') AND s.timer = 'next_response';
SELECT NOT EXISTS ((SELECT * FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response') EXCEPT (SELECT * FROM b))
SQL
check "next_response: several customer messages in one INSERT (other channels) -> started at the oldest" <<'SQL'
SELECT t_set('m1', t_open('q24')) IS NOT NULL;
SELECT t_assign(t('m1'), t('alice')) = 'assigned';
SELECT (t_reply(t('m1'), t('alice')) -> 'first_response')::boolean;
CREATE TEMP TABLE r AS SELECT now() n;
INSERT INTO messages (conversation_id, channel, direction, author_kind, author_customer_id, body, created_at)
SELECT c.id, 'chat', 'in', 'customer', c.customer_id, x.body, x.at
  FROM conversations c, r,
       LATERAL (VALUES ('second', r.n - interval '2 s'), ('first', r.n - interval '5 s'), ('third', r.n - interval '1 s')) x(body, at)
 WHERE c.id = t('m1');
SELECT t_and(t_is(s.started_at, r.n - interval '5 s'), t_is(s.due_at, r.n + interval '295 s'))
  FROM sla_timers s, r WHERE s.conversation_id = t('m1') AND s.timer = 'next_response';
SELECT cd_conversation_resolve(jsonb_build_object('conversation', t('m1'))) ->> 'status' = 'resolved'
SQL
check "next_response: the agent's next public reply stops it at the reply's time" <<'SQL'
SELECT t_back(t('c1'), 301, 'next_response');                         -- overdue ...
SELECT t_fire(t('c1'), 'next_response') ->> 'state' = 'breached';    -- ... and breached
CREATE TEMP TABLE r AS SELECT t_reply(t('c1'), t('alice')) j;
SELECT t_is(s.stopped_at, m.created_at) FROM r, messages m, sla_timers s
 WHERE m.id = (r.j ->> 'message')::bigint AND s.conversation_id = t('c1') AND s.timer = 'next_response';
SELECT next_fire_at IS NULL AND breached_at IS NOT NULL FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response';
SELECT next_response_due IS NULL FROM conversations WHERE id = t('c1')
SQL
check "next_response: the next customer message re-arms it from that message (warned_at / breached_at cleared)" <<'SQL'
CREATE TEMP TABLE r AS SELECT t_say(t('c1'), 'one more') j;
SELECT t_is(s.started_at, m.created_at) FROM r, messages m, sla_timers s
 WHERE m.id = (r.j ->> 'message')::bigint AND s.conversation_id = t('c1') AND s.timer = 'next_response';
SELECT t_is(num_nonnulls(warned_at, breached_at, stopped_at), 0) FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response';
SELECT t_is(due_at, started_at + interval '300 s') FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response';
SELECT t_is(next_fire_at, started_at + interval '240 s') FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response';
SELECT t_is(next_response_due, (t_timer(id, 'next_response')).due_at) FROM conversations WHERE id = t('c1');
SELECT t_is(count(*), 1::bigint) FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'next_response'
SQL
check "next_response: customer messages before the first response start nothing" <<'SQL'
SELECT (t_say(t('cfr'), 'still there?') -> 'ok')::boolean;
SELECT t_is(string_agg(timer, ','), 'first_response') FROM sla_timers WHERE conversation_id = t('cfr')
SQL
check "next_response: a policy without next_response_s -> no timer after the first response" <<'SQL'
SELECT t_assign(t('cfr'), t('bob')) = 'assigned';
SELECT (t_reply(t('cfr'), t('bob')) -> 'first_response')::boolean;
SELECT (t_say(t('cfr'), 'thanks, but') -> 'ok')::boolean;
SELECT t_is(string_agg(timer || ':' || (stopped_at IS NOT NULL), ','), 'first_response:true') FROM sla_timers WHERE conversation_id = t('cfr');
SELECT t_is(num_nonnulls(first_response_due, next_response_due, resolution_due), 0) FROM conversations WHERE id = t('cfr')
SQL

# ---------------------------------------------------------------------------
# 4. Pending: pause and resume
# ---------------------------------------------------------------------------
check_err "pending: a queued conversation -> 55000" 55000 - 'conversation * is queued, not assigned' <<'SQL'
SELECT t_set('c4q', t_open('q24')) IS NOT NULL;
SELECT cd_conversation_pending(jsonb_build_object('conversation', t('c4q'), 'by_agent', t('sue')))
SQL
check_err "pending: by an agent who does not hold it -> 42501" 42501 - 'agent * is not assigned to conversation *' <<'SQL'
SELECT t_set('c4', t_open('q24')) IS NOT NULL;
SELECT t_assign(t('c4'), t('alice')) = 'assigned';
SELECT cd_conversation_pending(jsonb_build_object('conversation', t('c4'), 'by_agent', t('bob')))
SQL
check "pending: nothing was paused by the refused calls" <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM sla_pauses WHERE conversation_id IN (t('c4'), t('c4q')));
SELECT bool_and(due_at IS NOT NULL AND next_fire_at IS NOT NULL) FROM sla_timers WHERE conversation_id IN (t('c4'), t('c4q'))
SQL
check "pending: by the assigned agent -> status pending, an open pause from sla_paused_at" <<'SQL'
SELECT t_back(t('c4'), 200);             -- the timers started 200 s ago: a pause 100 s back still lies inside them
SELECT t_tset('c4_' || timer, due_at) IS NOT NULL AND t_tset('c4w_' || timer, warn_at) IS NOT NULL
  FROM sla_timers WHERE conversation_id = t('c4');
CREATE TEMP TABLE r AS SELECT cd_conversation_pending(jsonb_build_object('conversation', t('c4'), 'by_agent', t('alice'))) j, now() n;
SELECT t_is(j, jsonb_build_object('conversation', t('c4'), 'status', 'pending', 'previous', 'assigned', 'duplicate', false)) FROM r;
SELECT t_is(count(*), 1::bigint) FROM sla_pauses WHERE conversation_id = t('c4');
SELECT t_and(t_is(p.started_at, r.n), t_is(p.ended_at, NULL)) FROM sla_pauses p, r WHERE p.conversation_id = t('c4');
SELECT t_is(c.sla_paused_at, r.n) FROM conversations c, r WHERE c.id = t('c4') AND c.status = 'pending'
SQL
check "pending: running timers due after the pause start -> due_at / warn_at / next_fire_at NULL (24x7)" <<'SQL'
SELECT t_is(count(*), 2::bigint) FROM sla_timers WHERE conversation_id = t('c4');
SELECT t_is(num_nonnulls(due_at, warn_at, next_fire_at, stopped_at), 0) FROM sla_timers WHERE conversation_id = t('c4');
SELECT t_is(num_nonnulls(first_response_due, next_response_due, resolution_due), 0) FROM conversations WHERE id = t('c4')
SQL
check "pending: again -> stays pending, still one open pause" <<'SQL'
SELECT cd_conversation_pending(jsonb_build_object('conversation', t('c4'), 'by_agent', t('alice')))
       = jsonb_build_object('conversation', t('c4'), 'status', 'pending', 'previous', 'pending', 'duplicate', false);
SELECT t_is(count(*), 1::bigint) FROM sla_pauses WHERE conversation_id = t('c4') AND ended_at IS NULL
SQL
check "pending: fire on a paused timer -> fired:false, in_ms null" <<'SQL'
SELECT t_is(t_fire(t('c4'), 'first_response'), '{"fired":false,"in_ms":null}'::jsonb)
SQL
check "pending: a customer message ends the pause; due / warn move later by exactly the pause length" <<'SQL'
UPDATE sla_pauses SET started_at = started_at - interval '100 seconds' WHERE conversation_id = t('c4');
CREATE TEMP TABLE r AS SELECT t_say(t('c4'), 'I am back') j;
SELECT t_is(j ->> 'status', 'assigned') FROM r;
SELECT t_is(p.ended_at, m.created_at) FROM r, messages m, sla_pauses p
 WHERE m.id = (r.j ->> 'message')::bigint AND p.conversation_id = t('c4');
SELECT ended_at - started_at >= interval '100 s' FROM sla_pauses WHERE conversation_id = t('c4');
SELECT t_is(s.due_at, t_time('c4_' || s.timer) + (p.ended_at - p.started_at))
  FROM sla_timers s JOIN sla_pauses p ON p.conversation_id = s.conversation_id WHERE s.conversation_id = t('c4');
SELECT t_is(s.warn_at, t_time('c4w_' || s.timer) + (p.ended_at - p.started_at))
  FROM sla_timers s JOIN sla_pauses p ON p.conversation_id = s.conversation_id WHERE s.conversation_id = t('c4');
SELECT t_is(next_fire_at, warn_at) FROM sla_timers WHERE conversation_id = t('c4');
SELECT t_and(t_is(c.first_response_due, (t_timer(c.id, 'first_response')).due_at)
       , t_is(c.resolution_due, (t_timer(c.id, 'resolution')).due_at)) FROM conversations c WHERE c.id = t('c4');
SELECT t_and(t_is(c.status, 'assigned'), t_is(c.sla_paused_at, NULL)) FROM conversations c WHERE c.id = t('c4')
SQL
check "pending: a timer already due before the pause starts keeps its due time; later ones are NULL" <<'SQL'
SELECT t_set('p2', t_open('q24')) IS NOT NULL;
SELECT t_assign(t('p2'), t('alice')) = 'assigned';
SELECT t_back(t('p2'), 700);                  -- first_response due 100 s ago, resolution in 2900 s
SELECT t_tset('p2_fr', due_at) IS NOT NULL FROM sla_timers WHERE conversation_id = t('p2') AND timer = 'first_response';
SELECT cd_conversation_pending(jsonb_build_object('conversation', t('p2'), 'by_agent', t('alice'))) ->> 'status' = 'pending';
SELECT t_and(t_is(due_at, t_time('p2_fr')), t_is(next_fire_at, warn_at)) FROM sla_timers WHERE conversation_id = t('p2') AND timer = 'first_response';
SELECT t_is(num_nonnulls(due_at, warn_at, next_fire_at), 0) FROM sla_timers WHERE conversation_id = t('p2') AND timer = 'resolution';
SELECT t_and(t_is(first_response_due, t_time('p2_fr')), t_is(resolution_due, NULL)) FROM conversations WHERE id = t('p2')
SQL

# ---------------------------------------------------------------------------
# 5. The end stops every timer
# ---------------------------------------------------------------------------
check "resolve: every running timer stops at resolved_at; a stopped one keeps its stop time; no due left" <<'SQL'
CREATE TEMP TABLE b AS SELECT timer, stopped_at FROM sla_timers WHERE conversation_id = t('c1') AND timer = 'first_response';
SELECT cd_conversation_resolve(jsonb_build_object('conversation', t('c1'), 'agent', t('alice'))) ->> 'status' = 'resolved';
SELECT t_is(string_agg(timer, ',' ORDER BY timer), 'first_response,next_response,resolution') FROM sla_timers WHERE conversation_id = t('c1');
SELECT t_is(s.stopped_at, c.resolved_at) FROM sla_timers s JOIN conversations c ON c.id = s.conversation_id
 WHERE c.id = t('c1') AND s.timer <> 'first_response';
SELECT t_is(s.stopped_at, b.stopped_at) FROM sla_timers s JOIN b USING (timer) WHERE s.conversation_id = t('c1');
SELECT t_is(count(*), 0::bigint) FROM sla_timers WHERE conversation_id = t('c1') AND next_fire_at IS NOT NULL;
SELECT t_is(num_nonnulls(first_response_due, next_response_due, resolution_due), 0) FROM conversations WHERE id = t('c1')
SQL
check "resolve: a pending conversation -> its pause ends at resolved_at, timers stop" <<'SQL'
SELECT cd_conversation_resolve(jsonb_build_object('conversation', t('p2'), 'agent', t('alice'))) ->> 'status' = 'resolved';
SELECT t_is(p.ended_at, c.resolved_at) FROM sla_pauses p JOIN conversations c ON c.id = p.conversation_id WHERE c.id = t('p2');
SELECT t_and(t_is(s.stopped_at, c.resolved_at), t_is(s.next_fire_at, NULL)) FROM sla_timers s JOIN conversations c ON c.id = s.conversation_id
 WHERE c.id = t('p2')
SQL
check "close: a pending conversation closed by the customer -> pause ends, every timer stops at closed_at" <<'SQL'
SELECT cd_conversation_pending(jsonb_build_object('conversation', t('c4'), 'by_agent', t('alice'))) ->> 'status' = 'pending';
SELECT t_is(count(*), 1::bigint) FROM sla_pauses WHERE conversation_id = t('c4') AND ended_at IS NULL;
SELECT cd_chat_customer_close(jsonb_build_object('customer', (SELECT customer_id FROM conversations WHERE id = t('c4')),
                                                 'conversation', t('c4'))) ->> 'status' = 'closed';
SELECT t_is(count(*), 0::bigint) FROM sla_pauses WHERE conversation_id = t('c4') AND ended_at IS NULL;
SELECT t_is(p.ended_at, c.closed_at) FROM sla_pauses p JOIN conversations c ON c.id = p.conversation_id
 WHERE c.id = t('c4') AND p.started_at = (SELECT max(started_at) FROM sla_pauses WHERE conversation_id = t('c4'));
SELECT t_and(t_is(s.stopped_at, c.closed_at), t_is(s.next_fire_at, NULL)) FROM sla_timers s JOIN conversations c ON c.id = s.conversation_id
 WHERE c.id = t('c4');
SELECT t_is(num_nonnulls(first_response_due, next_response_due, resolution_due), 0) FROM conversations WHERE id = t('c4')
SQL
check "close: a resolved conversation closed later changes no timer" <<'SQL'
CREATE TEMP TABLE b AS SELECT * FROM sla_timers WHERE conversation_id = t('c1');
SELECT cd_chat_customer_close(jsonb_build_object('customer', (SELECT customer_id FROM conversations WHERE id = t('c1')),
                                                 'conversation', t('c1'))) ->> 'previous' = 'resolved';
SELECT NOT EXISTS ((SELECT * FROM sla_timers WHERE conversation_id = t('c1')) EXCEPT (SELECT * FROM b))
SQL

# ---------------------------------------------------------------------------
# 6. cd_sla_upcoming
# ---------------------------------------------------------------------------
out=$(psqlc 2>&1 <<'SQL'
SELECT t_set('u1', t_open('q24'));
SELECT t_set('u2', t_open('q24'));
SELECT t_set('u3', t_open('q24'));
SELECT t_back(t('u1'), 500, 'first_response');     -- warn_at 20 s ago
SELECT t_back(t('u2'), 490, 'first_response');     -- warn_at 10 s ago
SELECT t_back(t('u3'), 477, 'first_response');     -- warn_at in ~3 s
SQL
)
[[ $out == *ERROR* ]] && fail "upcoming: fixtures" "$out"
check "upcoming: horizon 5000 ms -> the two overdue and the one due in ~3 s, soonest first" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_sla_upcoming('{"horizon_ms":5000}') j, now() n;
SELECT t_is(jsonb_path_query_array(j, '$.timers[*][0 to 1]'),
            jsonb_build_array(t('u1'), 'first_response', t('u2'), 'first_response', t('u3'), 'first_response')) FROM r;
SELECT t_is((j ->> 'now')::bigint, cd_ms(n)) FROM r
SQL
check "upcoming: in_ms = next_fire_at - now (ceil, ms): <= 0 when overdue, > 0 when ahead" <<'SQL'
CREATE TEMP TABLE r AS SELECT e, now() n FROM jsonb_array_elements(cd_sla_upcoming('{"horizon_ms":5000}') -> 'timers') e;
SELECT t_is((e ->> 2)::bigint, ceil(extract(epoch FROM s.next_fire_at - r.n) * 1000)::bigint)
  FROM r JOIN sla_timers s ON s.conversation_id = (e ->> 0)::bigint AND s.timer = e ->> 1;
SELECT t_is(string_agg(CASE WHEN (e ->> 2)::bigint <= 0 THEN 'due' WHEN (e ->> 2)::bigint <= 3000 THEN 'soon' ELSE 'late' END, ','),
            'due,due,soon') FROM r;
SELECT (e ->> 2)::bigint <= -19000 FROM r WHERE (e ->> 0)::bigint = t('u1')
SQL
check "upcoming: default horizon (1500 ms) -> only the overdue ones" <<'SQL'
SELECT t_is(jsonb_path_query_array(cd_sla_upcoming('{}'), '$.timers[*][0]'), jsonb_build_array(t('u1'), t('u2')))
SQL
check "upcoming: limit -> the soonest only" <<'SQL'
SELECT t_is(jsonb_path_query_array(cd_sla_upcoming('{"horizon_ms":5000,"limit":1}'), '$.timers[*][0 to 1]'),
            jsonb_build_array(t('u1'), 'first_response'));
SELECT t_is(jsonb_path_query_array(cd_sla_upcoming('{"horizon_ms":5000,"limit":2}'), '$.timers[*][0]'),
            jsonb_build_array(t('u1'), t('u2')))
SQL
check "upcoming: a large horizon lists every running timer with a next firing, stopped / paused ones never" <<'SQL'
SELECT t_is(jsonb_array_length(cd_sla_upcoming('{"horizon_ms":2000000000}') -> 'timers')::bigint,
            (SELECT count(*) FROM sla_timers WHERE next_fire_at IS NOT NULL));
SELECT NOT EXISTS (SELECT 1 FROM jsonb_array_elements(cd_sla_upcoming('{"horizon_ms":2000000000}') -> 'timers') e
                    JOIN sla_timers s ON s.conversation_id = (e ->> 0)::bigint AND s.timer = e ->> 1
                   WHERE s.stopped_at IS NOT NULL OR s.breached_at IS NOT NULL)
SQL

# ---------------------------------------------------------------------------
# 7. cd_sla_fire
# ---------------------------------------------------------------------------
check "fire: not due yet -> fired:false, in_ms until next_fire_at, nothing recorded" <<'SQL'
SELECT t_set('f1', t_open('q24')) IS NOT NULL;
CREATE TEMP TABLE r AS SELECT t_fire(t('f1'), 'first_response') j, now() n;
SELECT t_is(j, jsonb_build_object('fired', false, 'in_ms', ceil(extract(epoch FROM s.next_fire_at - r.n) * 1000)::bigint))
  FROM r, sla_timers s WHERE s.conversation_id = t('f1') AND s.timer = 'first_response';
SELECT (j ->> 'in_ms')::bigint BETWEEN 470000 AND 480000 FROM r;
SELECT t_is(num_nonnulls(warned_at, breached_at), 0) FROM sla_timers WHERE conversation_id = t('f1');
SELECT t_is(count(*), 0::bigint) FROM conversation_events WHERE conversation_id = t('f1') AND kind LIKE 'sla%'
SQL
check "fire: unknown conversation / unknown timer / stopped timer -> fired:false, in_ms null" <<'SQL'
SELECT t_is(t_fire(999999999, 'first_response'), '{"fired":false,"in_ms":null}'::jsonb);
SELECT t_is(t_fire(t('f1'), 'next_response'), '{"fired":false,"in_ms":null}'::jsonb);
SELECT t_is(t_fire(t('c1'), 'resolution'), '{"fired":false,"in_ms":null}'::jsonb)
SQL
check "fire: a due warning -> fired:true, state warning, due, in_ms to the breach; next_fire_at = due_at" <<'SQL'
CREATE TEMP TABLE r AS SELECT t_fire(t('u2'), 'first_response') j, now() n;
SELECT t_is(r.j - 'due' - 'in_ms', jsonb_build_object('fired', true, 'conversation', t('u2'), 'timer', 'first_response',
           'state', 'warning', 'status', 'queued', 'agent', NULL, 'queue', t('q24'), 'customer', c.customer_id,
           'offer_agent', NULL, 'tier', 1, 'priority', 5, 'escalated', NULL))
  FROM r, conversations c WHERE c.id = t('u2');
SELECT t_and(t_is(r.j ->> 'due', cd_ts(s.due_at)), t_is((r.j ->> 'in_ms')::bigint, ceil(extract(epoch FROM s.due_at - r.n) * 1000)::bigint))
  FROM r, sla_timers s WHERE s.conversation_id = t('u2') AND s.timer = 'first_response';
SELECT (j ->> 'in_ms')::bigint BETWEEN 90000 AND 110000 FROM r;     -- due 110 s after u2 was opened
SELECT t_and(t_is(s.warned_at, r.n), t_is(s.next_fire_at, s.due_at), t_is(s.breached_at, NULL), t_is(s.stopped_at, NULL))
  FROM r, sla_timers s WHERE s.conversation_id = t('u2') AND s.timer = 'first_response';
SELECT t_and(t_is(tier, 1), t_is(priority, 5)) FROM conversations WHERE id = t('u2')
SQL
check "fire: the warning is in the timeline once: sla_warning {timer, due}" <<'SQL'
SELECT t_is(t_nev(t('u2'), 'sla_warning'), 1::bigint);
SELECT t_is(e.data, jsonb_build_object('timer', 'first_response', 'due', cd_ts(s.due_at)))
  FROM conversation_events e, sla_timers s
 WHERE e.conversation_id = t('u2') AND e.kind = 'sla_warning' AND s.conversation_id = t('u2') AND s.timer = 'first_response';
SELECT t_is(t_nev(t('u2'), 'escalated'), 0::bigint)
SQL
check "fire: called again at once -> fired:false (in_ms > 0), no second warning" <<'SQL'
CREATE TEMP TABLE r AS SELECT t_fire(t('u2'), 'first_response') j;
SELECT NOT (j -> 'fired')::boolean AND (j ->> 'in_ms')::bigint > 0 FROM r;
SELECT t_is(t_nev(t('u2'), 'sla_warning'), 1::bigint)
SQL
check "fire: offer_agent names the agent of a pending offer" <<'SQL'
SELECT cd_offer_create(jsonb_build_object('conversation', t('u1'), 'agent', t('bob'), 'expires_at', cd_ms(now()) + 60000)) IS NOT NULL;
CREATE TEMP TABLE r AS SELECT t_fire(t('u1'), 'first_response') j;
SELECT t_and(t_is(j ->> 'state', 'warning'), t_is(j ->> 'status', 'offered'), t_is((j ->> 'offer_agent')::bigint, t('bob'))) FROM r
SQL
check "fire: a due breach -> state breached, tier 1 -> 2 (a tier-3 agent exists), priority + 1, escalated" <<'SQL'
SELECT t_back(t('u2'), 200, 'first_response');         -- due 90 s ago
CREATE TEMP TABLE r AS SELECT t_fire(t('u2'), 'first_response') j, now() n;
SELECT t_is(r.j - 'due', jsonb_build_object('fired', true, 'conversation', t('u2'), 'timer', 'first_response',
           'state', 'breached', 'status', 'queued', 'agent', NULL, 'queue', t('q24'), 'customer', c.customer_id,
           'offer_agent', NULL, 'tier', 2, 'priority', 6, 'in_ms', NULL,
           'escalated', jsonb_build_object('tier', 2, 'previous_tier', 1, 'priority', 6,
                                           'reason', 'sla_breach:first_response', 'by', NULL)))
  FROM r, conversations c WHERE c.id = t('u2');
SELECT t_is(r.j ->> 'due', cd_ts(s.due_at)) FROM r, sla_timers s WHERE s.conversation_id = t('u2') AND s.timer = 'first_response';
SELECT t_and(t_is(s.breached_at, r.n), t_is(s.next_fire_at, NULL), t_is(s.stopped_at, NULL))
  FROM r, sla_timers s WHERE s.conversation_id = t('u2') AND s.timer = 'first_response';
SELECT t_and(t_is(tier, 2), t_is(priority, 6)) FROM conversations WHERE id = t('u2')
SQL
check "fire: the breach is in the timeline: sla_breach {timer, due}, then escalated {tier, previous_tier, priority, reason, by}" <<'SQL'
SELECT t_and(t_is(t_nev(t('u2'), 'sla_breach'), 1::bigint), t_is(t_nev(t('u2'), 'escalated'), 1::bigint));
SELECT t_is(e.data, jsonb_build_object('timer', 'first_response', 'due', cd_ts(s.due_at)))
  FROM conversation_events e, sla_timers s
 WHERE e.conversation_id = t('u2') AND e.kind = 'sla_breach' AND s.conversation_id = t('u2') AND s.timer = 'first_response';
SELECT t_is(data, '{"tier":2,"previous_tier":1,"priority":6,"reason":"sla_breach:first_response","by":null}'::jsonb)
  FROM conversation_events WHERE conversation_id = t('u2') AND kind = 'escalated';
SELECT (SELECT id FROM conversation_events WHERE conversation_id = t('u2') AND kind = 'sla_breach')
     < (SELECT id FROM conversation_events WHERE conversation_id = t('u2') AND kind = 'escalated')
SQL
check "fire: the breach again -> fired:false, in_ms null; exactly once (no second breach, no second escalation)" <<'SQL'
SELECT t_is(t_fire(t('u2'), 'first_response'), '{"fired":false,"in_ms":null}'::jsonb);
SELECT t_and(t_is(t_nev(t('u2'), 'sla_breach'), 1::bigint), t_is(t_nev(t('u2'), 'escalated'), 1::bigint));
SELECT t_and(t_is(tier, 2), t_is(priority, 6)) FROM conversations WHERE id = t('u2')
SQL
check "fire: a warning whose due has passed too is skipped: breached at once, no sla_warning; tier 2 -> 3" <<'SQL'
SELECT t_back(t('u2'), 4000, 'resolution');            -- warn and due both passed, nothing fired yet
SELECT next_fire_at = warn_at AND warned_at IS NULL FROM sla_timers WHERE conversation_id = t('u2') AND timer = 'resolution';
CREATE TEMP TABLE r AS SELECT t_fire(t('u2'), 'resolution') j;
SELECT t_and(t_is(j ->> 'state', 'breached'), t_is((j ->> 'tier')::int, 3), t_is((j ->> 'priority')::int, 7)
       , t_is(j -> 'escalated', '{"tier":3,"previous_tier":2,"priority":7,"reason":"sla_breach:resolution","by":null}'::jsonb))
  FROM r;
SELECT t_is(count(*), 0::bigint) FROM conversation_events
 WHERE conversation_id = t('u2') AND kind = 'sla_warning' AND data ->> 'timer' = 'resolution';
SELECT t_is(count(*), 1::bigint) FROM conversation_events
 WHERE conversation_id = t('u2') AND kind = 'sla_breach' AND data ->> 'timer' = 'resolution';
SELECT breached_at IS NOT NULL AND warned_at IS NOT NULL AND next_fire_at IS NULL FROM sla_timers
 WHERE conversation_id = t('u2') AND timer = 'resolution';
SELECT t_is(t_fire(t('u2'), 'resolution'), '{"fired":false,"in_ms":null}'::jsonb)
SQL
check "fire: another breach at tier 3 -> tier stays 3 (highest live agent; a deleted tier-5 one does not count), priority + 1" <<'SQL'
SELECT (t_reply(t('u2'), t('sue')) -> 'first_response')::boolean;   -- a supervisor answers the waiting conversation
SELECT (t_say(t('u2'), 'and?') -> 'ok')::boolean;                    -- starts next_response
SELECT t_back(t('u2'), 400, 'next_response');
CREATE TEMP TABLE r AS SELECT t_fire(t('u2'), 'next_response') j;
SELECT t_and(t_is(j ->> 'state', 'breached'), t_is((j ->> 'tier')::int, 3), t_is((j ->> 'priority')::int, 8)
       , t_is(j -> 'escalated', '{"tier":3,"previous_tier":3,"priority":8,"reason":"sla_breach:next_response","by":null}'::jsonb))
  FROM r;
SELECT t_and(t_is(tier, 3), t_is(priority, 8)) FROM conversations WHERE id = t('u2');
SELECT t_is(t_nev(t('u2'), 'escalated'), 3::bigint)
SQL
check "fire: a breach of an assigned conversation leaves it with its agent" <<'SQL'
SELECT t_set('f2', t_open('q24')) IS NOT NULL;
SELECT t_assign(t('f2'), t('alice')) = 'assigned';
SELECT t_back(t('f2'), 601, 'first_response');
CREATE TEMP TABLE r AS SELECT t_fire(t('f2'), 'first_response') j;
SELECT t_and(t_is(j ->> 'state', 'breached'), t_is(j ->> 'status', 'assigned'), t_is((j ->> 'agent')::bigint, t('alice'))
       , t_is((j ->> 'tier')::int, 2)) FROM r;
SELECT t_and(t_is(status, 'assigned'), t_is(agent_id, t('alice'))) FROM conversations WHERE id = t('f2')
SQL

# concurrency: a second call while the first one's transaction is still open
# waits for the conversation's row lock, then finds nothing to do
out=$(q "SELECT t_back(t('f1'), 490, 'first_response')")
[[ $out == t ]] || fail "fire: concurrency fixture" "$out"
( psqlc -c "BEGIN" -c "SELECT t_fire(t('f1'), 'first_response')" -c "SELECT pg_sleep(1.5) AS held_by_check_sla" -c "COMMIT" \
      >/dev/null 2>&1 ) &
BG_PIDS+=($!)
for _ in $(seq 100); do   # until the first call has fired and holds the lock
    [[ $(q "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%held_by_check_sla%'
                             AND pid <> pg_backend_pid())") == t ]] && break
    sleep 0.1
done
check "fire: two calls racing -> the second waits, then fired:false; one warning in the timeline" <<'SQL'
CREATE TEMP TABLE r AS SELECT t_fire(t('f1'), 'first_response') j;
SELECT NOT (j -> 'fired')::boolean AND (j ->> 'in_ms')::bigint > 0 FROM r;
SELECT t_is(t_nev(t('f1'), 'sla_warning'), 1::bigint);
SELECT warned_at IS NOT NULL AND next_fire_at = due_at FROM sla_timers WHERE conversation_id = t('f1') AND timer = 'first_response'
SQL
wait

# ---------------------------------------------------------------------------
# 8. Policy edits
# ---------------------------------------------------------------------------
out=$(psqlc 2>&1 <<'SQL'
SELECT t_set('e1', t_open('qedit'));
SELECT t_set('e2', t_open('qedit'));
SELECT t_assign(t('e2'), t('alice'));
SELECT t_reply(t('e2'), t('alice'));     -- stops e2's first_response
SELECT t_say(t('e2'));                   -- starts e2's next_response
SQL
)
[[ $out == *ERROR* ]] && fail "policy edit: fixtures" "$out"
check "policy edit: first_response_s 600 -> 900 recomputes running timers (due, warn, next_fire, conversation)" <<'SQL'
SELECT t_tset('e1_res', due_at) IS NOT NULL FROM sla_timers WHERE conversation_id = t('e1') AND timer = 'resolution';
SELECT (cd_admin_update('sla-policies', 'pedit', '{"first_response_s":900}') ->> 'first_response_s')::int = 900;
SELECT t_and(t_is(budget_s, 900), t_is(due_at, started_at + interval '900 s'), t_is(warn_at, started_at + interval '720 s')
       , t_is(next_fire_at, warn_at))
  FROM sla_timers WHERE conversation_id = t('e1') AND timer = 'first_response';
SELECT t_is(first_response_due, (t_timer(id, 'first_response')).due_at) FROM conversations WHERE id = t('e1');
SELECT t_and(t_is(due_at, t_time('e1_res')), t_is(budget_s, 3600)) FROM sla_timers WHERE conversation_id = t('e1') AND timer = 'resolution'
SQL
check "policy edit: a stopped timer keeps its budget and due time" <<'SQL'
SELECT t_and(t_is(budget_s, 600), t_is(due_at, started_at + interval '600 s'), t_is(next_fire_at, NULL))
  FROM sla_timers WHERE conversation_id = t('e2') AND timer = 'first_response' AND stopped_at IS NOT NULL
SQL
check "policy edit: next_response_s and warn_pct apply to the running next_response" <<'SQL'
SELECT (cd_admin_update('sla-policies', 'pedit', '{"next_response_s":120,"warn_pct":50}') ->> 'warn_pct')::int = 50;
SELECT t_and(t_is(budget_s, 120), t_is(due_at, started_at + interval '120 s'), t_is(warn_at, started_at + interval '60 s')
       , t_is(next_fire_at, warn_at))
  FROM sla_timers WHERE conversation_id = t('e2') AND timer = 'next_response';
SELECT t_is(next_response_due, (t_timer(id, 'next_response')).due_at) FROM conversations WHERE id = t('e2');
SELECT t_is(warn_at, started_at + interval '450 s') FROM sla_timers WHERE conversation_id = t('e1') AND timer = 'first_response'
SQL
check "policy edit: resolution_s null stops the resolution timers; the others run on" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_admin_update('sla-policies', 'pedit', '{"resolution_s":null}') j, now() n;
SELECT j -> 'resolution_s' = 'null'::jsonb FROM r;
SELECT t_and(t_is(s.stopped_at, r.n), t_is(s.next_fire_at, NULL)) FROM sla_timers s, r
 WHERE s.conversation_id IN (t('e1'), t('e2')) AND s.timer = 'resolution';
SELECT t_is(resolution_due, NULL) FROM conversations WHERE id IN (t('e1'), t('e2'));
SELECT stopped_at IS NULL AND next_fire_at IS NOT NULL FROM sla_timers WHERE conversation_id = t('e1') AND timer = 'first_response';
SELECT t_is(first_response_due, (t_timer(id, 'first_response')).due_at) FROM conversations WHERE id = t('e1')
SQL
check "policy edit: the new budgets also apply to timers started later" <<'SQL'
SELECT t_set('e3', t_open('qedit')) IS NOT NULL;
SELECT t_is(string_agg(timer || ':' || budget_s, ','), 'first_response:900') FROM sla_timers WHERE conversation_id = t('e3')
SQL

# ---------------------------------------------------------------------------
# 9. cd_conversation_escalate
# ---------------------------------------------------------------------------
out=$(psqlc 2>&1 <<'SQL'
SELECT t_set('x1', t_open('q24'));
SELECT t_assign(t('x1'), t('alice'));
SELECT t_set('x2', t_open('q24'));
SELECT t_assign(t('x2'), t('carol'));
SQL
)
[[ $out == *ERROR* ]] && fail "escalate: fixtures" "$out"
check_err "escalate: reason required" 22023 reason 'reason: *required*' <<'SQL'
SELECT cd_conversation_escalate(jsonb_build_object('conversation', t('x1'), 'by_agent', t('alice')))
SQL
check_err "escalate: a blank reason counts as none" 22023 reason 'reason: *required*' <<'SQL'
SELECT cd_conversation_escalate(jsonb_build_object('conversation', t('x1'), 'by_agent', t('alice'), 'reason', '  '))
SQL
check_err "escalate: by another agent -> 42501" 42501 - 'agent * is not assigned to conversation *' <<'SQL'
SELECT cd_conversation_escalate(jsonb_build_object('conversation', t('x1'), 'by_agent', t('bob'), 'reason', 'mine now'))
SQL
check_err "escalate: a resolved conversation -> 55000" 55000 - 'conversation * is resolved' <<'SQL'
SELECT cd_conversation_escalate(jsonb_build_object('conversation', t('p2'), 'by_agent', NULL, 'reason', 'too late'))
SQL
check "escalate: the refused calls changed nothing" <<'SQL'
SELECT t_and(t_is(tier, 1), t_is(priority, 5), t_is(status, 'assigned')) FROM conversations WHERE id = t('x1');
SELECT t_is(t_nev(t('x1'), 'escalated'), 0::bigint)
SQL
check "escalate: by the tier-1 holder -> tier 2, priority + 1, back in its queue, released_agent = the holder" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_conversation_escalate(jsonb_build_object('conversation', t('x1'), 'by_agent', t('alice'),
                                                                           'reason', 'needs a specialist', 'client_msg_id', 'esc-1')) j, now() n;
SELECT t_is(r.j - 'route', jsonb_build_object('tier', 2, 'previous_tier', 1, 'priority', 6, 'reason', 'needs a specialist',
           'by', t('alice'), 'conversation', t('x1'), 'status', 'queued', 'agent', NULL, 'released_agent', t('alice'),
           'customer', c.customer_id, 'queue', t('q24'), 'duplicate', false))
  FROM r, conversations c WHERE c.id = t('x1');
SELECT t_and(t_is(r.j -> 'route' -> 'tier', '2'::jsonb), t_is(r.j -> 'route' ->> 'status', 'queued')
       , t_is((r.j -> 'route' ->> 'enqueued_at')::bigint, cd_ms(r.n))) FROM r;
SELECT t_and(t_is(c.status, 'queued'), t_is(c.agent_id, NULL), t_is(c.tier, 2), t_is(c.priority, 6), t_is(c.enqueued_at, r.n))
  FROM r, conversations c WHERE c.id = t('x1')
SQL
check "escalate: timeline escalated {tier, previous_tier, priority, reason, by} and enqueued {reason escalated, from_agent}" <<'SQL'
SELECT t_is(data, jsonb_build_object('tier', 2, 'previous_tier', 1, 'priority', 6, 'reason', 'needs a specialist', 'by', t('alice')))
  FROM conversation_events WHERE conversation_id = t('x1') AND kind = 'escalated';
SELECT t_is(data, jsonb_build_object('queue', t('q24'), 'reason', 'escalated', 'from_agent', t('alice')))
  FROM conversation_events WHERE conversation_id = t('x1') AND kind = 'enqueued' AND data ->> 'reason' = 'escalated'
SQL
check "escalate: a retry with the same client_msg_id -> duplicate:true, the same answer, nothing recorded" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_conversation_escalate(jsonb_build_object('conversation', t('x1'), 'by_agent', t('alice'),
                                                                           'reason', 'needs a specialist', 'client_msg_id', 'esc-1')) j;
SELECT t_and(t_is(j -> 'duplicate', 'true'::jsonb), t_is((j ->> 'tier')::int, 2), t_is((j ->> 'released_agent')::bigint, t('alice')),
             t_is(j ->> 'status', 'queued'), t_is(j ->> 'reason', 'needs a specialist')) FROM r;
SELECT t_and(t_is(t_nev(t('x1'), 'escalated'), 1::bigint), t_is(t_nev(t('x1'), 'enqueued'), 2::bigint));
SELECT t_and(t_is(tier, 2), t_is(priority, 6)) FROM conversations WHERE id = t('x1')
SQL
check "escalate: a senior holder (tier 3 >= the new tier 2) keeps it assigned, released_agent null" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_conversation_escalate(jsonb_build_object('conversation', t('x2'), 'by_agent', t('carol'),
                                                                           'reason', 'VIP')) j;
SELECT t_and(t_is((j ->> 'tier')::int, 2), t_is(j ->> 'status', 'assigned'), t_is((j ->> 'agent')::bigint, t('carol'))
       , t_is(j -> 'released_agent', 'null'::jsonb)) FROM r;
SELECT t_and(t_is(status, 'assigned'), t_is(agent_id, t('carol')), t_is(tier, 2)) FROM conversations WHERE id = t('x2');
SELECT t_is(count(*), 0::bigint) FROM conversation_events WHERE conversation_id = t('x2') AND kind = 'enqueued' AND data ->> 'reason' = 'escalated'
SQL
check "escalate: by the HTTP API (no by_agent) on a queued conversation -> tier + 1, stays queued" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_conversation_escalate(jsonb_build_object('conversation', t('c4q'), 'reason', 'from the CRM')) j;
SELECT t_and(t_is((j ->> 'tier')::int, 2), t_is(j ->> 'status', 'queued'), t_is(j -> 'released_agent', 'null'::jsonb)
       , t_is(j -> 'by', 'null'::jsonb)) FROM r
SQL
check "escalate: a pending conversation released by escalation -> queued, its pause ends, clocks run again" <<'SQL'
SELECT t_set('x3', t_open('q24')) IS NOT NULL;
SELECT t_assign(t('x3'), t('alice')) = 'assigned';
SELECT cd_conversation_pending(jsonb_build_object('conversation', t('x3'), 'by_agent', t('alice'))) ->> 'status' = 'pending';
CREATE TEMP TABLE r AS SELECT cd_conversation_escalate(jsonb_build_object('conversation', t('x3'), 'by_agent', t('alice'),
                                                                           'reason', 'beyond me')) j, now() n;
SELECT t_and(t_is(j ->> 'status', 'queued'), t_is((j ->> 'released_agent')::bigint, t('alice'))) FROM r;
SELECT t_is(p.ended_at, r.n) FROM sla_pauses p, r WHERE p.conversation_id = t('x3');
SELECT t_is(count(*), 2::bigint) FROM sla_timers WHERE conversation_id = t('x3') AND due_at IS NOT NULL AND next_fire_at = warn_at;
SELECT t_is(first_response_due, (t_timer(id, 'first_response')).due_at) FROM conversations WHERE id = t('x3')
SQL
check "escalate: a pending conversation released by escalation -> conversations.sla_paused_at cleared (not paused any more)" <<'SQL'
SELECT t_and(t_is(status, 'queued'), t_is(sla_paused_at, NULL)) FROM conversations WHERE id = t('x3')
SQL

# ---------------------------------------------------------------------------
# 10. Business hours (Mon-Fri 09:00-17:00 Europe/Madrid)
# ---------------------------------------------------------------------------
check "business hours: the timers' due / warn = cd_sla_due on the policy's calendar from created_at" <<'SQL'
SELECT t_set('b1', t_open('qbiz')) IS NOT NULL;
SELECT t_and(t_is(s.due_at, cd_sla_due('Europe/Madrid', p.hours, p.holidays, c.created_at, s.budget_s))
       , t_is(s.warn_at, cd_sla_due('Europe/Madrid', p.hours, p.holidays, c.created_at, s.budget_s * 0.8))
       , t_is(s.next_fire_at, s.warn_at))
  FROM sla_timers s JOIN conversations c ON c.id = s.conversation_id JOIN sla_policies p ON p.id = c.sla_policy_id
 WHERE c.id = t('b1');
SELECT t_is(s.due_at, cd_sla_policy_due(t('pbiz'), c.created_at, s.budget_s))
  FROM sla_timers s JOIN conversations c ON c.id = s.conversation_id WHERE c.id = t('b1');
SELECT t_is(string_agg(timer || ':' || budget_s, ',' ORDER BY timer), 'first_response:3600,resolution:28800')
  FROM sla_timers WHERE conversation_id = t('b1')
SQL
check "business hours: started Fri 16:30 -> first_response due Mon 09:30, warn Mon 09:18; resolution due Mon 16:30" <<'SQL'
UPDATE sla_timers SET started_at = '2026-01-09 16:30:00+01' WHERE conversation_id = t('b1');
SELECT count(*) = 1 FROM (SELECT cd_sla_schedule(t('b1'))) s;
SELECT t_and(t_is(due_at, '2026-01-12 09:30:00+01'::timestamptz), t_is(warn_at, '2026-01-12 09:18:00+01'::timestamptz))
  FROM sla_timers WHERE conversation_id = t('b1') AND timer = 'first_response';
SELECT t_and(t_is(due_at, '2026-01-12 16:30:00+01'::timestamptz), t_is(warn_at, '2026-01-12 14:54:00+01'::timestamptz))
  FROM sla_timers WHERE conversation_id = t('b1') AND timer = 'resolution';
SELECT t_is(first_response_due, '2026-01-12 09:30:00+01'::timestamptz) FROM conversations WHERE id = t('b1')
SQL
check "business hours: a holiday added to the policy moves the running timers (Mon closed -> Tue)" <<'SQL'
SELECT cd_admin_update('sla-policies', 'pbiz', '{"holidays":["2026-01-12"]}') -> 'holidays' = '["2026-01-12"]'::jsonb;
SELECT t_is(due_at, '2026-01-13 09:30:00+01'::timestamptz) FROM sla_timers WHERE conversation_id = t('b1') AND timer = 'first_response';
SELECT t_is(due_at, '2026-01-13 16:30:00+01'::timestamptz) FROM sla_timers WHERE conversation_id = t('b1') AND timer = 'resolution';
SELECT t_is(first_response_due, '2026-01-13 09:30:00+01'::timestamptz) FROM conversations WHERE id = t('b1');
SELECT cd_conversation_resolve(jsonb_build_object('conversation', t('b1'))) ->> 'status' = 'resolved'
SQL

# ---------------------------------------------------------------------------
# 11. Transfers keep the timers
# ---------------------------------------------------------------------------
check "transfer: to another queue (even one without a policy) keeps the policy and every timer unchanged" <<'SQL'
SELECT t_set('tr1', t_open('q24')) IS NOT NULL;
SELECT t_assign(t('tr1'), t('alice')) = 'assigned';
CREATE TEMP TABLE b AS SELECT * FROM sla_timers WHERE conversation_id = t('tr1');
CREATE TEMP TABLE bc AS SELECT first_response_due, next_response_due, resolution_due FROM conversations WHERE id = t('tr1');
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('tr1'), 'by_agent', t('alice'), 'queue', 'qnone')) ->> 'status' = 'queued';
SELECT t_and(t_is(queue_id, t('qnone')), t_is(sla_policy_id, t('p24'))) FROM conversations WHERE id = t('tr1');
SELECT t_is((SELECT count(*) FROM b), 2::bigint);
SELECT NOT EXISTS ((SELECT * FROM sla_timers WHERE conversation_id = t('tr1')) EXCEPT (SELECT * FROM b))
   AND NOT EXISTS ((SELECT * FROM b) EXCEPT (SELECT * FROM sla_timers WHERE conversation_id = t('tr1')));
SELECT NOT EXISTS ((SELECT first_response_due, next_response_due, resolution_due FROM conversations WHERE id = t('tr1'))
                   EXCEPT (SELECT * FROM bc))
SQL
check "transfer: the policy still applies after it (an agent reply stops first_response)" <<'SQL'
SELECT t_assign(t('tr1'), t('bob')) = 'assigned';
SELECT (t_reply(t('tr1'), t('bob')) -> 'first_response')::boolean;
SELECT stopped_at IS NOT NULL FROM sla_timers WHERE conversation_id = t('tr1') AND timer = 'first_response';
SELECT (t_say(t('tr1')) -> 'ok')::boolean;
SELECT t_is(budget_s, 300) FROM sla_timers WHERE conversation_id = t('tr1') AND timer = 'next_response'
SQL
check "transfer: a pending conversation transferred to a queue -> its pause ends, clocks run again" <<'SQL'
SELECT cd_conversation_pending(jsonb_build_object('conversation', t('tr1'), 'by_agent', t('bob'))) ->> 'status' = 'pending';
SELECT t_is(count(*), 0::bigint) FROM sla_timers WHERE conversation_id = t('tr1') AND stopped_at IS NULL AND due_at IS NOT NULL;
CREATE TEMP TABLE r AS SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('tr1'), 'by_agent', t('bob'), 'queue', 'q24')) j, now() n;
SELECT t_is(j ->> 'status', 'queued') FROM r;
SELECT t_is(p.ended_at, r.n) FROM sla_pauses p, r WHERE p.conversation_id = t('tr1');
SELECT t_is(count(*), 2::bigint) FROM sla_timers WHERE conversation_id = t('tr1') AND stopped_at IS NULL AND due_at IS NOT NULL
SQL
check "transfer: a pending conversation transferred to an agent -> assigned, its pause ends" <<'SQL'
SELECT cd_agent_presence(jsonb_build_object('agent', t('carol'), 'status', 'available')) ->> 'status' = 'available';
SELECT t_assign(t('tr1'), t('bob')) = 'assigned';
SELECT cd_conversation_pending(jsonb_build_object('conversation', t('tr1'), 'by_agent', t('bob'))) ->> 'status' = 'pending';
SELECT t_is(count(*), 1::bigint) FROM sla_pauses WHERE conversation_id = t('tr1') AND ended_at IS NULL;
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('tr1'), 'by_agent', t('bob'), 'agent', 'carol')) ->> 'status' = 'assigned';
SELECT t_is(count(*), 0::bigint) FROM sla_pauses WHERE conversation_id = t('tr1') AND ended_at IS NULL;
SELECT t_is(count(*), 2::bigint) FROM sla_timers WHERE conversation_id = t('tr1') AND stopped_at IS NULL AND due_at IS NOT NULL
SQL

# ---------------------------------------------------------------------------
# Budgets at the API's limits
# ---------------------------------------------------------------------------
check "limits: a budget at the API's maximum (resolution_s 31536000 = 365 days, warn 80%) arms its timer" <<'SQL'
SELECT cd_admin_create('sla-policies', '{"name":"yearly","resolution_s":31536000}') ->> 'name' = 'yearly';
SELECT cd_admin_create('queues', '{"name":"qyear","sla_policy":"yearly"}') ->> 'name' = 'qyear';
SELECT t_set('y1', t_open('qyear')) IS NOT NULL;
SELECT t_and(t_is(due_at - started_at, interval '365 days'), t_is(warn_at - started_at, interval '292 days'))
  FROM sla_timers WHERE conversation_id = t('y1') AND timer = 'resolution'
SQL

# ---------------------------------------------------------------------------
echo "# $PASSES passed, $FAILS failed"
if (( FAILS > 0 )); then
    printf '# failed: %s\n' "${FAILED[@]}"
    exit 1
fi
exit 0
