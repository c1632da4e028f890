#!/usr/bin/env bash
# check_phone_fast.sh -- sql/0016_phone_fast.sql must not change what the phone path does.
#
#   tests/sql/check_phone_fast.sh [-v]
#
# 0016 rewrote cd_phone_event (a fast path for a new call's `queued`), cd_offer_create,
# cd_offer_decide, cd_customer_by_phone and cd_admin_resolve for speed only.  This check
# builds two databases in one throwaway cluster: `before` with every migration except 0016,
# `after` with all of them (daemon style), runs the same script of calls, offers, decisions
# and bad input against both, and compares every answer, every error (SQLSTATE, column,
# message) and the rows the functions wrote (times normalised to "T": the two databases
# run at different instants; whether a time equals the conversation's created_at is kept).
# Prints PASS/FAIL per check; exits 1 when any check failed.  -v shows full diffs.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=lib.sh
source "$ROOT/tests/sql/lib.sh"
sql_check_start phone "$@"
export PGTZ=UTC
echo "# PostgreSQL: $(q 'SHOW server_version')"
BASE=$CONN
q "CREATE DATABASE before" >/dev/null
q "CREATE DATABASE after" >/dev/null

# `after`: every migration, as the daemon applies them
CONN=${BASE/dbname=app/dbname=after}
migrate_daemon_style 0016_phone_fast.sql
# `before`: the same without 0016
CONN=${BASE/dbname=app/dbname=before}
ok=1
q 'CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())' >/dev/null
for f in "${FILES[@]}"; do
    b=${f##*/}
    # 0020 keeps 0016's cd_phone_event (as cd_phone_event(p, NULL)): left out too
    [[ $b == 0016_phone_fast.sql || $b == 0020_phone_offer.sql ]] && continue
    out=$(psqlc -c "SET client_min_messages = warning" -c "BEGIN" -c "$(cat "$f")" -c "COMMIT" 2>&1)
    [[ -z $out ]] || { ok=0; fail "before: apply $b" "$out"; }
done
(( ok )) && pass "before: every migration but 0016 and 0020 applied"

# The script: each line one statement (its own transaction, like the daemon's calls);
# answers go through t_norm, errors are printed by psql (ON_ERROR_STOP off).
SETUP=$(cat <<'SQL'
CREATE FUNCTION t_norm(j jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE jsonb_typeof(j)
        WHEN 'object' THEN coalesce((SELECT jsonb_object_agg(k, t_norm(v)) FROM jsonb_each(j) e(k, v)), '{}')
        WHEN 'array' THEN coalesce((SELECT jsonb_agg(t_norm(v) ORDER BY o)
                                      FROM jsonb_array_elements(j) WITH ORDINALITY e(v, o)), '[]')
        WHEN 'number' THEN CASE WHEN j::numeric >= 1e12 THEN '"T"' ELSE j END
        WHEN 'string' THEN CASE WHEN j #>> '{}' ~ '^\d{4}-\d\d-\d\d[T ]\d\d:' THEN '"T"' ELSE j END
        ELSE j END;
END $$;
CREATE FUNCTION t_ev(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT t_norm(cd_phone_event(p)) $$;
CREATE FUNCTION t_offer(p_conv bigint, p_agent bigint) RETURNS jsonb LANGUAGE sql AS $$
    SELECT t_norm(cd_offer_create(jsonb_build_object('conversation', p_conv, 'agent', p_agent,
                                                     'expires_at', cd_ms(now()) + 60000, 'reason', '{"pick":"test"}'::jsonb))) $$;
CREATE FUNCTION t_decide(p_offer bigint, p_decision text, p_extra jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
    SELECT t_norm(cd_offer_decide(jsonb_build_object('offer', p_offer, 'decision', p_decision) || p_extra)) $$;
SELECT cd_admin_create('sla-policies', '{"name":"fast","first_response_s":60,"resolution_s":3600}') IS NOT NULL;
SELECT cd_admin_create('queues', '{"name":"Sales","priority":3,"sla_policy":"fast"}') IS NOT NULL;
SELECT cd_admin_create('queues', '{"name":"Support"}') IS NOT NULL;
SELECT cd_admin_create('agents', '{"login":"ann","name":"Ann","password_hash":"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA","extension":"100","capacity":{"voice":1}}') IS NOT NULL;
SELECT cd_admin_create('agents', '{"login":"bob","name":"Bob","password_hash":"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA","extension":"101","capacity":{"voice":1}}') IS NOT NULL;
SQL
)
SCRIPT=$(cat <<'SQL'
SELECT t_ev('{"call_id":"a1","event":"queued","queue":"sales","from":"+1 (555) 000-0001","to":"+15550009999"}');
SELECT t_offer(1, 1);
SELECT t_decide(1, 'accepted');
SELECT t_ev('{"call_id":"a1","event":"answered"}');
SELECT t_ev('{"call_id":"a1","event":"ended"}');
SELECT t_ev('{"call_id":"a2","event":"queued","queue":2,"from":"+15550000001","event_id":"e-2","ivr":{"lang":"en"}}');
SELECT t_offer(2, 2);
SELECT t_decide(2, 'rejected', '{"reason":"busy"}');
SELECT t_offer(2, 1);
SELECT t_decide(3, 'expired');
SELECT t_offer(2, 1);
SELECT t_decide(4, 'revoked', '{"reason":{"reason":"taken","by":"x"}}');
SELECT t_offer(2, 2);
SELECT t_decide(5, 'accepted', '{"client_msg_id":"acc-5","reason":"ok"}');
SELECT t_decide(5, 'accepted', '{"client_msg_id":"acc-5","reason":"ok"}');
SELECT t_decide(5, 'rejected');
SELECT t_ev('{"call_id":"a3","event":"queued","from":"0555 12","default_queue":"SUPPORT","recording_url":"http://r/1","at":"2026-11-24T10:00:00Z"}');
SELECT t_ev('{"call_id":"a4","event":"queued","from":null,"to":"  ","default_queue":"nope"}');
SELECT t_ev('{"call_id":"a4","event":"queued"}');
SELECT t_ev('{"call_id":"a5","event":"offered","from":"+15550000005"}');
SELECT t_ev('{"call_id":"a5","event":"queued","queue":"Sales"}');
SELECT t_ev('{"call_id":"a6","event":"queued","queue":"Sales","at":1795000000000,"agent":"bob"}');
SELECT t_ev('{"call_id":"a6","event":"abandoned"}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":"nosuch"}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":"99"}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":""}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":1.5}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":"Sales","agent":"nobody"}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":"Sales","ivr":[1]}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":"Sales","event_id":7}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":"Sales","from":12}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":"Sales","at":"yesterday"}');
SELECT t_ev('{"call_id":" ","event":"queued"}');
SELECT t_ev('{"call_id":1,"event":"queued"}');
SELECT t_ev(jsonb_build_object('call_id', repeat('x', 201), 'event', 'queued'));
SELECT t_ev('{"call_id":"a7","event":"lost"}');
SELECT t_ev('{"call_id":"a7"}');
SELECT t_ev('[1]');
SELECT t_ev(NULL);
SELECT t_ev('{"call_id":"a7","event":"queued","queue":"Sales","from":"+15550000001"}');
SELECT t_ev('{"call_id":"a7","event":"queued","queue":"Sales","from":"+15550000001"}');
SELECT t_offer(7, 1);
SELECT t_offer(7, 99);
SELECT t_offer(999, 1);
SELECT t_offer(1, 1);
SELECT t_norm(cd_offer_create('{"conversation":7,"agent":1,"expires_at":"2000-01-01T00:00:00Z"}'));
SELECT t_norm(cd_offer_create('[]'));
SELECT t_decide(6, 'maybe');
SELECT t_norm(cd_offer_decide('{"offer":6}'));
SELECT t_decide(999, 'accepted');
SELECT t_decide(6, 'accepted', '{"client_msg_id":""}');
SELECT t_ev('{"call_id":"a7","event":"answered","agent":"ann"}');
SELECT t_ev('{"call_id":"a8","event":"resumed"}');
SELECT t_ev('{"call_id":"a9","event":"queued","queue":"Support","from":"+15550000009"}');
SELECT t_ev('{"call_id":"a9","event":"voicemail","recording_url":"http://r/9"}');
SELECT cd_admin_resolve('queues', '1') || '/' || cd_admin_resolve('queues', 'SALES') || '/' || cd_admin_resolve('agents', 'BOB')
       || '/' || coalesce(cd_admin_resolve('agents', '0000000000000000000001')::text, 'null')
       || '/' || coalesce(cd_admin_resolve('skills', 'x')::text, 'null') || '/' || cd_admin_resolve('sla-policies', 'Fast')
       || '/' || coalesce(cd_admin_resolve('inboxes', ' A@B ')::text, 'null') || '/' || coalesce(cd_admin_resolve('api-tokens', '1')::text, 'null');
SELECT cd_admin_resolve('gizmos', '1');
SELECT cd_admin_resolve('gizmos', NULL);
SQL
)
DUMP=$(cat <<'SQL'
SELECT 'conversation', t_norm(to_jsonb(c) || jsonb_build_object('enq=created', c.enqueued_at = c.created_at,
                                                               'upd=created', c.updated_at = c.created_at)) FROM conversations c ORDER BY id;
SELECT 'call', t_norm(to_jsonb(k) || jsonb_build_object('upd=created', k.updated_at = k.created_at)) FROM calls k ORDER BY id;
SELECT 'phone_event', t_norm(to_jsonb(e)) FROM phone_events e ORDER BY id;
SELECT 'timeline', t_norm(to_jsonb(e)) FROM conversation_events e ORDER BY id;
SELECT 'events_log', id, kind, t_norm(cd_event_data(data, message_id)) FROM events_log ORDER BY id;
SELECT 'offer', t_norm(to_jsonb(o)) FROM offers o ORDER BY id;
SELECT 'sla_timer', t_norm(to_jsonb(t) || jsonb_build_object('due-start', extract(epoch FROM t.due_at - t.started_at)))
  FROM sla_timers t ORDER BY conversation_id, timer;
SELECT 'customer', t_norm(to_jsonb(c)) FROM customers c ORDER BY id;
SELECT 'identity', t_norm(to_jsonb(i)) FROM customer_identities i ORDER BY id;
SELECT 'message', t_norm(to_jsonb(m)) FROM messages m ORDER BY id;
SELECT 'client_request', t_norm(to_jsonb(r)) FROM client_requests r ORDER BY 2;
SQL
)

run_in() {   # run_in DB -> the script's output, then the dump
    CONN=${BASE/dbname=app/dbname=$1}
    psqlc <<<"$SETUP" 2>&1
    printf '\\set VERBOSITY verbose\n%s\n' "$SCRIPT" | "$PSQL" "$CONN" -X -A -t -q 2>&1 |
        sed -E 's/^psql:<stdin>:[0-9]+: //' | grep -E '^(ERROR|COLUMN NAME|[{0-9])'
    psqlc <<<"$DUMP" 2>&1
}
B=$(run_in before)
[[ -n ${CHECK_PHONE_DUMP:-} ]] && echo "$B" >"$CHECK_PHONE_DUMP"
A=$(run_in after)
if [[ $(grep -c '^ERROR' <<<"$B") -ge 20 ]]; then pass "script: errors exercised ($(grep -c '^ERROR' <<<"$B"))"; else fail "script: errors exercised" "$B"; fi
if grep -q '"status": "assigned"' <<<"$B" && grep -q '"duplicate": true' <<<"$B"; then pass "script: accepts and duplicates exercised"; else fail "script: accepts and duplicates exercised" "$B"; fi
d=$(diff <(echo "$B") <(echo "$A"))
if [[ -z $d ]]; then pass "answers, errors and rows identical with and without 0016 ($(wc -l <<<"$B") lines)"; else fail "answers, errors and rows identical with and without 0016" "$d"; fi

echo "# $PASSES passed, $FAILS failed"
(( FAILS == 0 ))
