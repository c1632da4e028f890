#!/usr/bin/env bash
# check_chat.sh -- verifies the chat-path and routing functions of
# sql/0003_chat.sql against a throwaway PostgreSQL.
#
#   tests/sql/check_chat.sh [-v] [--no-bench]
#
# 1. starts a cluster with scripts/pg-sandbox (or $PG_SANDBOX),
# 2. applies every migration the way the daemon does (BEGIN; the whole file as
#    one simple query; INSERT INTO schema_migrations; COMMIT),
# 3. exercises cd_chat_customer_hello / _messages / _close, cd_chat_survey,
#    cd_agent_auth / _presence / _message, cd_offer_create / _decide,
#    cd_conversation_resolve / _transfer and cd_router_snapshot, checking
#    results and SQLSTATE / COLUMN / MESSAGE of every error,
# 4. prints a small throughput measurement of the group-commit function
#    (not a pass/fail; --no-bench skips it).
# Prints PASS/FAIL per check; exits 1 when any check failed.  -v shows the
# output of failed checks in full.  The sandbox is stopped on exit.
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

SBDIR=$(mktemp -d /tmp/cd-check-chat.XXXXXX)
chmod 755 "$SBDIR"
BG_PIDS=()
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    local p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    "$SANDBOX" stop "$SBDIR" >/dev/null 2>&1 || rm -rf "$SBDIR"
    rm -f "$SBDIR".*.sql
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fsync off: the throughput figure is the functions' cost, not the disk's
sandbox_start 256MB


echo "# PostgreSQL: $(q 'SHOW server_version')"

# ---------------------------------------------------------------------------
# Migrations, as src/store/migrate.c applies them
# ---------------------------------------------------------------------------
migrate_daemon_style 0003_chat.sql

# test helpers: named ids (t_set/t) and hex SHA-256 (h)
out=$(psqlc 2>&1 <<'SQL'
CREATE TABLE t_ids (k text PRIMARY KEY, v bigint);
CREATE FUNCTION t_set(p_k text, p_v bigint) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO t_ids VALUES (p_k, p_v) ON CONFLICT (k) DO UPDATE SET v = excluded.v RETURNING v $$;
CREATE FUNCTION t(p_k text) RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT v FROM t_ids WHERE k = p_k $$;
CREATE FUNCTION h(p text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT encode(sha256(convert_to(p, 'UTF8')), 'hex') $$;
-- a hello of an unverified visitor with a fresh token
CREATE FUNCTION t_hello(p jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT cd_chat_customer_hello(p || jsonb_build_object('new_resume_hash', h(gen_random_uuid()::text))) $$;
SQL
)
[[ -z $out ]] || fail "test helpers" "$out"

# ---------------------------------------------------------------------------
# Messages before any queue exists
# ---------------------------------------------------------------------------
check "messages: no queue at all -> item fails with 'no queue to route to', nothing stored" <<'SQL'
SELECT t_set('noq', (t_hello('{"name":"Early"}') ->> 'customer')::bigint) IS NOT NULL;
SELECT cd_chat_customer_messages(jsonb_build_array(jsonb_build_object('customer', t('noq'), 'body', 'hi')))
       = '[{"ok":false,"code":"invalid","field":"queue","message":"no queue to route to"}]'::jsonb;
SELECT NOT EXISTS (SELECT 1 FROM messages) AND NOT EXISTS (SELECT 1 FROM conversations)
SQL

# ---------------------------------------------------------------------------
# Fixtures: skills, an SLA policy, queues, agents
# ---------------------------------------------------------------------------
out=$(psqlc 2>&1 <<'SQL'
SELECT t_set('sk_billing', (cd_admin_create('skills', '{"name":"billing"}') ->> 'id')::bigint);
SELECT t_set('sk_spanish', (cd_admin_create('skills', '{"name":"spanish"}') ->> 'id')::bigint);
SELECT t_set('sla', (cd_admin_create('sla-policies', '{"name":"std","first_response_s":60}') ->> 'id')::bigint);
SELECT t_set('q_support', (cd_admin_create('queues', '{"name":"support","priority":5,"sla_policy":"std","skills":{"billing":2,"spanish":1},"overflow":[{"after_s":60,"tier":2}]}') ->> 'id')::bigint);
SELECT t_set('q_billing', (cd_admin_create('queues', '{"name":"Billing","priority":7}') ->> 'id')::bigint);
SELECT t_set('q_vip', (cd_admin_create('queues', '{"name":"vip","priority":20}') ->> 'id')::bigint);
SELECT t_set('alice', (cd_admin_create('agents', '{"login":"alice","name":"Alice A","password_hash":"$argon2id$alice","tier":1,"skills":{"billing":3},"capacity":{"chat":4}}') ->> 'id')::bigint);
SELECT t_set('bob', (cd_admin_create('agents', '{"login":"bob","password_hash":"$argon2id$bob","tier":2}') ->> 'id')::bigint);
SELECT t_set('sue', (cd_admin_create('agents', '{"login":"sue","password_hash":"$argon2id$sue","role":"supervisor"}') ->> 'id')::bigint);
SELECT t_set('gone', (cd_admin_create('agents', '{"login":"gone","password_hash":"$argon2id$gone"}') ->> 'id')::bigint);
SELECT cd_admin_delete('agents', 'gone');
SQL
)
if [[ $out == *ERROR* ]]; then fail "fixtures" "$out"; echo "# cannot go on without fixtures"; exit 1; fi
pass "fixtures: skills, sla policy, queues, agents"

# ---------------------------------------------------------------------------
# 1. cd_chat_customer_hello
# ---------------------------------------------------------------------------
check "hello: unverified visitor -> new customer, e-mail/phone only in attributes" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_chat_customer_hello(jsonb_build_object(
    'name', 'Ana', 'language', 'es', 'email', ' Ana@Example.com ', 'phone', '+34 600 000 000',
    'resume_hash', NULL, 'new_resume_hash', h('tok-ana'))) j;
SELECT t_set('ana', (j ->> 'customer')::bigint) IS NOT NULL FROM r;
SELECT j - 'customer' = '{"conversation":null,"resumed":false,"via":"created"}'::jsonb FROM r;
SELECT name = 'Ana' AND language = 'es'
       AND attributes = '{"email":"ana@example.com","phone":"+34600000000"}'::jsonb
  FROM customers WHERE id = t('ana');
SELECT NOT EXISTS (SELECT 1 FROM customer_identities WHERE customer_id = t('ana'));
SELECT EXISTS (SELECT 1 FROM customer_resume_tokens WHERE token_hash = h('tok-ana') AND customer_id = t('ana'))
SQL
check "hello: resume token -> the same customer, last_used_at touched, new token stored" <<'SQL'
UPDATE customer_resume_tokens SET last_used_at = now() - interval '10 days' WHERE token_hash = h('tok-ana');
CREATE TEMP TABLE r AS SELECT cd_chat_customer_hello(jsonb_build_object(
    'resume_hash', upper(h('tok-ana')), 'new_resume_hash', h('tok-ana-2'), 'name', 'Other name')) j;
SELECT j = jsonb_build_object('customer', t('ana'), 'conversation', NULL, 'resumed', true, 'via', 'resume') FROM r;
SELECT last_used_at > now() - interval '1 minute' FROM customer_resume_tokens WHERE token_hash = h('tok-ana');
SELECT count(*) = 2 FROM customer_resume_tokens WHERE customer_id = t('ana');
SELECT name = 'Ana' FROM customers WHERE id = t('ana')   -- never overwritten
SQL
check "hello: token unused for more than 30 days -> a new customer" <<'SQL'
UPDATE customer_resume_tokens SET last_used_at = now() - interval '31 days' WHERE token_hash = h('tok-ana');
SELECT (cd_chat_customer_hello(jsonb_build_object('resume_hash', h('tok-ana'), 'new_resume_hash', h('tok-x1')))
        ->> 'customer')::bigint <> t('ana');
UPDATE customer_resume_tokens SET last_used_at = now() - interval '29 days' WHERE token_hash = h('tok-ana');
SELECT (cd_chat_customer_hello(jsonb_build_object('resume_hash', h('tok-ana'), 'new_resume_hash', h('tok-x2')))
        ->> 'customer')::bigint = t('ana')
SQL
check "hello: unknown resume token -> a new customer" <<'SQL'
SELECT (j ->> 'customer')::bigint <> t('ana') AND j ->> 'via' = 'created' AND NOT (j -> 'resumed')::boolean
  FROM (SELECT cd_chat_customer_hello(jsonb_build_object('resume_hash', h('nope'), 'new_resume_hash', h('tok-x3'))) j) s
SQL
check "hello: verified external id, first time -> new customer, identity verified, others unverified" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_chat_customer_hello(jsonb_build_object(
    'verified', 'external', 'external_id', 'crm-42', 'email', 'Carl@Example.com', 'phone', '+15550100',
    'name', 'Carl', 'new_resume_hash', h('tok-carl'))) j;
SELECT t_set('carl', (j ->> 'customer')::bigint) IS NOT NULL AND j ->> 'via' = 'created'
       AND NOT (j -> 'resumed')::boolean FROM r;
SELECT string_agg(kind || '=' || value || ':' || verified, ',' ORDER BY kind)
       = 'email=carl@example.com:false,external=crm-42:true,phone=+15550100:false'
  FROM customer_identities WHERE customer_id = t('carl');
SELECT attributes IS NULL AND name = 'Carl' FROM customers WHERE id = t('carl')
SQL
check "hello: verified external id again -> the same customer" <<'SQL'
SELECT j = jsonb_build_object('customer', t('carl'), 'conversation', NULL, 'resumed', true, 'via', 'identity')
  FROM (SELECT cd_chat_customer_hello(jsonb_build_object('verified', 'external', 'external_id', 'crm-42',
                                                        'new_resume_hash', h('tok-carl-2'))) j) s
SQL
check "hello: verified e-mail (any case, spaces) finds the customer and marks it verified" <<'SQL'
SELECT (cd_chat_customer_hello(jsonb_build_object('verified', 'email', 'email', '  CARL@example.COM',
                                                  'new_resume_hash', h('tok-carl-3'))) ->> 'customer')::bigint = t('carl');
SELECT verified FROM customer_identities WHERE kind = 'email' AND value = 'carl@example.com'
SQL
check "hello: never steals an identity (e-mail and phone held by someone else)" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_chat_customer_hello(jsonb_build_object(
    'verified', 'external', 'external_id', 'crm-77', 'email', 'carl@example.com', 'phone', '+15550100',
    'name', 'Mallory', 'new_resume_hash', h('tok-mal'))) j;
SELECT t_set('mal', (j ->> 'customer')::bigint) <> t('carl') FROM r;
SELECT count(*) = 3 FROM customer_identities WHERE customer_id = t('carl');
SELECT string_agg(kind || '=' || value, ',') = 'external=crm-77' FROM customer_identities WHERE customer_id = t('mal');
SELECT attributes = '{"email":"carl@example.com","phone":"+15550100"}'::jsonb FROM customers WHERE id = t('mal')
SQL
check "hello: verified e-mail new -> created with a verified e-mail identity" <<'SQL'
SELECT t_set('dora', (cd_chat_customer_hello(jsonb_build_object('verified', 'email', 'email', 'dora@example.com',
        'new_resume_hash', h('tok-dora'))) ->> 'customer')::bigint) IS NOT NULL;
SELECT verified FROM customer_identities WHERE customer_id = t('dora') AND kind = 'email' AND value = 'dora@example.com'
SQL
check "hello: a merged customer's token leads to the survivor" <<'SQL'
SELECT t_set('merged', (t_hello('{"name":"Old"}') ->> 'customer')::bigint) IS NOT NULL;
INSERT INTO customer_resume_tokens (token_hash, customer_id) VALUES (h('tok-merged'), t('merged'));
UPDATE customers SET merged_into = t('dora') WHERE id = t('merged');
SELECT (cd_chat_customer_hello(jsonb_build_object('resume_hash', h('tok-merged'), 'new_resume_hash', h('tok-m2')))
        ->> 'customer')::bigint = t('dora')
SQL
check_err "hello: verified external without external_id" 22023 external_id 'external_id: is required when verified is "external"' <<'SQL'
SELECT cd_chat_customer_hello(jsonb_build_object('verified', 'external', 'email', 'a@b.c', 'new_resume_hash', h('e1')))
SQL
check_err "hello: verified e-mail without email" 22023 email 'email: is required when verified is "email"' <<'SQL'
SELECT cd_chat_customer_hello(jsonb_build_object('verified', 'email', 'new_resume_hash', h('e1')))
SQL
check_err "hello: bad verified" 22023 verified 'verified: must be null, "external" or "email"' <<'SQL'
SELECT cd_chat_customer_hello(jsonb_build_object('verified', 'phone', 'new_resume_hash', h('e1')))
SQL
check_err "hello: bad e-mail" 22023 email 'email: must be an e-mail address*' <<'SQL'
SELECT cd_chat_customer_hello(jsonb_build_object('email', 'not an email', 'new_resume_hash', h('e1')))
SQL
check_err "hello: bad phone" 22023 phone 'phone: must be an E.164 number*' <<'SQL'
SELECT cd_chat_customer_hello(jsonb_build_object('phone', '0600-CALL-ME', 'new_resume_hash', h('e1')))
SQL
check_err "hello: bad language" 22023 language 'language: must be a language tag*' <<'SQL'
SELECT cd_chat_customer_hello(jsonb_build_object('language', 'es es', 'new_resume_hash', h('e1')))
SQL
check_err "hello: name not a string" 22023 name 'name: must be a string' <<'SQL'
SELECT cd_chat_customer_hello(jsonb_build_object('name', 42, 'new_resume_hash', h('e1')))
SQL
check_err "hello: bad resume_hash" 22023 resume_hash 'resume_hash: must be a hex SHA-256' <<'SQL'
SELECT cd_chat_customer_hello(jsonb_build_object('resume_hash', 'abc', 'new_resume_hash', h('e1')))
SQL
check_err "hello: new_resume_hash required" 22023 new_resume_hash 'new_resume_hash: is required' <<'SQL'
SELECT cd_chat_customer_hello('{"name":"x"}')
SQL
check_err "hello: new_resume_hash of another customer" 23505 new_resume_hash 'new_resume_hash: already belongs to another customer' <<'SQL'
SELECT cd_chat_customer_hello(jsonb_build_object('new_resume_hash', h('tok-carl')))
SQL
check_err "hello: body must be an object" 22023 body 'body: must be a JSON object' <<'SQL'
SELECT cd_chat_customer_hello('[]')
SQL

# ---------------------------------------------------------------------------
# 2. cd_chat_customer_messages (group commit)
# ---------------------------------------------------------------------------
check "messages: a mix of good and bad items; the bad ones fail alone" <<'SQL'
SELECT t_set('c1', (t_hello('{"name":"C1"}') ->> 'customer')::bigint) IS NOT NULL
   AND t_set('c2', (t_hello('{"name":"C2"}') ->> 'customer')::bigint) IS NOT NULL;
CREATE TEMP TABLE r AS SELECT e.j, e.n FROM jsonb_array_elements(cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c1'), 'body', 'hello', 'client_msg_id', 'm1', 'queue', 'support', 'default_queue', NULL),
    jsonb_build_object('customer', 999999, 'body', 'who am I'),
    jsonb_build_object('customer', t('c2'), 'body', ' '),
    jsonb_build_object('customer', t('c2'), 'body', repeat('x', 65537)),
    jsonb_build_object('customer', t('c2'), 'body', 'q', 'queue', 'nope'),
    jsonb_build_object('customer', t('c2'), 'body', 'q', 'queue', 987654),
    jsonb_build_object('customer', t('c2'), 'body', 'q', 'client_msg_id', repeat('k', 201)),
    jsonb_build_object('customer', t('c2'), 'body', 12),
    jsonb_build_object('customer', 'abc', 'body', 'x'),
    '"not an object"'::jsonb,
    jsonb_build_object('customer', t('c2'), 'body', repeat('é', 32768), 'queue', t('q_billing'))
))) WITH ORDINALITY AS e(j, n);
SELECT count(*) = 11 FROM r;
SELECT string_agg(CASE WHEN (j ->> 'ok')::boolean THEN 'ok' ELSE (j ->> 'code') || ':' || (j ->> 'field') END, ' ' ORDER BY n)
       = 'ok not_found:customer invalid:body invalid:body invalid:queue invalid:queue invalid:client_msg_id invalid:body invalid:customer invalid:item ok'
  FROM r;
SELECT string_agg(j ->> 'message', '|' ORDER BY n) =
       'customer 999999 not found|body: must not be empty|body: must be at most 65536 bytes|queue: unknown queue "nope"|queue: unknown queue "987654"|client_msg_id: must be a string of 1 to 200 characters|body: must be a string|customer: must be an id|item: must be an object'
  FROM r WHERE NOT (j ->> 'ok')::boolean;
SELECT (SELECT count(*) FROM messages) = 2 AND (SELECT count(*) FROM conversations) = 2
SQL
check "messages: an opened conversation: chat, queued, tier 1, queue priority and SLA, enqueued event" <<'SQL'
SELECT c.channel = 'chat' AND c.status = 'queued' AND c.tier = 1 AND c.priority = 5
       AND c.queue_id = t('q_support') AND c.sla_policy_id = t('sla') AND c.enqueued_at IS NOT NULL
       AND c.last_message_at = c.enqueued_at AND c.agent_id IS NULL
  FROM conversations c WHERE c.customer_id = t('c1');
SELECT (SELECT count(*) FROM conversation_events e JOIN conversations c ON c.id = e.conversation_id
         WHERE c.customer_id = t('c1')) = 1
   AND (SELECT e.kind = 'enqueued' AND e.data = jsonb_build_object('queue', t('q_support'), 'reason', 'first message')
          FROM conversation_events e JOIN conversations c ON c.id = e.conversation_id WHERE c.customer_id = t('c1'));
SELECT m.channel = 'chat' AND m.direction = 'in' AND m.author_kind = 'customer' AND m.author_customer_id = t('c1')
       AND m.body = 'hello' AND m.client_msg_id = 'm1'
  FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.customer_id = t('c1');
SELECT queue_id = t('q_billing') AND priority = 7 AND sla_policy_id IS NULL FROM conversations WHERE customer_id = t('c2')
SQL
check "messages: the ok item's answer" <<'SQL'
SELECT t_set('conv_c1', (SELECT id FROM conversations WHERE customer_id = t('c1'))) IS NOT NULL;
CREATE TEMP TABLE r AS SELECT cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c1'), 'body', 'second', 'client_msg_id', 'm2'))) -> 0 j;
SELECT j - 'message' - 'created_at' = jsonb_build_object('ok', true, 'conversation', t('conv_c1'), 'customer', t('c1'),
           'duplicate', false, 'opened', false, 'queue', t('q_support'), 'agent', NULL, 'status', 'queued', 'route', NULL)
  FROM r;
SELECT (j ->> 'message')::bigint = (SELECT max(id) FROM messages)
       AND j ->> 'created_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$' FROM r
SQL
check "messages: retry in a later call -> the original ids, duplicate, nothing recorded" <<'SQL'
CREATE TEMP TABLE before AS SELECT (SELECT count(*) FROM messages) n,
    (SELECT last_message_at FROM conversations WHERE id = t('conv_c1')) lm,
    (SELECT id FROM messages WHERE client_msg_id = 'm1') m1,
    (SELECT cd_ts(created_at) FROM messages WHERE client_msg_id = 'm1') at1;
CREATE TEMP TABLE r AS SELECT cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c1'), 'body', 'hello (resent)', 'client_msg_id', 'm1'))) -> 0 j;
SELECT (j ->> 'message')::bigint = b.m1 AND (j ->> 'conversation')::bigint = t('conv_c1')
       AND (j -> 'duplicate')::boolean AND NOT (j -> 'opened')::boolean AND j ->> 'created_at' = b.at1
  FROM r, before b;
SELECT (SELECT count(*) FROM messages) = b.n
   AND (SELECT last_message_at FROM conversations WHERE id = t('conv_c1')) = b.lm FROM before b
SQL
check "messages: the same client_msg_id twice in one call -> one message, same ids" <<'SQL'
CREATE TEMP TABLE r AS SELECT e.j, e.n FROM jsonb_array_elements(cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c1'), 'body', 'third', 'client_msg_id', 'm3'),
    jsonb_build_object('customer', t('c2'), 'body', 'other', 'client_msg_id', 'm3'),
    jsonb_build_object('customer', t('c1'), 'body', 'third again', 'client_msg_id', 'm3')))) WITH ORDINALITY e(j, n);
SELECT (SELECT j -> 'message' FROM r WHERE n = 1) = (SELECT j -> 'message' FROM r WHERE n = 3)
   AND (SELECT j -> 'conversation' FROM r WHERE n = 1) = (SELECT j -> 'conversation' FROM r WHERE n = 3)
   AND (SELECT j -> 'message' FROM r WHERE n = 1) <> (SELECT j -> 'message' FROM r WHERE n = 2);
SELECT string_agg((j ->> 'duplicate'), ',' ORDER BY n) = 'false,false,true' FROM r;
SELECT count(*) = 1 FROM messages WHERE author_customer_id = t('c1') AND client_msg_id = 'm3'
SQL
check "messages: a new customer's two messages in one call open ONE conversation" <<'SQL'
SELECT t_set('c3', (t_hello('{"name":"C3"}') ->> 'customer')::bigint) IS NOT NULL;
CREATE TEMP TABLE r AS SELECT e.j, e.n FROM jsonb_array_elements(cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c3'), 'body', 'one', 'queue', 'vip'),
    jsonb_build_object('customer', t('c1'), 'body', 'between'),
    jsonb_build_object('customer', t('c3'), 'body', 'two', 'queue', 'support')))) WITH ORDINALITY e(j, n);
SELECT (SELECT count(*) FROM conversations WHERE customer_id = t('c3')) = 1
   AND (SELECT queue_id FROM conversations WHERE customer_id = t('c3')) = t('q_vip');
SELECT string_agg(j ->> 'opened', ',' ORDER BY n) = 'true,false,false'
   AND count(DISTINCT j -> 'conversation') FILTER (WHERE n IN (1, 3)) = 1 FROM r;
SELECT (SELECT (j ->> 'message')::bigint FROM r WHERE n = 1) < (SELECT (j ->> 'message')::bigint FROM r WHERE n = 3);
SELECT string_agg(body, ',' ORDER BY id) = 'one,two' FROM messages WHERE author_customer_id = t('c3');
SELECT (SELECT count(*) FROM conversation_events e JOIN conversations c ON c.id = e.conversation_id
         WHERE c.customer_id = t('c3') AND e.kind = 'enqueued') = 1
SQL
check "messages: route of an opened conversation (tier, priority, enqueued_at ms, no last agent)" <<'SQL'
SELECT t_set('c4', (t_hello('{"name":"C4"}') ->> 'customer')::bigint) IS NOT NULL;
CREATE TEMP TABLE r AS SELECT cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c4'), 'body', 'hi', 'queue', 'Billing'))) -> 0 j;
SELECT j -> 'route' = jsonb_build_object('tier', 1, 'priority', 7, 'enqueued_at', cd_ms(c.enqueued_at),
                                         'last_agent', NULL, 'last_agent_at', NULL)
  FROM r, conversations c WHERE c.id = (r.j ->> 'conversation')::bigint
SQL
check "messages: queue by id; default_queue; unknown default -> the lowest id; none -> lowest id" <<'SQL'
SELECT t_set('c5', (t_hello('{}') ->> 'customer')::bigint) IS NOT NULL
   AND t_set('c6', (t_hello('{}') ->> 'customer')::bigint) IS NOT NULL
   AND t_set('c7', (t_hello('{}') ->> 'customer')::bigint) IS NOT NULL
   AND t_set('c8', (t_hello('{}') ->> 'customer')::bigint) IS NOT NULL;
SELECT string_agg((j ->> 'queue'), ',' ORDER BY n) = concat_ws(',', t('q_vip'), t('q_billing'), t('q_support'), t('q_support'))
  FROM jsonb_array_elements(cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c5'), 'body', 'a', 'queue', t('q_vip'), 'default_queue', 'billing'),
    jsonb_build_object('customer', t('c6'), 'body', 'b', 'queue', NULL, 'default_queue', 'BILLING'),
    jsonb_build_object('customer', t('c7'), 'body', 'c', 'default_queue', 'no-such-queue'),
    jsonb_build_object('customer', t('c8'), 'body', 'd', 'queue', '', 'default_queue', '')))) WITH ORDINALITY e(j, n)
SQL
check "messages: body of exactly 65536 bytes is fine" <<'SQL'
SELECT (cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c5'), 'body', repeat('ab', 32768)))) -> 0 ->> 'ok')::boolean
SQL
check "messages: a merged customer writes into the survivor's conversation" <<'SQL'
SELECT t_set('old5', (t_hello('{}') ->> 'customer')::bigint) IS NOT NULL;
UPDATE customers SET merged_into = t('c5') WHERE id = t('old5');
SELECT (j ->> 'customer')::bigint = t('c5') AND (j ->> 'conversation')::bigint
       = (SELECT id FROM conversations WHERE customer_id = t('c5'))
  FROM (SELECT cd_chat_customer_messages(jsonb_build_array(
        jsonb_build_object('customer', t('old5'), 'body', 'from the old id'))) -> 0 j) s
SQL
check "messages: empty array -> empty array; hello shows the open conversation" <<'SQL'
SELECT cd_chat_customer_messages('[]') = '[]'::jsonb;
SELECT t_set('c9', (cd_chat_customer_hello(jsonb_build_object('name', 'C9', 'new_resume_hash', h('tok-c9')))
                    ->> 'customer')::bigint) IS NOT NULL;
SELECT t_set('conv_c9', (cd_chat_customer_messages(jsonb_build_array(jsonb_build_object('customer', t('c9'), 'body', 'hi')))
                         -> 0 ->> 'conversation')::bigint) IS NOT NULL;
SELECT cd_chat_customer_hello(jsonb_build_object('resume_hash', h('tok-c9'), 'new_resume_hash', h('tok-c9b')))
       = jsonb_build_object('customer', t('c9'), 'conversation', t('conv_c9'), 'resumed', true, 'via', 'resume');
SELECT t_set('conv_c3', (SELECT id FROM conversations WHERE customer_id = t('c3'))) IS NOT NULL
SQL
check_err "messages: not an array" 22023 items 'items: must be an array' <<'SQL'
SELECT cd_chat_customer_messages('{"customer":1}')
SQL

# concurrency: two calls for the same new customer at once open one conversation
out=$(psqlc -c "SELECT t_set('cc', (t_hello('{}') ->> 'customer')::bigint)" 2>&1)
( psqlc -c "BEGIN" \
        -c "SELECT cd_chat_customer_messages(jsonb_build_array(jsonb_build_object('customer', t('cc'), 'body', 'A', 'client_msg_id', 'race')))" \
        -c "SELECT pg_sleep(1.5)" -c "COMMIT" >/dev/null 2>&1 ) &
BG_PIDS+=($!)
for _ in $(seq 100); do   # until the first call holds the customer's lock
    [[ $(q "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
                            AND classid = cd_lock_class_customer()::oid AND objid = cd_lock_key(t('cc'))::oid)") == t ]] && break
    sleep 0.1
done
check "messages: concurrent calls for one customer: the second waits, then joins the same conversation" <<'SQL'
SELECT (cd_chat_customer_messages(jsonb_build_array(
          jsonb_build_object('customer', t('cc'), 'body', 'B'),
          jsonb_build_object('customer', t('cc'), 'body', 'A again', 'client_msg_id', 'race'))) -> 1 -> 'duplicate')::boolean;
SELECT count(*) = 1 FROM conversations WHERE customer_id = t('cc');
SELECT count(*) = 2 FROM messages WHERE author_customer_id = t('cc')
SQL
wait

# ---------------------------------------------------------------------------
# 5. cd_agent_auth, 6. cd_agent_presence
# ---------------------------------------------------------------------------
check "auth: a live agent by login, any case; skills by name; the hash for the C side" <<'SQL'
SELECT cd_agent_auth('{"login":"ALICE"}') = jsonb_build_object(
    'id', t('alice'), 'login', 'alice', 'name', 'Alice A', 'role', 'agent', 'tier', 1,
    'skills', '{"billing":3}'::jsonb, 'capacity', '{"chat":4,"email":5,"voice":1}'::jsonb,
    'status', 'offline', 'password_hash', '$argon2id$alice')
SQL
check "auth: unknown, deleted or non-string login -> NULL" <<'SQL'
SELECT cd_agent_auth('{"login":"nobody"}') IS NULL AND cd_agent_auth('{"login":"gone"}') IS NULL
   AND cd_agent_auth('{"login":5}') IS NULL AND cd_agent_auth('{}') IS NULL
SQL
check "presence: available -> previous offline, status log" <<'SQL'
SELECT cd_agent_presence(jsonb_build_object('agent', t('alice'), 'status', 'available')) - 'status_at'
       = jsonb_build_object('agent', t('alice'), 'status', 'available', 'previous', 'offline', 'changed', true,
                            'duplicate', false);
SELECT status = 'available' AND status_at > now() - interval '1 minute' FROM agents WHERE id = t('alice');
SELECT count(*) = 1 FROM agent_status_log WHERE agent_id = t('alice') AND status = 'available'
SQL
check "presence: the same status again changes nothing" <<'SQL'
SELECT NOT (cd_agent_presence(jsonb_build_object('agent', t('alice'), 'status', 'available')) -> 'changed')::boolean;
SELECT count(*) = 1 FROM agent_status_log WHERE agent_id = t('alice');
SELECT (cd_agent_presence(jsonb_build_object('agent', t('bob'), 'status', 'available')) ->> 'previous') = 'offline'
   AND (cd_agent_presence(jsonb_build_object('agent', t('sue'), 'status', 'away')) ->> 'status') = 'away'
SQL
check "presence: a retried frame (client_msg_id) answers the same, duplicate" <<'SQL'
SELECT (cd_agent_presence(jsonb_build_object('agent', t('bob'), 'status', 'away', 'client_msg_id', 'p1')) ->> 'previous') = 'available';
SELECT (cd_agent_presence(jsonb_build_object('agent', t('bob'), 'status', 'away', 'client_msg_id', 'p1')) - 'duplicate')
       = (SELECT response - 'duplicate' FROM client_requests WHERE sender_kind = 'agent' AND client_msg_id = 'p1')
   AND (cd_agent_presence(jsonb_build_object('agent', t('bob'), 'status', 'away', 'client_msg_id', 'p1')) -> 'duplicate')::boolean;
SELECT (cd_agent_presence(jsonb_build_object('agent', t('bob'), 'status', 'available')) ->> 'previous') = 'away'
SQL
check_err "presence: bad status" 22023 status 'status: must be "available", "away" or "offline"' <<'SQL'
SELECT cd_agent_presence(jsonb_build_object('agent', t('alice'), 'status', 'busy'))
SQL
check_err "presence: deleted agent" P0002 - 'agent * not found' <<'SQL'
SELECT cd_agent_presence(jsonb_build_object('agent', t('gone'), 'status', 'available'))
SQL
check_err "presence: agent must be an id" 22023 agent 'agent: must be an id' <<'SQL'
SELECT cd_agent_presence('{"agent":"alice","status":"away"}')
SQL

# ---------------------------------------------------------------------------
# 8. Routing: offer -> reject -> re-offer -> accept
# ---------------------------------------------------------------------------
check "offer: create on a queued conversation -> offered, timeline with the reason" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_offer_create(jsonb_build_object('conversation', t('conv_c1'), 'agent', t('alice'),
    'expires_at', to_char((now() + interval '20 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'reason', '{"rule":"longest_idle","score":3}'::jsonb)) j;
SELECT t_set('offer1', (j ->> 'offer')::bigint) IS NOT NULL FROM r;
SELECT (j ->> 'conversation')::bigint = t('conv_c1') AND (j ->> 'agent')::bigint = t('alice')
   AND j -> 'route' ->> 'status' = 'offered' AND (j -> 'route' ->> 'offer')::bigint = t('offer1') FROM r;
SELECT status = 'offered' FROM conversations WHERE id = t('conv_c1');
SELECT state = 'pending' AND expires_at > now() + interval '19 seconds' FROM offers WHERE id = t('offer1');
SELECT data - 'expires_at' = jsonb_build_object('offer', t('offer1'), 'agent', t('alice'),
                                                'reason', '{"rule":"longest_idle","score":3}'::jsonb)
  FROM conversation_events WHERE conversation_id = t('conv_c1') AND kind = 'offered'
SQL
check_err "offer: a conversation that is not queued -> 55000" 55000 - "conversation * is offered, not queued" <<'SQL'
SELECT cd_offer_create(jsonb_build_object('conversation', t('conv_c1'), 'agent', t('bob'), 'expires_at', cd_ms(now()) + 20000))
SQL
check "offer: reject -> queued again, enqueued_at unchanged, timeline rejected" <<'SQL'
CREATE TEMP TABLE before AS SELECT enqueued_at FROM conversations WHERE id = t('conv_c1');
SELECT cd_offer_decide(jsonb_build_object('offer', t('offer1'), 'decision', 'rejected', 'reason', 'busy with a call',
                                          'client_msg_id', 'rej1'))
       = jsonb_build_object('offer', t('offer1'), 'conversation', t('conv_c1'), 'agent', t('alice'), 'state', 'rejected',
                            'customer', t('c1'), 'channel', 'chat', 'queue', t('q_support'), 'status', 'queued',
                            'duplicate', false);
SELECT c.status = 'queued' AND c.enqueued_at = b.enqueued_at AND c.agent_id IS NULL FROM conversations c, before b WHERE c.id = t('conv_c1');
SELECT state = 'rejected' AND reason = 'busy with a call' AND decided_at IS NOT NULL FROM offers WHERE id = t('offer1');
SELECT data = jsonb_build_object('offer', t('offer1'), 'agent', t('alice'), 'reason', 'busy with a call')
  FROM conversation_events WHERE conversation_id = t('conv_c1') AND kind = 'rejected'
SQL
check "offer: the reject frame retried (same client_msg_id) -> same answer, duplicate" <<'SQL'
SELECT (cd_offer_decide(jsonb_build_object('offer', t('offer1'), 'decision', 'rejected', 'client_msg_id', 'rej1'))
        -> 'duplicate')::boolean
SQL
check_err "offer: deciding it again -> 55000" 55000 - 'offer * is already rejected' <<'SQL'
SELECT cd_offer_decide(jsonb_build_object('offer', t('offer1'), 'decision', 'accepted'))
SQL
check "offer: re-offer (epoch ms expiry) and accept -> assigned, timeline accepted + assigned" <<'SQL'
SELECT t_set('offer2', (cd_offer_create(jsonb_build_object('conversation', t('conv_c1'), 'agent', t('bob'),
    'expires_at', cd_ms(now()) + 20000, 'reason', NULL)) ->> 'offer')::bigint) IS NOT NULL;
SELECT (cd_offer_decide(jsonb_build_object('offer', t('offer2'), 'decision', 'accepted')) - 'duplicate')
       = jsonb_build_object('offer', t('offer2'), 'conversation', t('conv_c1'), 'agent', t('bob'), 'state', 'accepted',
                            'customer', t('c1'), 'channel', 'chat', 'queue', t('q_support'), 'status', 'assigned');
SELECT status = 'assigned' AND agent_id = t('bob') AND assigned_at IS NOT NULL FROM conversations WHERE id = t('conv_c1');
SELECT string_agg(kind, ',' ORDER BY id) = 'enqueued,offered,rejected,offered,accepted,assigned'
  FROM conversation_events WHERE conversation_id = t('conv_c1')
SQL
check "offer: expired -> offer_timeout (reason timeout), revoked -> revoked" <<'SQL'
SELECT t_set('offer3', (cd_offer_create(jsonb_build_object('conversation', t('conv_c3'), 'agent', t('alice'),
    'expires_at', cd_ms(now()) + 1000)) ->> 'offer')::bigint) IS NOT NULL;
SELECT cd_offer_decide(jsonb_build_object('offer', t('offer3'), 'decision', 'expired')) ->> 'status' = 'queued';
SELECT reason = 'timeout' FROM offers WHERE id = t('offer3');
SELECT t_set('offer4', (cd_offer_create(jsonb_build_object('conversation', t('conv_c3'), 'agent', t('bob'),
    'expires_at', cd_ms(now()) + 20000)) ->> 'offer')::bigint) IS NOT NULL;
SELECT cd_offer_decide(jsonb_build_object('offer', t('offer4'), 'decision', 'revoked', 'reason', '{"reason":"taken"}'::jsonb)) ->> 'state' = 'revoked';
SELECT reason = 'taken' FROM offers WHERE id = t('offer4');
SELECT string_agg(kind, ',' ORDER BY id) = 'enqueued,offered,offer_timeout,offered,revoked'
  FROM conversation_events WHERE conversation_id = t('conv_c3')
SQL
check_err "offer: expires_at in the past" 22023 expires_at 'expires_at: must not be in the past' <<'SQL'
SELECT cd_offer_create(jsonb_build_object('conversation', t('conv_c3'), 'agent', t('bob'), 'expires_at', '2001-01-01T00:00:00Z'))
SQL
check_err "offer: expires_at not a time" 22023 expires_at 'expires_at: must be an ISO 8601 time*' <<'SQL'
SELECT cd_offer_create(jsonb_build_object('conversation', t('conv_c3'), 'agent', t('bob'), 'expires_at', 'tomorrow'))
SQL
check_err "offer: expires_at impossible date" 22023 expires_at 'expires_at: is not a valid time' <<'SQL'
SELECT cd_offer_create(jsonb_build_object('conversation', t('conv_c3'), 'agent', t('bob'), 'expires_at', '2999-02-31T00:00:00Z'))
SQL
check_err "offer: deleted agent" P0002 - 'agent * not found' <<'SQL'
SELECT cd_offer_create(jsonb_build_object('conversation', t('conv_c3'), 'agent', t('gone'), 'expires_at', cd_ms(now()) + 20000))
SQL
check_err "offer: unknown conversation" P0002 - 'conversation 99999999 not found' <<'SQL'
SELECT cd_offer_create(jsonb_build_object('conversation', 99999999, 'agent', t('bob'), 'expires_at', cd_ms(now()) + 20000))
SQL
check_err "offer: unknown offer" P0002 - 'offer 99999999 not found' <<'SQL'
SELECT cd_offer_decide('{"offer":99999999,"decision":"accepted"}')
SQL
check_err "offer: bad decision" 22023 decision 'decision: must be "accepted", "rejected", "expired" or "revoked"' <<'SQL'
SELECT cd_offer_decide(jsonb_build_object('offer', t('offer1'), 'decision', 'maybe'))
SQL

# ---------------------------------------------------------------------------
# 7. cd_agent_message
# ---------------------------------------------------------------------------
check "agent message: internal note first does not count as first response" <<'SQL'
SELECT (j ->> 'internal')::boolean AND NOT (j ->> 'first_response')::boolean AND j ->> 'channel' = 'chat'
  FROM (SELECT cd_agent_message(jsonb_build_object('agent', t('bob'), 'conversation', t('conv_c1'), 'body', 'note',
                                                   'internal', true)) j) s;
SELECT first_response_at IS NULL FROM conversations WHERE id = t('conv_c1');
SELECT direction = 'internal' FROM messages WHERE body = 'note'
SQL
check "agent message: the assigned agent's first reply -> first_response, direction out" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_agent_message(jsonb_build_object('agent', t('bob'), 'conversation', t('conv_c1'),
    'body', 'Hello, how can I help?', 'client_msg_id', 'a1')) j;
SELECT j - 'message' - 'created_at' = jsonb_build_object('conversation', t('conv_c1'), 'customer', t('c1'), 'channel', 'chat',
           'duplicate', false, 'internal', false, 'first_response', true) FROM r;
SELECT m.direction = 'out' AND m.author_kind = 'agent' AND m.author_agent_id = t('bob') AND m.channel = 'chat'
  FROM messages m, r WHERE m.id = (r.j ->> 'message')::bigint;
SELECT first_response_at IS NOT NULL AND last_message_at = first_response_at FROM conversations WHERE id = t('conv_c1')
SQL
check "agent message: retry with the same client_msg_id -> the original, duplicate, nothing stored" <<'SQL'
CREATE TEMP TABLE n AS SELECT count(*) c FROM messages;
SELECT (j -> 'duplicate')::boolean AND (j -> 'first_response')::boolean
       AND (j ->> 'message')::bigint = (SELECT id FROM messages WHERE client_msg_id = 'a1' AND author_kind = 'agent')
  FROM (SELECT cd_agent_message(jsonb_build_object('agent', t('bob'), 'conversation', t('conv_c1'),
                                                   'body', 'Hello, how can I help?', 'client_msg_id', 'a1')) j) s;
SELECT count(*) = (SELECT c FROM n) FROM messages
SQL
check "agent message: a second reply is not a first response; a supervisor may write" <<'SQL'
SELECT NOT (cd_agent_message(jsonb_build_object('agent', t('bob'), 'conversation', t('conv_c1'), 'body', 'more'))
            -> 'first_response')::boolean;
SELECT (cd_agent_message(jsonb_build_object('agent', t('sue'), 'conversation', t('conv_c1'), 'body', 'supervisor here'))
        ->> 'customer')::bigint = t('c1')
SQL
check_err "agent message: not the assigned agent -> 42501" 42501 - "agent * is not assigned to conversation *" <<'SQL'
SELECT cd_agent_message(jsonb_build_object('agent', t('alice'), 'conversation', t('conv_c1'), 'body', 'hijack'))
SQL
check_err "agent message: blank body" 22023 body 'body: must not be empty' <<'SQL'
SELECT cd_agent_message(jsonb_build_object('agent', t('bob'), 'conversation', t('conv_c1'), 'body', E' \n'))
SQL
check_err "agent message: internal must be a boolean" 22023 internal 'internal: must be true or false' <<'SQL'
SELECT cd_agent_message(jsonb_build_object('agent', t('bob'), 'conversation', t('conv_c1'), 'body', 'x', 'internal', 'yes'))
SQL
check_err "agent message: unknown conversation" P0002 - 'conversation 99999999 not found' <<'SQL'
SELECT cd_agent_message(jsonb_build_object('agent', t('bob'), 'conversation', 99999999, 'body', 'x'))
SQL
check_err "agent message: unknown agent" P0002 - 'agent 99999999 not found' <<'SQL'
SELECT cd_agent_message(jsonb_build_object('agent', 99999999, 'conversation', t('conv_c1'), 'body', 'x'))
SQL

# ---------------------------------------------------------------------------
# Customer messages on an assigned / pending conversation
# ---------------------------------------------------------------------------
check "messages: into an assigned conversation -> agent in the answer, last_message_at set" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c1'), 'body', 'thanks'))) -> 0 j;
SELECT (j ->> 'agent')::bigint = t('bob') AND j ->> 'status' = 'assigned'
       AND (j ->> 'conversation')::bigint = t('conv_c1') FROM r;
SELECT last_message_at = (SELECT created_at FROM messages WHERE body = 'thanks') FROM conversations WHERE id = t('conv_c1')
SQL
check "messages: a pending conversation becomes assigned again and its SLA pause ends" <<'SQL'
UPDATE conversations SET status = 'pending', sla_paused_at = now() - interval '100 seconds' WHERE id = t('conv_c1');
SELECT cd_chat_customer_messages(jsonb_build_array(jsonb_build_object('customer', t('c1'), 'body', 'back'))) -> 0 ->> 'status' = 'assigned';
SELECT status = 'assigned' AND sla_paused_at IS NULL AND sla_paused_total_s BETWEEN 99 AND 110
  FROM conversations WHERE id = t('conv_c1')
SQL

# ---------------------------------------------------------------------------
# Transfer
# ---------------------------------------------------------------------------
check_err "transfer: not the assigned agent -> 42501" 42501 - "agent * is not assigned to conversation *" <<'SQL'
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('alice'), 'queue', 'vip'))
SQL
check_err "transfer: queue and agent both given" 22023 queue 'queue: give either queue or agent' <<'SQL'
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('bob'), 'queue', 'vip', 'agent', 'alice'))
SQL
check_err "transfer: neither given" 22023 queue 'queue: give either queue or agent' <<'SQL'
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('bob')))
SQL
check_err "transfer: unknown queue" 22023 queue 'queue: unknown queue "nowhere"' <<'SQL'
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('bob'), 'queue', 'nowhere'))
SQL
check_err "transfer: unknown agent" 22023 agent 'agent: unknown agent "gone"' <<'SQL'
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('bob'), 'agent', 'gone'))
SQL
check "transfer: to a queue -> queued there, agent cleared, timeline, escalation kept in the priority" <<'SQL'
UPDATE conversations SET priority = priority + 3 WHERE id = t('conv_c1');   -- an escalation: 5 + 3
CREATE TEMP TABLE before AS SELECT enqueued_at FROM conversations WHERE id = t('conv_c1');
CREATE TEMP TABLE r AS SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('bob'),
                                                                          'queue', 'VIP')) j;
SELECT j - 'route' = jsonb_build_object('conversation', t('conv_c1'), 'queue', t('q_vip'), 'agent', NULL,
           'agent_name', NULL, 'from_agent', t('bob'), 'customer', t('c1'), 'channel', 'chat', 'status', 'queued', 'offer', NULL,
           'duplicate', false) FROM r;
SELECT c.status = 'queued' AND c.agent_id IS NULL AND c.queue_id = t('q_vip') AND c.priority = 23
       AND c.enqueued_at > b.enqueued_at FROM conversations c, before b WHERE c.id = t('conv_c1');
SELECT data = jsonb_build_object('by', t('bob'), 'from_agent', t('bob'), 'to_queue', t('q_vip'))
  FROM conversation_events WHERE conversation_id = t('conv_c1') AND kind = 'transferred'
SQL
check_err "transfer: to an offline agent -> 55000" 55000 - 'agent alice is offline' <<'SQL'
UPDATE agents SET status = 'offline' WHERE id = t('alice');
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('sue'), 'agent', 'alice'))
SQL
check "transfer: to an agent (by a supervisor, while offered) -> assigned to that agent at once, offer revoked" <<'SQL'
UPDATE agents SET status = 'away' WHERE id = t('alice');
SELECT t_set('offer5', (cd_offer_create(jsonb_build_object('conversation', t('conv_c1'), 'agent', t('bob'),
    'expires_at', cd_ms(now()) + 20000)) ->> 'offer')::bigint) IS NOT NULL;
CREATE TEMP TABLE r AS SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('sue'),
                                                                          'agent', 'Alice')) j;
SELECT (j ->> 'agent')::bigint = t('alice') AND j ->> 'agent_name' = 'Alice A' AND (j ->> 'queue')::bigint = t('q_vip')
       AND j ->> 'status' = 'assigned'
       AND j -> 'offer' = jsonb_build_object('offer', t('offer5'), 'agent', t('bob'))
       AND (j -> 'route' ->> 'agent')::bigint = t('alice') FROM r;
SELECT status = 'assigned' AND agent_id = t('alice') AND target_agent_id IS NULL AND assigned_at IS NOT NULL
  FROM conversations WHERE id = t('conv_c1');
SELECT state = 'revoked' AND reason = 'cancelled' FROM offers WHERE id = t('offer5');
SELECT data = jsonb_build_object('by', t('sue'), 'from_agent', NULL, 'to_agent', t('alice'))
  FROM conversation_events WHERE conversation_id = t('conv_c1') AND kind = 'transferred' ORDER BY id DESC LIMIT 1;
SELECT data = jsonb_build_object('agent', t('alice'), 'reason', 'transfer')
  FROM conversation_events WHERE conversation_id = t('conv_c1') AND kind = 'assigned' ORDER BY id DESC LIMIT 1
SQL
check "transfer: to the agent it already has -> nothing recorded, same answer" <<'SQL'
CREATE TEMP TABLE n0 AS SELECT count(*) n FROM conversation_events WHERE conversation_id = t('conv_c1');
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('sue'),
                                                   'agent', t('alice'))) ->> 'status' = 'assigned';
SELECT count(*) = (SELECT n FROM n0) FROM conversation_events WHERE conversation_id = t('conv_c1');
UPDATE agents SET status = 'available' WHERE id = t('alice');   -- as before these checks
SELECT true
SQL

# ---------------------------------------------------------------------------
# Router snapshot (before resolving anything)
# ---------------------------------------------------------------------------
check "snapshot: queues with skill ids and min levels, priority, overflow" <<'SQL'
SELECT jsonb_path_query_first(s, '$.queues[*] ? (@.name == "support")')
       = jsonb_build_object('id', t('q_support'), 'name', 'support',
                            'skills', jsonb_build_object(t('sk_billing')::text, 2, t('sk_spanish')::text, 1),
                            'priority', 5, 'overflow', '[{"after_s":60,"tier":2}]'::jsonb,
                            'service_level_s', 20, 'sla_policy', t('sla'))
  FROM (SELECT cd_router_snapshot() s) x;
SELECT jsonb_array_length(cd_router_snapshot() -> 'queues') = 3
SQL
check "snapshot: live agents with skill ids, capacity, status" <<'SQL'
SELECT jsonb_path_query_first(s, '$.agents[*] ? (@.login == "alice")') - 'status_at'
       = jsonb_build_object('id', t('alice'), 'login', 'alice', 'role', 'agent', 'tier', 1,
                            'skills', jsonb_build_object(t('sk_billing')::text, 3),
                            'capacity', '{"chat":4,"email":5,"voice":1}'::jsonb, 'status', 'available')
  FROM (SELECT cd_router_snapshot() s) x;
SELECT NOT (s -> 'agents') @> jsonb_build_array(jsonb_build_object('id', t('gone')))
       AND jsonb_array_length(s -> 'agents') = 3 FROM (SELECT cd_router_snapshot() s) x
SQL
check "snapshot: every queued / offered / assigned conversation, times in epoch ms" <<'SQL'
SELECT t_set('offer7', (cd_offer_create(jsonb_build_object('conversation', t('conv_c3'), 'agent', t('alice'),
    'expires_at', cd_ms(now()) + 20000)) ->> 'offer')::bigint) IS NOT NULL;
CREATE TEMP TABLE s AS SELECT cd_router_snapshot() s;
SELECT (SELECT array_agg((e ->> 'id')::bigint ORDER BY (e ->> 'id')::bigint) FROM s, jsonb_array_elements(s -> 'conversations') e)
       = (SELECT array_agg(id ORDER BY id) FROM conversations WHERE status IN ('queued', 'offered', 'assigned', 'pending'));
SELECT e - 'last_agent' - 'last_agent_at' - 'rejected' - 'sla' - 'created_at'
       = jsonb_build_object('id', c.id, 'queue', t('q_vip'), 'channel', 'chat', 'tier', 1, 'priority', 20,
                            'enqueued_at', cd_ms(c.enqueued_at), 'customer', t('c3'), 'status', 'offered',
                            'agent', NULL, 'target_agent', NULL, 'offer', t('offer7'), 'offer_agent', t('alice'),
                            'offer_expires_at', (SELECT cd_ms(expires_at) FROM offers WHERE id = t('offer7')))
       AND e -> 'rejected' = jsonb_build_array(jsonb_build_object('agent', t('alice'),
                                'at', (SELECT cd_ms(decided_at) FROM offers WHERE id = t('offer3'))))
       AND (e ->> 'enqueued_at')::bigint BETWEEN cd_ms(now()) - 600000 AND cd_ms(now())
  FROM s, jsonb_array_elements(s -> 'conversations') e, conversations c
 WHERE (e ->> 'id')::bigint = t('conv_c3') AND c.id = t('conv_c3');
SELECT e ->> 'status' = 'assigned' AND (e ->> 'agent')::bigint = t('alice') AND e -> 'offer' = 'null'::jsonb
       AND e -> 'sla' ->> 'policy' = t('sla')::text
  FROM s, jsonb_array_elements(s -> 'conversations') e WHERE (e ->> 'id')::bigint = t('conv_c1');
SELECT abs((s ->> 'now')::bigint - cd_ms(now())) < 60000 FROM s
SQL

# ---------------------------------------------------------------------------
# Resolve
# ---------------------------------------------------------------------------
check_err "resolve: not the assigned agent -> 42501" 42501 - "agent * is not assigned to conversation *" <<'SQL'
SELECT cd_conversation_resolve(jsonb_build_object('conversation', t('conv_c1'), 'agent', t('bob'), 'disposition', 'x'))
SQL
check "resolve: by the assigned agent -> resolved, disposition, timeline" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_conversation_resolve(jsonb_build_object('conversation', t('conv_c1'), 'agent', t('alice'),
                                                                         'disposition', 'billing question')) j;
SELECT j - 'resolved_at' = jsonb_build_object('conversation', t('conv_c1'), 'agent', t('alice'), 'customer', t('c1'),
           'channel', 'chat', 'status', 'resolved', 'offer', NULL, 'duplicate', false) FROM r;
SELECT status = 'resolved' AND resolved_at IS NOT NULL AND disposition = 'billing question'
  FROM conversations WHERE id = t('conv_c1');
SELECT data = jsonb_build_object('by', t('alice'), 'disposition', 'billing question')
  FROM conversation_events WHERE conversation_id = t('conv_c1') AND kind = 'resolved'
SQL
check "resolve: again -> same answer, nothing new" <<'SQL'
SELECT cd_conversation_resolve(jsonb_build_object('conversation', t('conv_c1'), 'agent', t('alice'))) ->> 'status' = 'resolved';
SELECT count(*) = 1 FROM conversation_events WHERE conversation_id = t('conv_c1') AND kind = 'resolved'
SQL
check "resolve: a supervisor resolves an offered conversation -> its offer is revoked" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_conversation_resolve(jsonb_build_object('conversation', t('conv_c3'), 'agent', t('sue'))) j;
SELECT j ->> 'status' = 'resolved' AND j -> 'offer' = jsonb_build_object('offer', t('offer7'), 'agent', t('alice')) FROM r;
SELECT state = 'revoked' FROM offers WHERE id = t('offer7')
SQL
check "resolve: by the system (no agent) works on any conversation" <<'SQL'
SELECT cd_conversation_resolve(jsonb_build_object('conversation', (SELECT id FROM conversations WHERE customer_id = t('c4')),
                                                  'agent', NULL, 'disposition', 'auto')) ->> 'status' = 'resolved'
SQL
check "messages: after resolve the next message opens a new conversation; route names the last agent" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_chat_customer_messages(jsonb_build_array(
    jsonb_build_object('customer', t('c1'), 'body', 'one more thing'))) -> 0 j;
SELECT (j -> 'opened')::boolean AND (j ->> 'conversation')::bigint <> t('conv_c1')
       AND (j -> 'route' ->> 'last_agent')::bigint = t('alice')
       AND (j -> 'route' ->> 'last_agent_at')::bigint = (SELECT cd_ms(resolved_at) FROM conversations WHERE id = t('conv_c1'))
  FROM r;
SELECT t_set('conv_c1b', (j ->> 'conversation')::bigint) IS NOT NULL FROM r;
SELECT (e ->> 'last_agent')::bigint = t('alice')
  FROM jsonb_array_elements(cd_router_snapshot() -> 'conversations') e WHERE (e ->> 'id')::bigint = t('conv_c1b')
SQL
check_err "transfer: a resolved conversation -> 55000" 55000 - 'conversation * is resolved' <<'SQL'
SELECT cd_conversation_transfer(jsonb_build_object('conversation', t('conv_c1'), 'by_agent', t('sue'), 'queue', 'vip'))
SQL

# ---------------------------------------------------------------------------
# 3. cd_chat_customer_close
# ---------------------------------------------------------------------------
check_err "close: someone else's conversation -> 42501" 42501 - 'conversation * does not belong to customer *' <<'SQL'
SELECT cd_chat_customer_close(jsonb_build_object('customer', t('c2'), 'conversation', t('conv_c1b')))
SQL
check "close: the customer's open conversation (offered: the offer is revoked)" <<'SQL'
SELECT t_set('offer8', (cd_offer_create(jsonb_build_object('conversation', t('conv_c1b'), 'agent', t('bob'),
    'expires_at', cd_ms(now()) + 20000)) ->> 'offer')::bigint) IS NOT NULL;
SELECT cd_chat_customer_close(jsonb_build_object('customer', t('c1'), 'conversation', t('conv_c1b'), 'client_msg_id', 'close-1'))
       = jsonb_build_object('conversation', t('conv_c1b'), 'status', 'closed', 'previous', 'offered', 'agent', NULL,
                            'customer', t('c1'), 'channel', 'chat',
                            'offer', jsonb_build_object('offer', t('offer8'), 'agent', t('bob')),
                            'survey', true, 'duplicate', false);
SELECT status = 'closed' AND closed_at IS NOT NULL FROM conversations WHERE id = t('conv_c1b');
SELECT state = 'revoked' FROM offers WHERE id = t('offer8');
SELECT data = '{"by":"customer","previous":"offered","answered":false}'::jsonb
  FROM conversation_events WHERE conversation_id = t('conv_c1b') AND kind = 'closed'
SQL
check "close: the frame retried -> the same answer, duplicate" <<'SQL'
SELECT (j -> 'duplicate')::boolean AND j ->> 'previous' = 'offered'
  FROM (SELECT cd_chat_customer_close(jsonb_build_object('customer', t('c1'), 'conversation', t('conv_c1b'),
                                                         'client_msg_id', 'close-1')) j) s
SQL
check "close: an already closed one -> idempotent, no second event" <<'SQL'
SELECT cd_chat_customer_close(jsonb_build_object('customer', t('c1'), 'conversation', t('conv_c1b'))) ->> 'status' = 'closed';
SELECT count(*) = 1 FROM conversation_events WHERE conversation_id = t('conv_c1b') AND kind = 'closed'
SQL
check "close: without a conversation -> the latest open chat conversation; a resolved one closes too" <<'SQL'
SELECT (cd_chat_customer_close(jsonb_build_object('customer', t('c5'))) ->> 'conversation')::bigint
       = (SELECT id FROM conversations WHERE customer_id = t('c5'));
SELECT status = 'closed' FROM conversations WHERE customer_id = t('c5');
SELECT cd_chat_customer_close(jsonb_build_object('customer', t('c1'), 'conversation', t('conv_c1'))) ->> 'previous' = 'resolved';
SELECT status = 'closed' AND resolved_at IS NOT NULL FROM conversations WHERE id = t('conv_c1')
SQL
check_err "close: no open conversation -> P0002" P0002 - 'customer * has no open conversation' <<'SQL'
SELECT cd_chat_customer_close(jsonb_build_object('customer', t('c1')))
SQL
check_err "close: unknown conversation -> P0002" P0002 - 'conversation 99999999 not found' <<'SQL'
SELECT cd_chat_customer_close(jsonb_build_object('customer', t('c1'), 'conversation', 99999999))
SQL
check_err "close: customer must be an id" 22023 customer 'customer: is required' <<'SQL'
SELECT cd_chat_customer_close('{}')
SQL
check "resolve: after the customer closed -> resolved_at and disposition recorded, stays closed" <<'SQL'
SELECT cd_conversation_resolve(jsonb_build_object('conversation', t('conv_c1b'), 'agent', NULL, 'disposition', 'left'))
       ->> 'status' = 'closed';
SELECT status = 'closed' AND resolved_at IS NOT NULL AND disposition = 'left' FROM conversations WHERE id = t('conv_c1b')
SQL

# ---------------------------------------------------------------------------
# 4. cd_chat_survey
# ---------------------------------------------------------------------------
check "survey: recorded, timeline survey, close then says no survey is due" <<'SQL'
CREATE TEMP TABLE r AS SELECT cd_chat_survey(jsonb_build_object('customer', t('c1'), 'conversation', t('conv_c1'),
    'csat', 5, 'nps', 10, 'ces', NULL, 'comment', 'great')) j;
SELECT t_set('survey1', (j ->> 'survey')::bigint) IS NOT NULL AND (j ->> 'conversation')::bigint = t('conv_c1') FROM r;
SELECT customer_id = t('c1') AND csat = 5 AND nps = 10 AND ces IS NULL AND comment = 'great'
  FROM surveys WHERE id = t('survey1');
SELECT data = jsonb_build_object('survey', t('survey1'), 'csat', 5, 'nps', 10, 'ces', NULL)
  FROM conversation_events WHERE conversation_id = t('conv_c1') AND kind = 'survey';
SELECT NOT (cd_chat_customer_close(jsonb_build_object('customer', t('c1'), 'conversation', t('conv_c1'))) -> 'survey')::boolean
SQL
check "survey: one score is enough (ces)" <<'SQL'
SELECT (cd_chat_survey(jsonb_build_object('customer', t('c1'), 'conversation', t('conv_c1b'), 'ces', 7)) ->> 'survey') IS NOT NULL
SQL
check_err "survey: a second one -> 23505" 23505 conversation 'conversation * already has a survey' <<'SQL'
SELECT cd_chat_survey(jsonb_build_object('customer', t('c1'), 'conversation', t('conv_c1'), 'csat', 1))
SQL
check_err "survey: no score" 22023 csat 'csat: at least one of csat, nps, ces is required' <<'SQL'
SELECT cd_chat_survey(jsonb_build_object('customer', t('c3'), 'conversation', t('conv_c3'), 'comment', 'meh'))
SQL
check_err "survey: csat out of range" 22023 csat 'csat: must be between 1 and 5' <<'SQL'
SELECT cd_chat_survey(jsonb_build_object('customer', t('c3'), 'conversation', t('conv_c3'), 'csat', 6))
SQL
check_err "survey: nps not an integer" 22023 nps 'nps: must be an integer' <<'SQL'
SELECT cd_chat_survey(jsonb_build_object('customer', t('c3'), 'conversation', t('conv_c3'), 'nps', 9.5))
SQL
check_err "survey: ces out of range" 22023 ces 'ces: must be between 1 and 7' <<'SQL'
SELECT cd_chat_survey(jsonb_build_object('customer', t('c3'), 'conversation', t('conv_c3'), 'ces', 0))
SQL
check_err "survey: someone else's conversation -> 42501" 42501 - 'conversation * does not belong to customer *' <<'SQL'
SELECT cd_chat_survey(jsonb_build_object('customer', t('c2'), 'conversation', t('conv_c3'), 'csat', 3))
SQL
check_err "survey: unknown conversation -> P0002" P0002 - 'conversation 99999999 not found' <<'SQL'
SELECT cd_chat_survey(jsonb_build_object('customer', t('c2'), 'conversation', 99999999, 'csat', 3))
SQL

# ---------------------------------------------------------------------------
# Deleting an agent while it holds an offer (0002's cd_admin_delete)
# ---------------------------------------------------------------------------
check "admin delete of an agent with a pending offer puts the conversation back in its queue" <<'SQL'
SELECT t_set('temp_agent', (cd_admin_create('agents', '{"login":"temp","password_hash":"$argon2id$temp"}') ->> 'id')::bigint) IS NOT NULL;
SELECT t_set('conv_c2', (SELECT id FROM conversations WHERE customer_id = t('c2'))) IS NOT NULL;
SELECT t_set('offer9', (cd_offer_create(jsonb_build_object('conversation', t('conv_c2'), 'agent', t('temp_agent'),
    'expires_at', cd_ms(now()) + 20000)) ->> 'offer')::bigint) IS NOT NULL;
SELECT (cd_admin_delete('agents', 'temp') ->> 'deleted')::boolean;
SELECT state = 'revoked' FROM offers WHERE id = t('offer9');
SELECT status = 'queued' FROM conversations WHERE id = t('conv_c2');
SELECT data = jsonb_build_object('offer', t('offer9'), 'agent', t('temp_agent'), 'reason', 'cancelled')
  FROM conversation_events WHERE conversation_id = t('conv_c2') AND kind = 'revoked'
SQL

# ---------------------------------------------------------------------------
# Throughput of the group commit (information, not pass/fail)
# ---------------------------------------------------------------------------
if (( BENCH )); then
    # 100 calls of 100 items from 100 different new customers (each opens a
    # conversation), then 3 x 100 calls into those open conversations, each
    # call its own transaction as in the daemon; one connection.  Then 100
    # more calls split over two connections at once (disjoint customers), as
    # the daemon's pool would run them.  fsync is off: this is the functions'
    # CPU cost, not the disk's.  The machine may be shared: treat as a rough
    # figure.
    out=$(psqlc -c "INSERT INTO customers (name) SELECT 'bench' FROM generate_series(1, 10000)" \
                -c "SELECT t_set('bench0', min(id) - 1) FROM customers WHERE name = 'bench'" 2>&1 >/dev/null)
    [[ -z $out ]] || echo "# bench setup: $out"
    for phase in new ex1 ex2 ex3 par; do
        psqlc -c "SELECT format('SELECT length(cd_chat_customer_messages(%L::jsonb)::text);',
                    jsonb_agg(jsonb_build_object('customer', t('bench0') + b * 100 + i,
                                                 'body', 'Hello, I have a question about invoice ' || b || '-' || i,
                                                 'client_msg_id', '$phase-' || i, 'queue', 'support',
                                                 'default_queue', NULL) ORDER BY i))
                    FROM generate_series(0, 99) b, generate_series(1, 100) i GROUP BY b ORDER BY b" \
            >"$SBDIR.$phase.sql" 2>&1
    done
    head -n 50 "$SBDIR.par.sql" >"$SBDIR.par1.sql"
    tail -n 50 "$SBDIR.par.sql" >"$SBDIR.par2.sql"
    ms() { date +%s%N | cut -c1-13; }
    declare -A took
    for phase in new ex1 ex2 ex3; do
        t0=$(ms)
        out=$(psqlc -f "$SBDIR.$phase.sql" 2>&1 >/dev/null)
        took[$phase]=$(( $(ms) - t0 ))
        [[ -z $out ]] || echo "# bench $phase: $out" | head -n 3
    done
    t0=$(ms)
    psqlc -f "$SBDIR.par1.sql" >/dev/null 2>"$SBDIR.par1.err" & p1=$!
    psqlc -f "$SBDIR.par2.sql" >/dev/null 2>"$SBDIR.par2.err" & p2=$!
    BG_PIDS+=("$p1" "$p2")
    wait "$p1" "$p2"
    took[par]=$(( $(ms) - t0 ))
    cat "$SBDIR.par1.err" "$SBDIR.par2.err" | head -n 3
    rm -f "$SBDIR.par1.err" "$SBDIR.par2.err"
    n_ok=$(q "SELECT count(*) FROM messages m JOIN customers c ON c.id = m.author_customer_id WHERE c.name = 'bench'")
    rate() { echo $(( $1 * 1000 / ($2 > 0 ? $2 : 1) )); }
    ex_ms=$(( took[ex1] + took[ex2] + took[ex3] ))
    echo "# throughput of cd_chat_customer_messages (100 items per call; fsync off; load: $(cut -d' ' -f1-3 /proc/loadavg)):"
    echo "#   opening conversations, 1 connection:  100 calls in ${took[new]} ms -> $(rate 10000 "${took[new]}") items/s"
    echo "#   existing conversations, 1 connection: 300 calls in ${ex_ms} ms -> $(rate 30000 "$ex_ms") items/s" \
         "(${took[ex1]} / ${took[ex2]} / ${took[ex3]} ms per 100 calls)"
    echo "#   existing conversations, 2 connections: 100 calls in ${took[par]} ms -> $(rate 10000 "${took[par]}") items/s"
    echo "#   messages stored: ${n_ok} (expected 50000)"
fi

# ---------------------------------------------------------------------------
echo "# $PASSES passed, $FAILS failed"
if (( FAILS > 0 )); then
    printf '# failed: %s\n' "${FAILED[@]}"
    exit 1
fi
exit 0
