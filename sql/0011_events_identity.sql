-- 0011_events_identity.sql -- inbound events from any other channel (POST
-- /v1/events) and one customer across channels (GET /v1/customers/{id},
-- POST /v1/customers/{id}/merge, POST /v1/customers/{id}/unmerge).
--
-- Identities are normalised before they are compared: e-mail trimmed and
-- lower-cased, phone numbers stripped of spaces, dots, dashes and
-- parentheses and required in E.164, external ids as given.  A value belongs
-- to at most one customer (customer_identities_kind_value_uq); an event that
-- names several identities attaches the ones nobody holds yet to the customer
-- found, never taking one from another customer (that is what a merge is for).

-- What a merge moved, so that it can be undone exactly.
CREATE TABLE customer_merges (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id        bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    target_id        bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    identity_ids     bigint[] NOT NULL DEFAULT '{}',
    conversation_ids bigint[] NOT NULL DEFAULT '{}',
    merged_at        timestamptz NOT NULL DEFAULT now(),
    undone_at        timestamptz,
    CONSTRAINT customer_merges_distinct CHECK (source_id <> target_id)
);
CREATE INDEX customer_merges_source_idx ON customer_merges (source_id, id);
CREATE INDEX customer_merges_target_idx ON customer_merges (target_id);

-- E.164 or NULL (formatting characters dropped first).
CREATE FUNCTION cd_norm_phone(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN x ~ '^\+[1-9][0-9]{6,14}$' THEN x END
      FROM (SELECT regexp_replace(p, '[[:space:]().-]', '', 'g') AS x) s
$$;

-- Serialises the writers of one identity value (kind:value).
CREATE FUNCTION cd_lock_identity(p_kind text, p_value text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(cd_lock_class_identity(), hashtext(p_kind || ':' || p_value))
$$;

-- The customer for the identities given (external, then email, then phone:
-- the first one somebody holds), else a new customer named P_NAME; every
-- given identity nobody holds is attached to it (unverified).  Returns the
-- live customer id.
CREATE FUNCTION cd_customer_resolve(p_external text, p_email text, p_phone text, p_name text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_cust  bigint;
    v_held  text[];
    v_kind  text;
    v_val   text;
BEGIN
    -- lock in a fixed order (kind order) so that two events do not deadlock
    IF p_email IS NOT NULL THEN PERFORM cd_lock_identity('email', p_email); END IF;
    IF p_external IS NOT NULL THEN PERFORM cd_lock_identity('external', p_external); END IF;
    IF p_phone IS NOT NULL THEN PERFORM cd_lock_identity('phone', p_phone); END IF;
    -- one probe for all of them: who holds which (the first by external, email, phone)
    SELECT (array_agg(i.customer_id ORDER BY w.o))[1], array_agg(i.kind)
      INTO v_cust, v_held
      FROM (VALUES (1, 'external', p_external), (2, 'email', p_email), (3, 'phone', p_phone)) AS w(o, k, v)
      JOIN customer_identities i ON i.kind = w.k AND i.value = w.v
     WHERE w.v IS NOT NULL;
    IF v_cust IS NULL THEN
        INSERT INTO customers (name) VALUES (p_name) RETURNING id INTO v_cust;
    ELSE
        v_cust := cd_customer_live(v_cust);
        IF p_name IS NOT NULL THEN
            UPDATE customers SET name = p_name WHERE id = v_cust AND name IS NULL;
        END IF;
    END IF;
    -- the given identities nobody holds yet go to this customer
    FOR v_kind, v_val IN SELECT k, v FROM (VALUES ('external', p_external), ('email', p_email),
                                                  ('phone', p_phone)) AS w(k, v)
                          WHERE v IS NOT NULL AND k <> ALL (coalesce(v_held, '{}')) LOOP
        INSERT INTO customer_identities (customer_id, kind, value) VALUES (v_cust, v_kind, v_val)
        ON CONFLICT (kind, value) DO NOTHING;
    END LOOP;
    RETURN v_cust;
END
$$;

-- cd_api_event(p) -> {created, conversation, message, customer, opened,
--                     status, agent, queue, route}
-- POST /v1/events: an inbound message from sms, whatsapp, social, web or api.
-- Input: channel, from {email | phone | external_id (at least one), name},
--   body (1..65536 bytes, not blank), external_id (the channel's message id,
--   1..200; the same (channel, external_id) is stored once), queue (name or
--   id), default_queue (config routing.default_queue), subject (<= 500).
-- created false: (channel, external_id) was stored before; the answer holds
--   the original ids and nothing changes.
-- Otherwise the message goes into the customer's open conversation on that
--   channel (a pending one becomes assigned, or queued, again), or opens one:
--   status queued in the named / default / first queue with its priority
--   and SLA policy; timeline `enqueued`; opened true and route =
--   cd_route_info for the router.  agent = the conversation's agent (to
--   notify), status its status.
-- Errors: 22023 naming the field (channel, from, from.email, from.phone,
--   from.external_id, from.name, body, external_id, queue, subject).
CREATE FUNCTION cd_api_event(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_channel text;
    v_from    jsonb;
    v_email   text;
    v_phone   text;
    v_ext     text;
    v_name    text;
    v_body    text;
    v_msg_ext text;
    v_subject text;
    v_queue   bigint;
    v_cust    bigint;
    c         conversations;
    m         messages;
    v_opened  boolean := false;
BEGIN
    PERFORM cd_check_body(p);
    v_channel := cd_j_opt_text(p, 'channel', 20);
    IF v_channel IS NULL OR v_channel NOT IN ('sms', 'whatsapp', 'social', 'web', 'api') THEN
        PERFORM cd_invalid('channel', 'must be sms, whatsapp, social, web or api');
    END IF;
    v_from := cd_opt(p, 'from');
    IF v_from IS NULL OR jsonb_typeof(v_from) <> 'object' THEN
        PERFORM cd_invalid('from', 'must be an object with email, phone or external_id');
    END IF;
    v_email := lower(btrim(cd_j_opt_text(v_from, 'email', 320)));
    IF v_email IS NOT NULL AND v_email !~ '^[^@[:space:]]+@[^@[:space:]]+$' THEN
        PERFORM cd_invalid('from.email', 'must be an e-mail address');
    END IF;
    IF cd_j_opt_text(v_from, 'phone', 64) IS NOT NULL THEN
        v_phone := cd_norm_phone(v_from ->> 'phone');
        IF v_phone IS NULL THEN
            PERFORM cd_invalid('from.phone', 'must be an E.164 number such as +34600000000');
        END IF;
    END IF;
    v_ext := cd_j_opt_text(v_from, 'external_id', 512);
    v_name := cd_j_opt_text(v_from, 'name', 200);
    IF v_email IS NULL AND v_phone IS NULL AND v_ext IS NULL THEN
        PERFORM cd_invalid('from', 'give email, phone or external_id');
    END IF;
    v_body := cd_j_body(p);
    v_msg_ext := cd_j_opt_text(p, 'external_id', 200);
    v_subject := cd_j_opt_text(p, 'subject', 500);

    IF v_msg_ext IS NOT NULL THEN
        SELECT * INTO m FROM messages WHERE channel = v_channel AND external_id = v_msg_ext;
        IF m.id IS NOT NULL THEN
            SELECT * INTO c FROM conversations WHERE id = m.conversation_id;
            RETURN jsonb_build_object('created', false, 'conversation', c.id, 'message', m.id,
                                      'customer', c.customer_id, 'opened', false, 'status', c.status,
                                      'agent', c.agent_id, 'queue', c.queue_id, 'route', NULL);
        END IF;
    END IF;

    v_cust := cd_customer_resolve(v_ext, v_email, v_phone, v_name);
    PERFORM pg_advisory_xact_lock(cd_lock_class_customer(), cd_lock_key(v_cust));
    SELECT * INTO c FROM conversations
     WHERE customer_id = v_cust AND channel = v_channel AND status NOT IN ('resolved', 'closed', 'abandoned')
     ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE;
    IF c.id IS NULL THEN
        v_queue := coalesce(cd_j_opt_ref(p, 'queues', 'queue'),
                            (SELECT q.id FROM queues q WHERE lower(q.name) = lower(nullif(p ->> 'default_queue', ''))),
                            (SELECT min(q.id) FROM queues q));
        IF v_queue IS NULL THEN PERFORM cd_invalid('queue', 'no queue to route to'); END IF;
        INSERT INTO conversations (customer_id, channel, status, queue_id, tier, priority, sla_policy_id,
                                   subject, enqueued_at, last_message_at)
        SELECT v_cust, v_channel, 'queued', q.id, 1, q.priority, q.sla_policy_id, v_subject, now(), now()
          FROM queues q WHERE q.id = v_queue
        RETURNING * INTO c;
        PERFORM cd_event(c.id, 'enqueued', jsonb_build_object('queue', v_queue, 'reason', 'first message'));
        v_opened := true;
    ELSIF c.status = 'pending' THEN
        UPDATE conversations
           SET status = CASE WHEN agent_id IS NULL THEN 'queued' ELSE 'assigned' END,
               enqueued_at = CASE WHEN agent_id IS NULL THEN now() ELSE enqueued_at END
         WHERE id = c.id RETURNING * INTO c;
    END IF;
    INSERT INTO messages (conversation_id, channel, direction, author_kind, author_customer_id, body,
                          external_id)
    VALUES (c.id, v_channel, 'in', 'customer', v_cust, v_body, v_msg_ext)
    ON CONFLICT DO NOTHING
    RETURNING * INTO m;
    IF m.id IS NULL THEN
        -- a concurrent request stored the same (channel, external_id) first
        RAISE EXCEPTION USING ERRCODE = '23505', COLUMN = 'external_id',
            MESSAGE = 'external_id: the same message is being stored by another request; retry';
    END IF;
    UPDATE conversations SET last_message_at = m.created_at,
                             subject = coalesce(subject, v_subject)
     WHERE id = c.id RETURNING * INTO c;
    RETURN jsonb_build_object('created', true, 'conversation', c.id, 'message', m.id, 'customer', v_cust,
                              'opened', v_opened, 'status', c.status, 'agent', c.agent_id,
                              'queue', c.queue_id,
                              'route', CASE WHEN v_opened THEN cd_route_info(c.id) END);
END
$$;

-- cd_customer_get(id) -> {id, name, language, merged_into, identities:[{kind,
--   value, verified}], conversations:{open, total}, merges:[{id, source,
--   target, merged_at, undone_at}], created_at} or NULL (unknown id).
-- A merged customer is returned as it is (merged_into names the survivor).
CREATE FUNCTION cd_customer_get(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.id, 'name', c.name, 'language', c.language, 'merged_into', c.merged_into,
        'identities', coalesce((SELECT jsonb_agg(jsonb_build_object('kind', i.kind, 'value', i.value,
                                                                    'verified', i.verified) ORDER BY i.id)
                                  FROM customer_identities i WHERE i.customer_id = c.id), '[]'::jsonb),
        'conversations', (SELECT jsonb_build_object(
                              'open', count(*) FILTER (WHERE v.status NOT IN ('resolved', 'closed', 'abandoned')),
                              'total', count(*))
                            FROM conversations v WHERE v.customer_id = c.id),
        'merges', coalesce((SELECT jsonb_agg(jsonb_build_object('id', g.id, 'source', g.source_id,
                                                                'target', g.target_id,
                                                                'merged_at', cd_ts(g.merged_at),
                                                                'undone_at', cd_ts(g.undone_at)) ORDER BY g.id)
                              FROM customer_merges g WHERE g.source_id = c.id OR g.target_id = c.id), '[]'::jsonb),
        'created_at', cd_ts(c.created_at))
      FROM customers c WHERE c.id = p_id
$$;

-- cd_customer_merge(p) -> {merge, customer, into, identities, conversations}
-- Input: customer (the one that goes away), into (the survivor).  Both must
-- exist and not be merged already (55000), and differ (22023 into).  Moves
-- every identity and conversation of `customer` to `into`, sets
-- customer.merged_into, records what moved (customer_merges) and a `merged`
-- timeline event on each moved conversation.
CREATE FUNCTION cd_customer_merge(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_src   bigint;
    v_dst   bigint;
    v_ids   bigint[];
    v_convs bigint[];
    v_merge bigint;
BEGIN
    PERFORM cd_check_body(p);
    v_src := cd_j_id(p, 'customer');
    v_dst := cd_j_id(p, 'into');
    IF v_src = v_dst THEN PERFORM cd_invalid('into', 'must be another customer'); END IF;
    PERFORM pg_advisory_xact_lock(cd_lock_class_customer(), cd_lock_key(x))
       FROM unnest(ARRAY[least(v_src, v_dst), greatest(v_src, v_dst)]) x;
    PERFORM 1 FROM customers WHERE id = v_src FOR UPDATE;
    IF NOT FOUND THEN PERFORM cd_not_found(format('customer %s not found', v_src)); END IF;
    PERFORM 1 FROM customers WHERE id = v_dst FOR UPDATE;
    IF NOT FOUND THEN PERFORM cd_not_found(format('customer %s not found', v_dst)); END IF;
    IF EXISTS (SELECT 1 FROM customers WHERE id IN (v_src, v_dst) AND merged_into IS NOT NULL) THEN
        PERFORM cd_wrong_state('a merged customer cannot take part in another merge; use the survivor');
    END IF;
    WITH u AS (UPDATE customer_identities SET customer_id = v_dst WHERE customer_id = v_src RETURNING id)
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO v_ids FROM u;
    WITH u AS (UPDATE conversations SET customer_id = v_dst WHERE customer_id = v_src RETURNING id)
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO v_convs FROM u;
    UPDATE customers SET merged_into = v_dst WHERE id = v_src;
    UPDATE customers d SET name = coalesce(d.name, s.name), language = coalesce(d.language, s.language)
      FROM customers s WHERE d.id = v_dst AND s.id = v_src;
    INSERT INTO customer_merges (source_id, target_id, identity_ids, conversation_ids)
    VALUES (v_src, v_dst, v_ids, v_convs) RETURNING id INTO v_merge;
    PERFORM cd_event(x, 'merged', jsonb_build_object('merge', v_merge, 'from', v_src, 'into', v_dst))
       FROM unnest(v_convs) x;
    RETURN jsonb_build_object('merge', v_merge, 'customer', v_src, 'into', v_dst,
                              'identities', cardinality(v_ids), 'conversations', cardinality(v_convs));
END
$$;

-- cd_customer_unmerge(p) -> {merge, customer, into, identities, conversations}
-- Input: customer (one that was merged away).  Undoes its latest merge: the
-- identities and conversations that merge moved (and that are still with the
-- survivor) go back, merged_into is cleared, timeline `unmerged`.  A customer
-- that is not merged: 55000; unknown: P0002.
CREATE FUNCTION cd_customer_unmerge(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_src   bigint;
    g       customer_merges;
    v_ids   bigint[];
    v_convs bigint[];
BEGIN
    PERFORM cd_check_body(p);
    v_src := cd_j_id(p, 'customer');
    PERFORM 1 FROM customers WHERE id = v_src FOR UPDATE;
    IF NOT FOUND THEN PERFORM cd_not_found(format('customer %s not found', v_src)); END IF;
    SELECT * INTO g FROM customer_merges WHERE source_id = v_src AND undone_at IS NULL ORDER BY id DESC LIMIT 1;
    IF g.id IS NULL OR NOT EXISTS (SELECT 1 FROM customers WHERE id = v_src AND merged_into = g.target_id) THEN
        PERFORM cd_wrong_state(format('customer %s is not merged', v_src));
    END IF;
    PERFORM pg_advisory_xact_lock(cd_lock_class_customer(), cd_lock_key(x))
       FROM unnest(ARRAY[least(v_src, g.target_id), greatest(v_src, g.target_id)]) x;
    WITH u AS (UPDATE customer_identities SET customer_id = v_src
                WHERE id = ANY (g.identity_ids) AND customer_id = g.target_id RETURNING id)
    SELECT coalesce(array_agg(id), '{}') INTO v_ids FROM u;
    WITH u AS (UPDATE conversations SET customer_id = v_src
                WHERE id = ANY (g.conversation_ids) AND customer_id = g.target_id RETURNING id)
    SELECT coalesce(array_agg(id), '{}') INTO v_convs FROM u;
    UPDATE customers SET merged_into = NULL WHERE id = v_src;
    UPDATE customer_merges SET undone_at = now() WHERE id = g.id;
    PERFORM cd_event(x, 'unmerged', jsonb_build_object('merge', g.id, 'from', v_src, 'into', g.target_id))
       FROM unnest(v_convs) x;
    RETURN jsonb_build_object('merge', g.id, 'customer', v_src, 'into', g.target_id,
                              'identities', cardinality(v_ids), 'conversations', cardinality(v_convs));
END
$$;

-- cd_api_post(p) -> {replay, status, body, result}
-- The HTTP POSTs of this file and of the phone channel, with Idempotency-Key:
-- op "events" (POST /v1/events: cd_api_event; 201, or 200 when the
-- (channel, external_id) was stored before), "phone_events" (POST
-- /v1/phone/events: cd_phone_event; 200), "merge" / "unmerge" (POST
-- /v1/customers/{customer}/merge {into} | /unmerge; 200).
-- Input: op, body (the request's JSON object), token (id), idempotency_key
--   (null: none), path, default_queue, customer (merge / unmerge).
-- A key is remembered per token for 24 hours with the request's path and a
-- hash of its body: the same request again is answered with the stored
-- status and body (replay true, result null, nothing done); the key with
-- another path or body is 23505 (409) naming Idempotency-Key.  Errors roll
-- the key back with everything else: a failed request can be retried.
-- result = the underlying function's whole answer, for the daemon's side
-- effects (routing, notifications).
CREATE FUNCTION cd_api_post(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_op     text := p ->> 'op';
    v_body   jsonb := p -> 'body';
    v_token  bigint := (p ->> 'token')::bigint;
    v_key    text := p ->> 'idempotency_key';
    v_path   text := coalesce(p ->> 'path', '');
    v_hash   text;
    v_kid    bigint;
    k        idempotency_keys;
    v_res    jsonb;
    v_out    jsonb;
    v_status int := 200;
BEGIN
    IF v_body IS NULL OR jsonb_typeof(v_body) <> 'object' THEN
        PERFORM cd_invalid('body', 'must be a JSON object');
    END IF;
    IF v_key IS NOT NULL AND v_token IS NOT NULL THEN
        v_hash := encode(sha256(convert_to(v_body::text, 'UTF8')), 'hex');
        SELECT * INTO k FROM idempotency_keys WHERE token_id = v_token AND key = v_key FOR UPDATE;
        IF k.id IS NOT NULL AND k.created_at < now() - interval '24 hours' THEN
            DELETE FROM idempotency_keys WHERE id = k.id;
            k := NULL;
        END IF;
        IF k.id IS NOT NULL THEN
            IF k.path <> v_path OR k.request_hash IS DISTINCT FROM v_hash OR k.response_status IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = '23505', COLUMN = 'Idempotency-Key',
                    MESSAGE = format('Idempotency-Key: "%s" was already used for another request (%s)',
                                     left(v_key, 64), k.path);
            END IF;
            RETURN jsonb_build_object('replay', true, 'status', k.response_status,
                                      'body', k.response_body::jsonb, 'result', NULL);
        END IF;
        INSERT INTO idempotency_keys (token_id, key, method, path, request_hash)
        VALUES (v_token, v_key, 'POST', v_path, v_hash)
        ON CONFLICT (token_id, key) DO NOTHING
        RETURNING id INTO v_kid;
        IF v_kid IS NULL THEN   -- the same key in a concurrent request
            RAISE EXCEPTION USING ERRCODE = '23505', COLUMN = 'Idempotency-Key',
                MESSAGE = 'Idempotency-Key: a request with this key is in progress; retry';
        END IF;
    END IF;

    CASE v_op
    WHEN 'events' THEN
        v_res := cd_api_event(v_body || jsonb_build_object('default_queue', p -> 'default_queue'));
        v_status := CASE WHEN (v_res ->> 'created')::boolean THEN 201 ELSE 200 END;
        v_out := jsonb_build_object('conversation', v_res -> 'conversation', 'message', v_res -> 'message',
                                    'customer', v_res -> 'customer');
    WHEN 'phone_events' THEN
        v_res := cd_phone_event(v_body || jsonb_build_object('default_queue', p -> 'default_queue'));
        v_out := jsonb_build_object('conversation', v_res -> 'conversation', 'state', v_res -> 'state',
                                    'duplicate', v_res -> 'duplicate');
    WHEN 'merge' THEN
        IF NOT v_body ? 'into' THEN PERFORM cd_invalid('into', 'is required (the customer that stays)'); END IF;
        v_res := cd_customer_merge(jsonb_build_object('customer', p -> 'customer', 'into', v_body -> 'into'));
        v_out := v_res;
    WHEN 'unmerge' THEN
        v_res := cd_customer_unmerge(jsonb_build_object('customer', p -> 'customer'));
        v_out := v_res;
    ELSE
        PERFORM cd_invalid('op', 'unknown operation');
    END CASE;

    IF v_kid IS NOT NULL THEN
        UPDATE idempotency_keys SET response_status = v_status, response_body = v_out::text WHERE id = v_kid;
    END IF;
    RETURN jsonb_build_object('replay', false, 'status', v_status, 'body', v_out, 'result', v_res);
END
$$;

-- cd_api_events_batch(p) -> [{ok:true, result} | {ok:false, sqlstate, message, field}, ...]
-- Group commit of POST /v1/events without an Idempotency-Key: many requests'
-- bodies (each with default_queue) in one transaction, one answer per item in
-- order.  Each item runs in its own subtransaction, so a bad item answers its
-- error and never fails the others.
CREATE FUNCTION cd_api_events_batch(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e     jsonb;
    v_out jsonb[] := '{}';
    v_col text;
BEGIN
    IF jsonb_typeof(p) IS DISTINCT FROM 'array' THEN
        PERFORM cd_invalid('items', 'must be an array');
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p) LOOP
        BEGIN
            v_out := v_out || jsonb_build_object('ok', true, 'result', cd_api_event(e));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_col = COLUMN_NAME;
            v_out := v_out || jsonb_build_object('ok', false, 'sqlstate', SQLSTATE, 'message', SQLERRM,
                                                 'field', nullif(v_col, ''));
        END;
    END LOOP;
    RETURN to_jsonb(v_out);
END
$$;
