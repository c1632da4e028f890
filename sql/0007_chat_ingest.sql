-- 0007_chat_ingest.sql -- a cheaper group commit of customer chat messages.
--
-- cd_chat_customer_messages (0003) ran nine statements per call: parse,
-- locks, retries, open conversations (lookup, then UPDATE), new
-- conversations, messages, then a final SELECT that read every item's
-- conversation again.  Between statements the items travelled as an array
-- of cd_chat_msg_item that was built and unnested four times.  Same
-- signature, same answers; now three statements:
--   1. parse and validate (unchanged),
--   2. the per-customer advisory locks (unchanged),
--   3. ONE statement with data-modifying CTEs for the rest: retries, the
--      UPDATE of the open conversations and the INSERT of new ones (both
--      RETURNING what the answer needs, so conversations are not read
--      again), the messages and the answer.
-- The lock statement stays on its own: statement 3 takes its snapshot after
-- the locks are held, so it sees what a concurrent batch of the same customer
-- committed (its conversation, its client_msg_id).

-- cd_chat_customer_messages(p) -> array, one result per item, same order.
-- Input: an array of items from many sessions:
--   {customer (id), body, client_msg_id (string|null), queue (name|id|null),
--    default_queue (name|null: config routing.default_queue)}
-- Per item, either
--   {ok:true, message, conversation, customer, duplicate, opened, queue, agent,
--    status, created_at, route}
--     customer   the live customer id (a merged customer's survivor)
--     duplicate  a retry with the same client_msg_id from the same customer
--                (earlier call, or an earlier item of this call): the ORIGINAL
--                message / conversation ids; nothing is recorded for it
--     opened     this message opened the conversation (status queued, put in
--                its queue); route then holds what the router needs besides
--                queue / customer: {tier, priority, enqueued_at (epoch ms),
--                last_agent, last_agent_at (epoch ms)} (cd_route_info's
--                meaning); else route is null
--     queue, agent, status  the conversation's, after this call (agent: to
--                deliver the message to; status: a `pending` conversation
--                becomes `assigned` again, or `queued` if it has no agent)
--     created_at the message's time (ISO 8601 UTC, ms)
-- or {ok:false, code:"invalid"|"not_found", field, message} for a bad item:
--   item not an object, customer not an id, body not a string / blank / over
--   65536 bytes, client_msg_id not 1..200 chars, unknown queue (invalid);
--   unknown customer (not_found); no queue exists at all when a conversation
--   must be opened ("no queue to route to", invalid).  Bad items never fail
--   the others and raise nothing.
-- Behaviour: a message goes into the customer's open chat conversation (the
--   latest one not resolved/closed/abandoned).  Without one, the customer's
--   first item in this call opens one: channel chat, status queued, queue =
--   the item's queue, else default_queue, else (empty, or naming no queue)
--   the queue with the lowest id; tier 1; priority and sla_policy from the
--   queue; enqueued_at now; timeline `enqueued` {queue, reason:"first
--   message"}.  Several messages of one customer in one call go into ONE
--   conversation, in input order (ascending message ids).  Messages:
--   channel chat, direction in, author_kind customer.  The conversation's
--   last_message_at is set.  A `pending` conversation (waiting on the
--   customer) becomes assigned (or queued) again and its SLA pause ends.
--   SLA due times are NOT computed here (the C sla module owns them).
-- The whole call is one transaction.  The work is set-based: three
-- statements per call whatever the number of items (parse; locks; one
-- statement with data-modifying CTEs for the rest, which takes its snapshot
-- once the locks are held); per-item lookups are index probes (LATERAL ...
-- LIMIT 1, id = ANY (ARRAY(...))), never joins that could turn into scans of
-- messages / conversations when statistics are stale.  The answer is built
-- from what the UPDATE / INSERT of conversations RETURN (a data-modifying
-- CTE's changes are invisible to reads of the same statement): only the
-- conversation of a retry that this call did not touch is read.
CREATE OR REPLACE FUNCTION cd_chat_customer_messages(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_items  cd_chat_msg_item[];
    v_seq    regclass := pg_get_serial_sequence('messages', 'id')::regclass;
    v_now    timestamptz := now();
    v_now_ts text := cd_ts(now());
    v_out    text;
BEGIN
    IF jsonb_typeof(p) IS DISTINCT FROM 'array' THEN
        PERFORM cd_invalid('items', 'must be an array');
    END IF;

    -- 1. parse and validate every item; resolve customers and queues
    WITH f AS (
        SELECT e.idx::int AS idx,
               jsonb_typeof(e.j) = 'object' AS is_obj,
               -- a number is checked without a regular expression (the
               -- daemon sends numbers): same verdict as the pattern below
               CASE jsonb_typeof(e.j -> 'customer')
                    WHEN 'number' THEN CASE WHEN scale((e.j -> 'customer')::numeric) = 0
                                                 AND (e.j -> 'customer')::numeric BETWEEN 0 AND 999999999999999999
                                            THEN (e.j -> 'customer')::bigint END
                    WHEN 'string' THEN CASE WHEN (e.j ->> 'customer') ~ '^[0-9]{1,18}$'
                                            THEN (e.j ->> 'customer')::bigint END
               END AS cust_in,
               jsonb_typeof(e.j -> 'body') AS body_t,
               e.j ->> 'body' AS body,
               jsonb_typeof(e.j -> 'client_msg_id') AS cmid_t,
               e.j ->> 'client_msg_id' AS cmid,
               jsonb_typeof(e.j -> 'queue') AS q_t,
               CASE WHEN jsonb_typeof(e.j -> 'queue') IN ('string', 'number')
                    THEN nullif(e.j ->> 'queue', '') END AS qkey,
               CASE WHEN jsonb_typeof(e.j -> 'default_queue') = 'string'
                    THEN nullif(e.j ->> 'default_queue', '') END AS dq
          FROM jsonb_array_elements(p) WITH ORDINALITY AS e(j, idx)
    ), keys AS (
        SELECT DISTINCT k FROM (SELECT qkey FROM f UNION ALL SELECT dq FROM f) s(k) WHERE k IS NOT NULL
    ), qmap AS (
        SELECT k, CASE WHEN k ~ '^[0-9]{1,18}$' THEN (SELECT q.id FROM queues q WHERE q.id = k::bigint)
                       ELSE (SELECT q.id FROM queues q WHERE lower(q.name) = lower(k)) END AS qid
          FROM keys
    )
    SELECT array_agg(ROW(f.idx,
                         CASE WHEN c.merged_into IS NULL THEN c.id ELSE cd_customer_live(c.id) END,
                         f.body, CASE WHEN f.cmid_t = 'string' THEN f.cmid END,
                         coalesce(qn.qid, qd.qid, (SELECT min(q.id) FROM queues q)),
                         v.e[1], v.e[2], v.e[3], false, NULL, NULL, NULL, false, NULL)::cd_chat_msg_item
                     ORDER BY f.idx)
      INTO v_items
      FROM f
      -- LATERAL ... LIMIT 1 here and below: always an index probe per item,
      -- whatever the planner believes about the size of the big tables
      LEFT JOIN LATERAL (SELECT x.id, x.merged_into FROM customers x WHERE x.id = f.cust_in LIMIT 1) c ON true
      LEFT JOIN qmap qn ON qn.k = f.qkey
      LEFT JOIN qmap qd ON qd.k = f.dq
      CROSS JOIN LATERAL (SELECT CASE
          WHEN NOT f.is_obj THEN
              ARRAY['invalid', 'item', 'item: must be an object']
          WHEN f.cust_in IS NULL THEN
              ARRAY['invalid', 'customer', 'customer: must be an id']
          WHEN f.body_t IS DISTINCT FROM 'string' THEN
              ARRAY['invalid', 'body', 'body: must be a string']
          -- a first character in '!'..'~' is not blank: no regular expression
          WHEN ascii(f.body) NOT BETWEEN 33 AND 126 AND f.body !~ '\S' THEN
              ARRAY['invalid', 'body', 'body: must not be empty']
          WHEN octet_length(f.body) > 65536 THEN
              ARRAY['invalid', 'body', 'body: must be at most 65536 bytes']
          WHEN f.cmid_t IS NOT NULL AND f.cmid_t <> 'null'
               AND (f.cmid_t <> 'string' OR length(f.cmid) NOT BETWEEN 1 AND 200) THEN
              ARRAY['invalid', 'client_msg_id', 'client_msg_id: must be a string of 1 to 200 characters']
          WHEN f.q_t IS NOT NULL AND f.q_t NOT IN ('null', 'string', 'number') THEN
              ARRAY['invalid', 'queue', 'queue: must be a name or an id']
          WHEN f.qkey IS NOT NULL AND qn.qid IS NULL THEN
              ARRAY['invalid', 'queue', format('queue: unknown queue "%s"', left(f.qkey, 100))]
          WHEN c.id IS NULL THEN
              ARRAY['not_found', 'customer', format('customer %s not found', f.cust_in)]
          END AS e) v;

    IF v_items IS NULL THEN
        RETURN '[]'::jsonb;
    END IF;

    -- 2. one lock per customer, in key order (no deadlock between batches)
    PERFORM pg_advisory_xact_lock(cd_lock_class_customer(), s.k)
       FROM (SELECT DISTINCT cd_lock_key(i.customer) AS k
               FROM unnest(v_items) i WHERE i.code IS NULL ORDER BY 1) s;

    -- 3. everything else, in one statement (its snapshot: after the locks)
    WITH i AS (
        SELECT u.idx, u.customer, u.body, u.cmid, u.queue_id, u.code, u.field, u.err,
               CASE WHEN u.code IS NULL AND u.cmid IS NOT NULL
                    THEN min(u.idx) FILTER (WHERE u.code IS NULL)
                             OVER (PARTITION BY u.customer, u.cmid) END AS first_idx
          FROM unnest(v_items) u
    ), d AS (
        -- retries: the same client_msg_id stored before, or earlier in this call
        SELECT i.*, m.id AS old_id, m.conversation_id AS old_conv, m.created_at AS old_at,
               m.id IS NOT NULL OR coalesce(i.first_idx < i.idx, false) AS dup,
               CASE WHEN m.id IS NULL AND i.first_idx < i.idx THEN i.first_idx END AS dup_of,
               i.code IS NULL AND m.id IS NULL AND NOT coalesce(i.first_idx < i.idx, false) AS todo
          FROM i
          LEFT JOIN LATERAL (
              SELECT x.id, x.conversation_id, x.created_at FROM messages x
               WHERE i.code IS NULL AND i.cmid IS NOT NULL
                 AND x.author_kind = 'customer' AND x.client_msg_id IS NOT NULL
                 AND x.author_customer_id = i.customer AND x.client_msg_id = i.cmid
               LIMIT 1) m ON true
    ), u AS (
        -- the open chat conversations of the customers that write: the UPDATE
        -- locks each and re-checks that it is still open (a concurrent resolve
        -- / close wins or waits); customers left out get a new conversation.
        UPDATE conversations c
           SET last_message_at = v_now,
               status = CASE WHEN c.status <> 'pending' THEN c.status
                             WHEN c.agent_id IS NULL THEN 'queued' ELSE 'assigned' END,
               enqueued_at = CASE WHEN c.status = 'pending' AND c.agent_id IS NULL
                                  THEN v_now ELSE c.enqueued_at END,
               sla_paused_total_s = c.sla_paused_total_s
                   + CASE WHEN c.sla_paused_at IS NULL THEN 0
                          ELSE greatest(0, floor(extract(epoch FROM v_now - c.sla_paused_at)))::int END,
               sla_paused_at = NULL
         WHERE c.id = ANY (ARRAY(
                   SELECT o.id
                     FROM (SELECT DISTINCT d.customer FROM d WHERE d.todo) n
                     CROSS JOIN LATERAL (
                         SELECT x.id FROM conversations x
                          WHERE x.customer_id = n.customer AND x.channel = 'chat'
                            AND x.status NOT IN ('resolved', 'closed', 'abandoned')
                          ORDER BY x.id DESC LIMIT 1) o))
           AND c.status NOT IN ('resolved', 'closed', 'abandoned')
        RETURNING c.id, c.customer_id, c.queue_id, c.agent_id, c.status, c.tier, c.priority,
                  c.enqueued_at
    ), need AS (
        -- new conversations for the others (the queue of their first item)
        SELECT DISTINCT ON (d.customer) d.customer, d.queue_id
          FROM d
         WHERE d.todo AND d.queue_id IS NOT NULL
           AND d.customer <> ALL (ARRAY(SELECT u.customer_id FROM u))
         ORDER BY d.customer, d.idx
    ), nc AS (
        INSERT INTO conversations (customer_id, channel, status, queue_id, tier, priority,
                                   sla_policy_id, enqueued_at, last_message_at)
        SELECT n.customer, 'chat', 'queued', q.id, 1, q.priority, q.sla_policy_id, v_now, v_now
          FROM need n JOIN queues q ON q.id = n.queue_id
         ORDER BY n.customer
        RETURNING id, customer_id, queue_id, agent_id, status, tier, priority, enqueued_at
    ), ev AS (
        INSERT INTO conversation_events (conversation_id, kind, at, data)
        SELECT nc.id, 'enqueued', v_now, jsonb_build_object('queue', nc.queue_id, 'reason', 'first message')
          FROM nc
    ), conv AS (
        SELECT u.*, false AS is_new FROM u
        UNION ALL
        SELECT nc.*, true AS is_new FROM nc
    ), s AS (
        -- conversation and message id of every new message (ids taken in input
        -- order, so a customer's messages keep their order; no conversation
        -- means there was no queue to open one in)
        SELECT t.*,
               CASE WHEN t.todo AND t.conv IS NOT NULL THEN nextval(v_seq) END AS new_id
          FROM (SELECT d.*, cv.id AS conv, coalesce(cv.is_new, false) AS is_new,
                       row_number() OVER (PARTITION BY d.customer, d.todo ORDER BY d.idx) AS rn
                  FROM d
                  LEFT JOIN conv cv ON cv.customer_id = d.customer
                 ORDER BY d.idx) t
    ), ins AS (
        INSERT INTO messages (id, conversation_id, channel, direction, author_kind, author_customer_id,
                              body, client_msg_id, created_at)
        OVERRIDING SYSTEM VALUE
        SELECT s.new_id, s.conv, 'chat', 'in', 'customer', s.customer, s.body, s.cmid, v_now
          FROM s WHERE s.new_id IS NOT NULL
    ), r AS (
        -- every item's outcome
        SELECT s.idx, s.customer, s.dup, s.dup_of,
               s.todo AND s.is_new AND s.rn = 1 AS opened,
               CASE WHEN s.todo AND s.conv IS NULL THEN 'invalid' ELSE s.code END AS code,
               CASE WHEN s.todo AND s.conv IS NULL THEN 'queue' ELSE s.field END AS field,
               CASE WHEN s.todo AND s.conv IS NULL THEN 'no queue to route to' ELSE s.err END AS err,
               CASE WHEN s.todo THEN s.new_id ELSE s.old_id END AS message_id,
               CASE WHEN s.todo THEN s.conv ELSE s.old_conv END AS conversation_id,
               CASE WHEN s.todo THEN v_now ELSE s.old_at END AS created_at
          FROM s
    )
    -- the answers; a retry within the call answers like its original.  Built
    -- as text and parsed once (jsonb_build_object looks up the type of each of
    -- its arguments on every call; measured with callgrind: the answer was a
    -- fifth of a call's instructions, as text it costs a quarter less); only
    -- the error branch can carry free text, so only it is escaped (to_json).
    SELECT '[' || string_agg(
               CASE WHEN coalesce(o.code, i.code) IS NOT NULL THEN
                   '{"ok":false,"code":' || to_json(coalesce(i.code, o.code))::text
                   || ',"field":' || coalesce(to_json(coalesce(i.field, o.field))::text, 'null')
                   || ',"message":' || coalesce(to_json(coalesce(i.err, o.err))::text, 'null') || '}'
               ELSE
                   '{"ok":true,"message":' || coalesce(coalesce(o.message_id, i.message_id)::text, 'null')
                   || ',"conversation":' || coalesce(coalesce(k.id, x.id)::text, 'null')
                   || ',"customer":' || coalesce(i.customer::text, 'null')
                   || ',"duplicate":' || i.dup::text
                   || ',"opened":' || i.opened::text
                   || ',"queue":' || coalesce(coalesce(k.queue_id, x.queue_id)::text, 'null')
                   || ',"agent":' || coalesce(coalesce(k.agent_id, x.agent_id)::text, 'null')
                   -- status: one of the words of conversations_status_check
                   || ',"status":' || coalesce('"' || coalesce(k.status, x.status) || '"', 'null')
                   -- cd_ts: digits, '-', ':', '.', 'T', 'Z'
                   || ',"created_at":' || coalesce('"' || CASE WHEN coalesce(o.created_at, i.created_at) = v_now
                                                               THEN v_now_ts
                                                               ELSE cd_ts(coalesce(o.created_at, i.created_at)) END
                                                   || '"', 'null')
                   || ',"route":' || CASE WHEN i.opened THEN
                          '{"tier":' || coalesce(k.tier::text, 'null')
                          || ',"priority":' || coalesce(k.priority::text, 'null')
                          || ',"enqueued_at":' || coalesce(cd_ms(k.enqueued_at)::text, 'null')
                          || ',"last_agent":' || coalesce(((l.r).agent_id)::text, 'null')
                          || ',"last_agent_at":' || coalesce(cd_ms((l.r).at)::text, 'null') || '}'
                       ELSE 'null' END
                   || '}'
               END, ',' ORDER BY i.idx) || ']'
      INTO v_out
      FROM r i
      LEFT JOIN r o ON o.idx = i.dup_of
      -- the conversation as this call left it: from the UPDATE / INSERT
      LEFT JOIN conv k ON k.id = coalesce(o.conversation_id, i.conversation_id)
      -- a retry's conversation that this call did not touch
      LEFT JOIN LATERAL (SELECT c.id, c.queue_id, c.agent_id, c.status FROM conversations c
                          WHERE k.id IS NULL AND c.id = coalesce(o.conversation_id, i.conversation_id)
                          LIMIT 1) x ON true
      -- for a new conversation: the customer's last agent (cd_route_info's rule)
      CROSS JOIN LATERAL (SELECT CASE WHEN i.opened THEN (
          SELECT ROW(y.agent_id, coalesce(y.resolved_at, y.closed_at, y.last_message_at, y.updated_at))
                 ::cd_last_agent
            FROM conversations y
           WHERE y.customer_id = k.customer_id AND y.id <> k.id AND y.agent_id IS NOT NULL
           ORDER BY y.id DESC
           LIMIT 1) END AS r) l;
    RETURN v_out::jsonb;
END
$$;
