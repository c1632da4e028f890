-- 0008_conversation_api.sql -- the conversation API of SPEC section 4 (HTTP).
--
--   cd_api_conversation_obj(id)       a conversation as the API shows it in lists
--   cd_api_conversation_list(p)       GET /v1/conversations (filters, paging)
--   cd_api_conversation_get(p)        GET /v1/conversations/{id} (+ messages, timeline)
--   cd_api_conversation_action(p)     POST /v1/conversations/{id}/{action}, with
--                                     the Idempotency-Key replay in the same transaction
--   cd_api_realtime()                 what GET /v1/stats/realtime needs from the store
--
-- The daemon calls each one as ONE statement, `SELECT fn($1::jsonb)::text`
-- (cd_api_realtime: no parameter), like the functions of 0003_chat.sql, and
-- with the same error SQLSTATEs (22023 invalid + COLUMN, P0002 not found,
-- 55000 / 23505 conflict, 42501 forbidden).
--
-- Decisions (docs/API.md "Conversations"):
--   * in conversation objects `queue` is the queue's name and `agent` the
--     agent's login (administration objects name each other the same way);
--     `customer` is an id (customers have no unique name), the surviving one
--     when the customer was merged.  Filters take a name / login or an id.
--   * lists are newest first (id descending); `after` is the `next` of the
--     previous page (the id of its last item).
--   * one conversation shows its last 500 messages and last 1000 timeline
--     events, oldest first.
--   * the actions reuse the client protocol's functions with a null agent
--     ("the HTTP API": no per-agent permission), except a message written as
--     an agent (`agent` in the body), which obeys the agent's permission
--     (its conversation, or a supervisor / admin) exactly as over the client
--     protocol.  A message without `agent` is authored by the system
--     (author_kind system) and names the API token in messages.metadata.
--     Timeline events recorded by an action carry "api_token": <token name>.

-- ---------------------------------------------------------------------------
-- Reading
-- ---------------------------------------------------------------------------

-- A conversation as the API shows it in lists, or NULL when there is none:
-- {id, channel, status, subject, customer, queue, tier, priority, agent,
--  created_at, updated_at}.
CREATE FUNCTION cd_api_conversation_obj(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', c.id, 'channel', c.channel, 'status', c.status, 'subject', c.subject,
               'customer', coalesce(cd_customer_live(c.customer_id), c.customer_id),
               'queue', (SELECT q.name FROM queues q WHERE q.id = c.queue_id),
               'tier', c.tier, 'priority', c.priority,
               'agent', (SELECT a.login FROM agents a WHERE a.id = c.agent_id),
               'created_at', cd_ts(c.created_at), 'updated_at', cd_ts(c.updated_at))
      FROM conversations c WHERE c.id = p_id
$$;

-- One message as the API shows it: {id, channel, direction, author:{kind, id,
-- name}, body, created_at, attachments:[{id, filename, content_type, size,
-- sha256}]}.  A system message's author name is the API token that wrote it
-- (metadata.api_token), or null.
CREATE FUNCTION cd_api_message_obj(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', m.id, 'channel', m.channel, 'direction', m.direction,
               'author', jsonb_build_object(
                   'kind', m.author_kind,
                   'id', coalesce(m.author_agent_id, m.author_customer_id),
                   'name', CASE m.author_kind
                               WHEN 'agent' THEN (SELECT a.name FROM agents a WHERE a.id = m.author_agent_id)
                               WHEN 'customer' THEN (SELECT u.name FROM customers u WHERE u.id = m.author_customer_id)
                               ELSE m.metadata ->> 'api_token' END),
               'body', m.body, 'created_at', cd_ts(m.created_at),
               'attachments', coalesce((
                   SELECT jsonb_agg(jsonb_build_object('id', t.id, 'filename', t.name,
                                                       'content_type', t.content_type,
                                                       'size', t.size, 'sha256', t.sha256)
                                    ORDER BY t.id)
                     FROM attachments t WHERE t.message_id = m.id), '[]'::jsonb))
      FROM messages m WHERE m.id = p_id
$$;

-- A comma-separated list of values of P_FIELD, each one of P_ALLOWED (case
-- ignored); 22023 naming the field otherwise.
CREATE FUNCTION cd_api_enum_list(p_value text, p_field text, p_allowed text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_out text[] := ARRAY[]::text[];
    v     text;
BEGIN
    IF length(p_value) > 200 THEN
        PERFORM cd_invalid(p_field, 'too long');
    END IF;
    FOREACH v IN ARRAY string_to_array(p_value, ',') LOOP
        v := lower(btrim(v));
        IF NOT v = ANY (p_allowed) THEN
            PERFORM cd_invalid(p_field, format('unknown value "%s" (one of %s)', left(v, 64),
                                               array_to_string(p_allowed, ', ')));
        END IF;
        IF NOT v = ANY (v_out) THEN
            v_out := v_out || v;
        END IF;
    END LOOP;
    RETURN v_out;
END
$$;

-- cd_api_conversation_list(p) -> {items:[cd_api_conversation_obj...], next}
-- Input (strings, as they came in the query; absent = no filter):
--   status, channel   one value or a comma-separated list
--   queue             name or id;  agent: login or id (a deleted agent by id)
--   customer          id (a merged customer's conversations are its survivor's)
--   after             `next` of the previous page;  limit 1..500 (default 50)
-- Newest first (id descending).  Unknown values are 22023 naming the field.
CREATE FUNCTION cd_api_conversation_list(p jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_status  text[];
    v_channel text[];
    v_queue   bigint;
    v_agent   bigint;
    v_cust    bigint;
    v_custs   bigint[];
    v_after   bigint := 9223372036854775807;
    v_lim     int := 50;
    v_key     text;
    v_sql     text := 'SELECT ARRAY(SELECT id FROM conversations WHERE id < $1';
    v_ids     bigint[];
    v_next    text;
BEGIN
    PERFORM cd_check_body(p);
    IF p ? 'limit' THEN
        v_key := p ->> 'limit';
        IF v_key !~ '^[0-9]{1,3}$' OR v_key::int NOT BETWEEN 1 AND 500 THEN
            PERFORM cd_invalid('limit', 'must be an integer from 1 to 500');
        END IF;
        v_lim := v_key::int;
    END IF;
    IF p ? 'after' THEN
        v_key := p ->> 'after';
        IF v_key !~ '^[0-9]{1,19}$' THEN
            PERFORM cd_invalid('after', 'must be the "next" of the previous page');
        END IF;
        v_after := least(v_key::numeric, 9223372036854775807)::bigint;
    END IF;
    IF p ? 'status' THEN
        v_status := cd_api_enum_list(p ->> 'status', 'status',
            ARRAY['queued', 'offered', 'assigned', 'pending', 'resolved', 'closed', 'abandoned']);
        v_sql := v_sql || ' AND status = ANY ($2)';
    END IF;
    IF p ? 'channel' THEN
        v_channel := cd_api_enum_list(p ->> 'channel', 'channel',
            ARRAY['chat', 'email', 'voice', 'sms', 'whatsapp', 'social', 'web', 'api']);
        v_sql := v_sql || ' AND channel = ANY ($3)';
    END IF;
    IF p ? 'queue' THEN
        v_key := p ->> 'queue';
        v_queue := cd_admin_resolve('queues', v_key);
        IF v_queue IS NULL THEN
            PERFORM cd_invalid('queue', format('unknown queue "%s"', left(v_key, 64)));
        END IF;
        v_sql := v_sql || ' AND queue_id = $4';
    END IF;
    IF p ? 'agent' THEN
        v_key := p ->> 'agent';
        IF v_key ~ '^[0-9]{1,18}$' THEN
            SELECT id INTO v_agent FROM agents WHERE id = v_key::bigint;   -- deleted ones too
        ELSE
            v_agent := cd_admin_resolve('agents', v_key);
        END IF;
        IF v_agent IS NULL THEN
            PERFORM cd_invalid('agent', format('unknown agent "%s"', left(v_key, 64)));
        END IF;
        v_sql := v_sql || ' AND agent_id = $5';
    END IF;
    IF p ? 'customer' THEN
        v_key := p ->> 'customer';
        IF v_key ~ '^[0-9]{1,18}$' THEN
            v_cust := cd_customer_live(v_key::bigint);
        END IF;
        IF v_cust IS NULL THEN
            PERFORM cd_invalid('customer', format('unknown customer "%s"', left(v_key, 64)));
        END IF;
        v_custs := ARRAY(SELECT v_cust UNION SELECT id FROM customers WHERE merged_into = v_cust);
        v_sql := v_sql || ' AND customer_id = ANY ($6)';
    END IF;
    -- one row more than asked tells whether there is a next page
    v_sql := v_sql || ' ORDER BY id DESC LIMIT $7)';
    EXECUTE v_sql INTO v_ids USING v_after, v_status, v_channel, v_queue, v_agent, v_custs, v_lim + 1;
    IF cardinality(v_ids) > v_lim THEN
        v_ids := v_ids[1:v_lim];
        v_next := v_ids[v_lim]::text;
    END IF;
    RETURN jsonb_build_object(
        'items', coalesce((SELECT jsonb_agg(cd_api_conversation_obj(u.i) ORDER BY u.o)
                             FROM unnest(v_ids) WITH ORDINALITY AS u(i, o)), '[]'::jsonb),
        'next', v_next);
END
$$;

-- cd_api_conversation_get(p) -> cd_api_conversation_obj + {messages, timeline}
-- Input: conversation (id).  messages: its last 500 (cd_api_message_obj),
-- timeline: its last 1000 events [{kind, at, data}], both oldest first.
-- Errors: 22023 conversation; P0002 unknown conversation.
CREATE FUNCTION cd_api_conversation_get(p jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_id  bigint := cd_j_id(p, 'conversation');
    v_obj jsonb := cd_api_conversation_obj(v_id);
BEGIN
    IF v_obj IS NULL THEN
        PERFORM cd_not_found(format('conversation %s not found', v_id));
    END IF;
    RETURN v_obj || jsonb_build_object(
        'messages', coalesce((
            SELECT jsonb_agg(cd_api_message_obj(m.id) ORDER BY m.id)
              FROM (SELECT id FROM messages WHERE conversation_id = v_id
                     ORDER BY id DESC LIMIT 500) m), '[]'::jsonb),
        'timeline', coalesce((
            SELECT jsonb_agg(jsonb_build_object('kind', e.kind, 'at', cd_ts(e.at), 'data', e.data)
                             ORDER BY e.at, e.id)
              FROM (SELECT id, kind, at, data FROM conversation_events WHERE conversation_id = v_id
                     ORDER BY at DESC, id DESC LIMIT 1000) e), '[]'::jsonb));
END
$$;

-- ---------------------------------------------------------------------------
-- Actions
-- ---------------------------------------------------------------------------

-- A message from the system (the HTTP API) on conversation P_CONV, which the
-- caller has locked: direction out (or internal), author_kind system,
-- metadata {api_token}.  Like an agent's message, a public one sets
-- last_message_at and the first response.  Returns cd_agent_message's shape.
CREATE FUNCTION cd_api_system_message(p_conv bigint, p_body jsonb, p_token_name text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_body     text := cd_j_body(p_body);
    v_internal boolean := cd_j_bool(p_body, 'internal');
    v_id       bigint;
    v_at       timestamptz;
    v_chan     text;
    v_cust     bigint;
    v_first    timestamptz;
BEGIN
    SELECT channel, customer_id, first_response_at INTO v_chan, v_cust, v_first
      FROM conversations WHERE id = p_conv;
    INSERT INTO messages (conversation_id, channel, direction, author_kind, body, metadata)
    VALUES (p_conv, v_chan, CASE WHEN v_internal THEN 'internal' ELSE 'out' END, 'system', v_body,
            jsonb_build_object('api_token', p_token_name))
    RETURNING id, created_at INTO v_id, v_at;
    IF NOT v_internal THEN
        UPDATE conversations
           SET last_message_at = v_at, first_response_at = coalesce(first_response_at, v_at)
         WHERE id = p_conv;
    END IF;
    RETURN jsonb_build_object('message', v_id, 'conversation', p_conv, 'customer', v_cust,
                              'channel', v_chan, 'duplicate', false, 'internal', v_internal,
                              'created_at', cd_ts(v_at),
                              'first_response', NOT v_internal AND v_first IS NULL);
END
$$;

-- cd_api_conversation_action(p) -> {replay, status, body, result}
-- Input: action (messages | transfer | escalate | resolve | survey),
--   conversation (id), body (the request's JSON object), token (the API
--   token's id), token_name, idempotency_key (string or absent), path.
-- Runs the action in this one transaction and answers with the HTTP status
-- and body to send (body: {message, conversation} for messages, {survey,
-- conversation} for survey, {conversation} otherwise, where conversation is
-- cd_api_conversation_obj after the action), and `result`: what the action's
-- function returned, for the daemon's routing / delivery side effects.
-- Bodies:
--   messages {body, internal?, agent?}   201  (agent: login or id to write as)
--   transfer {queue | agent}             200
--   escalate {reason}                    200
--   resolve  {disposition?}              200
--   survey   {csat?, nps?, ces?, comment?} 201 (at least one score)
-- Unknown fields are 22023 naming them.
-- Idempotency-Key: the first request with a key (per token) stores its answer
-- in idempotency_keys in the same transaction; a repeat within 24 hours gets
-- {replay:true, status, body} of the first and changes nothing (result null).
-- The same key with another path or body is 23505 (COLUMN Idempotency-Key).
-- A request that fails records nothing, its key included: a repeat runs again.
-- Keys older than 24 hours are pruned here, at most 100 per call.
CREATE FUNCTION cd_api_conversation_action(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_action text := p ->> 'action';
    v_conv   bigint := cd_j_id(p, 'conversation');
    v_body   jsonb := p -> 'body';
    v_token  bigint := cd_j_id(p, 'token');
    v_tname  text := p ->> 'token_name';
    v_key    text := cd_opt(p, 'idempotency_key') #>> '{}';
    v_path   text := coalesce(p ->> 'path', '');
    v_hash   text;
    v_kid    bigint;
    k        record;
    v_ev     bigint;
    v_agent  bigint;
    v_res    jsonb;
    v_status int := 200;
    v_out    jsonb;
BEGIN
    IF v_body IS NULL OR jsonb_typeof(v_body) <> 'object' THEN
        PERFORM cd_invalid('body', 'must be a JSON object');
    END IF;
    IF v_key IS NOT NULL THEN
        IF length(v_key) NOT BETWEEN 1 AND 255 THEN
            PERFORM cd_invalid('Idempotency-Key', 'must be 1 to 255 characters');
        END IF;
        v_hash := encode(sha256(convert_to(v_body::text, 'UTF8')), 'hex');
        DELETE FROM idempotency_keys
         WHERE id IN (SELECT id FROM idempotency_keys WHERE created_at < now() - interval '24 hours'
                       ORDER BY created_at LIMIT 100 FOR UPDATE SKIP LOCKED);
        INSERT INTO idempotency_keys (token_id, key, method, path, request_hash)
        VALUES (v_token, v_key, 'POST', v_path, v_hash)
        ON CONFLICT (token_id, key) DO NOTHING
        RETURNING id INTO v_kid;
        IF v_kid IS NULL THEN
            SELECT * INTO k FROM idempotency_keys WHERE token_id = v_token AND key = v_key;
            IF k.created_at < now() - interval '24 hours' THEN
                -- expired but not pruned yet: this is a new request
                DELETE FROM idempotency_keys WHERE id = k.id;
                INSERT INTO idempotency_keys (token_id, key, method, path, request_hash)
                VALUES (v_token, v_key, 'POST', v_path, v_hash)
                RETURNING id INTO v_kid;
            ELSIF k.path <> v_path OR k.request_hash IS DISTINCT FROM v_hash
                  OR k.response_status IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = '23505', COLUMN = 'Idempotency-Key',
                    MESSAGE = format('Idempotency-Key: "%s" was already used for another request (%s)',
                                     left(v_key, 64), k.path);
            ELSE
                RETURN jsonb_build_object('replay', true, 'status', k.response_status,
                                          'body', k.response_body::jsonb, 'result', NULL);
            END IF;
        END IF;
    END IF;

    -- the conversation first (404 before the body's errors), locked like the
    -- actions' own functions do, so that the events counted below are ours
    PERFORM cd_conversation_lock(v_conv);
    SELECT coalesce(max(id), 0) INTO v_ev FROM conversation_events WHERE conversation_id = v_conv;

    CASE v_action
    WHEN 'messages' THEN
        PERFORM cd_check_fields(v_body, ARRAY['body', 'internal', 'agent'], ARRAY[]::text[]);
        IF cd_opt(v_body, 'agent') IS NOT NULL THEN
            v_agent := cd_j_ref('agents', v_body -> 'agent', 'agent');
            PERFORM cd_j_body(v_body);
            v_res := cd_agent_message(jsonb_build_object(
                'agent', v_agent, 'conversation', v_conv, 'body', v_body -> 'body',
                'internal', v_body -> 'internal'));
            v_res := v_res || jsonb_build_object(
                'author', jsonb_build_object('kind', 'agent', 'id', v_agent,
                                             'name', (SELECT name FROM agents WHERE id = v_agent)));
        ELSE
            v_res := cd_api_system_message(v_conv, v_body, v_tname);
            v_res := v_res || jsonb_build_object(
                'author', jsonb_build_object('kind', 'system', 'id', NULL, 'name', v_tname));
        END IF;
        v_res := v_res || jsonb_build_object(
            'assigned_agent', (SELECT agent_id FROM conversations WHERE id = v_conv),
            'body', v_body -> 'body');
        v_status := 201;
        v_out := jsonb_build_object('message', cd_api_message_obj((v_res ->> 'message')::bigint));
    WHEN 'transfer' THEN
        PERFORM cd_check_fields(v_body, ARRAY['queue', 'agent'], ARRAY[]::text[]);
        v_res := cd_conversation_transfer(jsonb_build_object(
            'conversation', v_conv, 'queue', v_body -> 'queue', 'agent', v_body -> 'agent'));
    WHEN 'escalate' THEN
        PERFORM cd_check_fields(v_body, ARRAY['reason'], ARRAY[]::text[]);
        v_res := cd_conversation_escalate(jsonb_build_object(
            'conversation', v_conv, 'reason', v_body -> 'reason'));
    WHEN 'resolve' THEN
        PERFORM cd_check_fields(v_body, ARRAY['disposition'], ARRAY[]::text[]);
        v_res := cd_conversation_resolve(jsonb_build_object(
            'conversation', v_conv, 'disposition', v_body -> 'disposition'));
    WHEN 'survey' THEN
        PERFORM cd_check_fields(v_body, ARRAY['csat', 'nps', 'ces', 'comment'], ARRAY[]::text[]);
        v_res := cd_chat_survey(v_body || jsonb_build_object(
            'conversation', v_conv,
            'customer', (SELECT customer_id FROM conversations WHERE id = v_conv)));
        v_status := 201;
        v_out := jsonb_build_object('survey', (
            SELECT jsonb_build_object('id', s.id, 'csat', s.csat, 'nps', s.nps, 'ces', s.ces,
                                      'comment', s.comment, 'created_at', cd_ts(s.created_at))
              FROM surveys s WHERE s.id = (v_res ->> 'survey')::bigint));
    ELSE
        PERFORM cd_not_found(format('no action "%s"', left(coalesce(v_action, ''), 64)));
    END CASE;

    UPDATE conversation_events SET data = data || jsonb_build_object('api_token', v_tname)
     WHERE conversation_id = v_conv AND id > v_ev AND jsonb_typeof(data) = 'object';
    v_out := coalesce(v_out, '{}'::jsonb)
          || jsonb_build_object('conversation', cd_api_conversation_obj(v_conv));
    IF v_kid IS NOT NULL THEN
        UPDATE idempotency_keys SET response_status = v_status, response_body = v_out::text
         WHERE id = v_kid;
    END IF;
    RETURN jsonb_build_object('replay', false, 'status', v_status, 'body', v_out, 'result', v_res);
END
$$;

-- ---------------------------------------------------------------------------
-- Realtime statistics
-- ---------------------------------------------------------------------------

-- cd_api_realtime() -> {queues:[{id, name, sla_at_risk, last_waiting}]} by id
--   sla_at_risk   open conversations of the queue with a running SLA timer
--                 that has already warned or breached
--   last_waiting  the queued conversation last in the queue's serving order
--                 (lowest priority, newest), for the router's wait estimate;
--                 null when none waits
-- The waiting counts themselves come from the router (in memory).
CREATE FUNCTION cd_api_realtime() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('queues', coalesce(jsonb_agg(jsonb_build_object(
               'id', q.id, 'name', q.name,
               'sla_at_risk', (
                   SELECT count(*) FROM conversations c
                    WHERE c.queue_id = q.id
                      AND c.status IN ('queued', 'offered', 'assigned', 'pending')
                      AND EXISTS (SELECT 1 FROM sla_timers t
                                   WHERE t.conversation_id = c.id AND t.stopped_at IS NULL
                                     AND (t.warned_at IS NOT NULL OR t.breached_at IS NOT NULL))),
               'last_waiting', (
                   SELECT c.id FROM conversations c
                    WHERE c.queue_id = q.id AND c.status = 'queued'
                    ORDER BY c.priority, c.enqueued_at DESC, c.id DESC LIMIT 1))
           ORDER BY q.id), '[]'::jsonb))
      FROM queues q
$$;
