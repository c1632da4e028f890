#!/usr/bin/env bash
# check_events.sh -- the set-based group commit of POST /v1/events (sql/0015,
# cd_api_events_fast) against the exact item-by-item path (cd_api_events_exact)
# on a throwaway PostgreSQL.
#
#   tests/sql/check_events.sh [-v]
#
# Two databases are made from one template with the same customers, identities
# (one customer merged into another), queues, an agent and conversations in every
# state.  The same batches of events go through cd_api_events_batch in database
# "fast" and through cd_api_events_exact in database "exact"; every answer must be
# the same (times left out), each batch must take the path it should (the fast one
# for plainly valid batches), and afterwards every table the events write must hold
# the same rows in both.  Prints PASS/FAIL per check; exits 1 when any failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=lib.sh
source "$ROOT/tests/sql/lib.sh"
sql_check_start events "$@"
BASE=$CONN
migrate_daemon_style 0015_events_fast.sql

# fixtures in the template: queues, an agent, customers, conversations in every state
out=$(psqlc 2>&1 <<'SQL'
CREATE FUNCTION t_norm(p jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    -- an answer without its times (the two databases run at different moments)
    SELECT coalesce(jsonb_agg(CASE WHEN e #> '{result,route}' IS NULL OR e #> '{result,route}' = 'null'
                                   THEN e
                                   ELSE jsonb_set(e, '{result,route}',
                                                  (e #> '{result,route}') - 'created_at' - 'enqueued_at'
                                                  - 'last_agent_at' - 'sla') END
                              ORDER BY n), '[]')
      FROM jsonb_array_elements(p) WITH ORDINALITY AS x(e, n) $$;
SELECT cd_admin_create('queues', '{"name":"support","priority":5}');
SELECT cd_admin_create('queues', '{"name":"SMS-Line","priority":3}');
SELECT cd_admin_create('queues', '{"name":"vip","priority":9}');
SELECT cd_admin_create('agents', '{"login":"alice","password_hash":"$argon2id$alice"}');
-- held identities: Ann (phone, email), Ben (external), Cy merged into Ann
INSERT INTO customers (id, name) OVERRIDING SYSTEM VALUE VALUES (101, 'Ann'), (102, NULL), (103, 'Cy');
INSERT INTO customer_identities (customer_id, kind, value) VALUES
    (101, 'phone', '+15550001001'), (101, 'email', 'ann@example.com'),
    (102, 'external', 'ben-ext'), (103, 'phone', '+15550001003');
UPDATE customers SET merged_into = 101 WHERE id = 103;
-- Dee: an open sms conversation waiting on her (pending, no agent); Eve: pending with an
-- agent; Fay: a resolved one; Gus: an assigned whatsapp one
INSERT INTO customers (id, name) OVERRIDING SYSTEM VALUE VALUES (104, 'Dee'), (105, 'Eve'), (106, 'Fay'), (107, 'Gus');
INSERT INTO customer_identities (customer_id, kind, value) VALUES
    (104, 'phone', '+15550001004'), (105, 'phone', '+15550001005'), (106, 'phone', '+15550001006'),
    (107, 'external', 'gus-ext');
INSERT INTO conversations (id, customer_id, channel, status, queue_id, agent_id, subject)
OVERRIDING SYSTEM VALUE VALUES
    (201, 104, 'sms', 'pending', 1, NULL, NULL),
    (202, 105, 'sms', 'pending', 1, 1, 'Old subject'),
    (203, 106, 'sms', 'resolved', 1, 1, NULL),
    (204, 107, 'whatsapp', 'assigned', 2, 1, NULL);
INSERT INTO messages (id, conversation_id, channel, direction, author_kind, author_customer_id, body, external_id)
OVERRIDING SYSTEM VALUE VALUES (301, 204, 'whatsapp', 'in', 'customer', 107, 'stored before', 'wa-stored');
SELECT setval(pg_get_serial_sequence('customers', 'id'), 1000);
SELECT setval(pg_get_serial_sequence('conversations', 'id'), 1000);
SELECT setval(pg_get_serial_sequence('messages', 'id'), 1000);
SQL
)
if [[ $out == *ERROR* ]]; then fail "fixtures" "$out"; echo "# cannot go on"; exit 1; fi
pass "fixtures: queues, an agent, customers (one merged), conversations in every state"

DBNAME=$(psqlc -c 'SELECT current_database()')
out=$(psqlc -c "CREATE DATABASE ev_fast TEMPLATE $DBNAME" -c "CREATE DATABASE ev_exact TEMPLATE $DBNAME" \
            -c "CREATE DATABASE ev_noq TEMPLATE $DBNAME" 2>&1)
[[ -z $out ]] || { fail "template copies" "$out"; exit 1; }
FAST="$BASE dbname=ev_fast"
EXACT="$BASE dbname=ev_exact"
CONN="$BASE dbname=ev_noq" q 'DELETE FROM messages; DELETE FROM conversations; DELETE FROM queues' >/dev/null

# batch NAME PATH JSON -- PATH: fast (cd_api_events_fast must take it) or exact (it must not)
batch() {
    local name=$1 want=$2 json=$3 got_f got_e path
    json=${json//\'/\'\'}
    got_f=$(CONN=$FAST q "SELECT (x IS NOT NULL)::text || ' ' || t_norm(coalesce(x, cd_api_events_exact('$json')))::text
                            FROM (SELECT cd_api_events_fast('$json') x) s")
    got_e=$(CONN=$EXACT q "SELECT t_norm(cd_api_events_exact('$json'))::text")
    path=${got_f%% *}
    got_f=${got_f#* }
    if [[ $path == true && $want == fast ]] || [[ $path == false && $want == exact ]]; then
        pass "$name: takes the $want path"
    else
        fail "$name: takes the $want path" "fast path took it: $path; answer: $got_f"
    fi
    if [[ $got_f == "$got_e" ]]; then
        pass "$name: same answers"
    else
        fail "$name: same answers" "batch: $got_f
exact: $got_e"
    fi
}

batch "new customers, new conversations, queue by name, id and default" fast '[
 {"channel":"sms","from":{"phone":"+1 (555) 000-2001","name":"Hal"},"body":"one","external_id":"n1","default_queue":"sms-line"},
 {"channel":"sms","from":{"email":" Ivy@Example.COM "},"body":"two","external_id":"n2","queue":"VIP","subject":"Help"},
 {"channel":"web","from":{"external_id":"jo-ext"},"body":"three","queue":3},
 {"channel":"sms","from":{"phone":"+15550002001"},"body":"four, Hal again","external_id":"n4","subject":"Late subject"},
 {"channel":"api","from":{"phone":"+15550002002","email":"kim@example.com","external_id":"kim"},"body":"five","default_queue":"nope"}]'

batch "held identities: open, pending, resolved, merged, several channels" fast '[
 {"channel":"sms","from":{"phone":"+15550001001","name":"Ann B"},"body":"ann sms","external_id":"h1"},
 {"channel":"sms","from":{"email":"ANN@example.com"},"body":"ann again","external_id":"h2"},
 {"channel":"whatsapp","from":{"phone":"+15550001001"},"body":"ann whatsapp","external_id":"h3"},
 {"channel":"sms","from":{"external_id":"ben-ext","name":"Ben"},"body":"ben","subject":"Ben subject"},
 {"channel":"sms","from":{"phone":"+15550001003"},"body":"cy, merged into ann","external_id":"h5"},
 {"channel":"sms","from":{"phone":"+15550001004"},"body":"dee back","external_id":"h6","subject":"Dee"},
 {"channel":"sms","from":{"phone":"+15550001005"},"body":"eve back","external_id":"h7","subject":"New"},
 {"channel":"sms","from":{"phone":"+15550001006"},"body":"fay again after resolve","external_id":"h8"},
 {"channel":"whatsapp","from":{"external_id":"gus-ext"},"body":"gus","external_id":"h9"}]'

batch "a retry of a stored message among new ones" fast '[
 {"channel":"whatsapp","from":{"external_id":"gus-ext"},"body":"stored before","external_id":"wa-stored"},
 {"channel":"sms","from":{"phone":"+15550001001"},"body":"n1 on another channel id","external_id":"n1x"},
 {"channel":"sms","from":{"phone":"+15550002001"},"body":"retry","external_id":"n1"}]'

batch "held and new identities in one item: attached, item by item" fast '[
 {"channel":"sms","from":{"phone":"+15550001004","email":"dee@example.com"},"body":"dee with mail","external_id":"m1"},
 {"channel":"sms","from":{"email":"dee@example.com"},"body":"dee by mail","external_id":"m2"},
 {"channel":"sms","from":{"external_id":"ben-ext","phone":"+15550001001"},"body":"ben with ann phone","external_id":"m3"}]'

batch "blank optional strings are absent" fast '[
 {"channel":"sms","from":{"phone":"+15550001001","email":"  ","external_id":"","name":" "},"body":" x ","external_id":"  ","subject":"","queue":null}]'

batch "an invalid item: the exact path answers every item" exact '[
 {"channel":"sms","from":{"phone":"+15550001001"},"body":"fine","external_id":"e1"},
 {"channel":"fax","from":{"phone":"+15550001001"},"body":"bad channel"},
 {"channel":"sms","from":{"phone":"12"},"body":"bad phone"},
 {"channel":"sms","from":{"email":"not-an-address"},"body":"bad email"},
 {"channel":"sms","from":{},"body":"no identity"},
 {"channel":"sms","from":{"phone":"+15550001001"},"body":"   "},
 {"channel":"sms","from":{"phone":"+15550001001"},"body":"x","subject":7},
 "not an object"]'

batch "the same external_id twice in one batch" exact '[
 {"channel":"sms","from":{"phone":"+15550001001"},"body":"first","external_id":"twice"},
 {"channel":"sms","from":{"phone":"+15550001005"},"body":"second","external_id":"twice"}]'

batch "an unknown queue (only fails when it opens a conversation)" exact '[
 {"channel":"sms","from":{"phone":"+15550001001"},"body":"open conversation","queue":"nope"},
 {"channel":"social","from":{"phone":"+15550001001"},"body":"new conversation","queue":"nope"}]'

batch "long fields at their limits" fast "[
 {\"channel\":\"sms\",\"from\":{\"phone\":\"+15550003001\",\"name\":\"$(printf 'n%.0s' {1..200})\"},\"body\":\"$(printf 'b%.0s' {1..5000})\",\"external_id\":\"$(printf 'e%.0s' {1..200})\",\"subject\":\"$(printf 's%.0s' {1..500})\"}]"

batch "a field over its limit" exact "[
 {\"channel\":\"sms\",\"from\":{\"phone\":\"+15550003002\"},\"body\":\"x\",\"external_id\":\"$(printf 'e%.0s' {1..201})\"}]"

# the rows both paths left behind
tables() {
    CONN=$1 q "
SELECT 'customer', id, name, merged_into FROM customers ORDER BY id;
SELECT 'identity', customer_id, kind, value, verified FROM customer_identities ORDER BY kind, value;
SELECT 'conversation', id, customer_id, channel, status, queue_id, agent_id, tier, priority, subject,
       sla_policy_id, external_ref, enqueued_at IS NOT NULL, last_message_at IS NOT NULL
  FROM conversations ORDER BY id;
SELECT 'message', id, conversation_id, channel, direction, author_kind, author_customer_id, md5(body), external_id
  FROM messages ORDER BY id;
SELECT 'timeline', conversation_id, kind, data FROM conversation_events ORDER BY conversation_id, kind, data::text;
SELECT 'events_log', kind, d - 'created_at' - 'at'
  FROM (SELECT kind, cd_event_data(data, message_id) AS d FROM events_log) e ORDER BY kind, (d - 'created_at' - 'at')::text"
}
tf=$(tables "$FAST")
te=$(tables "$EXACT")
if [[ $tf == "$te" ]]; then
    pass "the same rows in both databases ($(wc -l <<<"$tf") rows compared)"
else
    fail "the same rows in both databases" "$(diff <(echo "$te") <(echo "$tf") | head -20)"
fi

check "fast path: a message to a conversation that is pending on the customer ends the wait" <<SQL
\\c ev_fast
SELECT status = 'queued' AND enqueued_at IS NOT NULL FROM conversations WHERE id = 201;
SELECT status = 'assigned' AND subject = 'Old subject' FROM conversations WHERE id = 202;
SELECT count(*) = 2 FROM conversations WHERE customer_id = 106 AND channel = 'sms'
SQL

# no queue at all: the fast path hands the batch to the exact one, which names the field
out=$(CONN="$BASE dbname=ev_noq" q "SELECT cd_api_events_batch('[{\"channel\":\"sms\",\"from\":{\"phone\":\"+15550001001\"},\"body\":\"x\"}]')::text")
if [[ $out == *'"field": "queue"'*'no queue to route to'* ]] && [[ $(CONN="$BASE dbname=ev_noq" q 'SELECT count(*) FROM messages') == 0 ]]; then
    pass "no queue at all: the item fails with field queue, nothing stored"
else
    fail "no queue at all: the item fails with field queue, nothing stored" "$out"
fi

echo "# $PASSES passed, $FAILS failed"
(( FAILS == 0 )) || { printf '# failed: %s\n' "${FAILED[@]}"; exit 1; }
