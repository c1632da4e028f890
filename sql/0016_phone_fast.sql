-- 0016_phone_fast.sql -- the path from a PBX's `queued` to its `route`, with fewer statements.
--
-- Every PL/pgSQL statement that is not a simple expression (PERFORM, SELECT INTO, INSERT,
-- UPDATE, a nested function's own statements, a statement trigger) costs ~20-40 us; a
-- phone call's `queued` ran ~40 of them, its offer and its accept ~15 each.  Same
-- signatures, same results, same errors; what changed:
--   cd_admin_resolve: static SQL per kind instead of EXECUTE (planned again at every call).
--   cd_customer_by_phone: a new customer and its identity in one statement.
--   cd_phone_event: the first event of a call being `queued` (the common case: the PBX
--     queues a new call) inserts the conversation already queued (queue, priority, SLA
--     policy, enqueued_at; the insert trigger arms the SLA clocks from created_at as the
--     explicit arming did) and the call in its final state, instead of inserting, replaying
--     and updating both; its two timeline events go in one INSERT.  A queue given by name
--     is looked up directly.  Field checks test the plain case inline and call the 0003
--     helpers only for anything else (so errors are theirs).  Every other event takes the
--     0009 path unchanged.
--   cd_offer_create / cd_offer_decide: the offer (or its decision), the conversation's
--     status and the timeline events in one statement (data-modifying CTEs).

CREATE OR REPLACE FUNCTION cd_admin_resolve(p_kind text, p_key text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m    record := cd_admin_meta(p_kind);   -- 'unknown kind' first, as before
    v_id bigint;
    v_n  bigint;
BEGIN
    IF p_key IS NULL OR p_key = '' THEN
        RETURN NULL;
    END IF;
    IF p_key ~ '^[0-9]+$' THEN
        -- names never are all digits, so this is an id
        IF length(ltrim(p_key, '0')) > 18 THEN
            RETURN NULL;                       -- beyond bigint: cannot exist
        END IF;
        v_n := p_key::bigint;
        CASE p_kind
        WHEN 'queues' THEN SELECT id INTO v_id FROM queues WHERE id = v_n;
        WHEN 'agents' THEN SELECT id INTO v_id FROM agents WHERE id = v_n AND deleted_at IS NULL;
        WHEN 'skills' THEN SELECT id INTO v_id FROM skills WHERE id = v_n;
        WHEN 'sla-policies' THEN SELECT id INTO v_id FROM sla_policies WHERE id = v_n;
        WHEN 'inboxes' THEN SELECT id INTO v_id FROM inboxes WHERE id = v_n;
        ELSE SELECT id INTO v_id FROM api_tokens WHERE id = v_n AND revoked_at IS NULL;
        END CASE;
    ELSE
        -- matches the unique indexes on lower(name) / lower(login); addresses are
        -- stored trimmed and lower-cased (plain unique index)
        CASE p_kind
        WHEN 'queues' THEN SELECT id INTO v_id FROM queues WHERE lower(name) = lower(p_key);
        WHEN 'agents' THEN
            SELECT id INTO v_id FROM agents WHERE lower(login) = lower(p_key) AND deleted_at IS NULL;
        WHEN 'skills' THEN SELECT id INTO v_id FROM skills WHERE lower(name) = lower(p_key);
        WHEN 'sla-policies' THEN SELECT id INTO v_id FROM sla_policies WHERE lower(name) = lower(p_key);
        WHEN 'inboxes' THEN SELECT id INTO v_id FROM inboxes WHERE address = lower(btrim(p_key));
        ELSE
            SELECT id INTO v_id FROM api_tokens WHERE lower(name) = lower(p_key) AND revoked_at IS NULL;
        END CASE;
    END IF;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION cd_customer_by_phone(p_number text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_cust bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(cd_lock_class_identity(), hashtext('phone:' || p_number));
    SELECT customer_id INTO v_cust FROM customer_identities WHERE kind = 'phone' AND value = p_number;
    IF v_cust IS NOT NULL THEN RETURN cd_customer_live(v_cust); END IF;
    WITH n AS (INSERT INTO customers DEFAULT VALUES RETURNING id)
    INSERT INTO customer_identities (customer_id, kind, value)
    SELECT n.id, 'phone', p_number FROM n
    RETURNING customer_id INTO v_cust;
    RETURN v_cust;
END
$$;

-- See 0009 for the contract.
CREATE OR REPLACE FUNCTION cd_phone_event(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_call_id  text;
    v_event    text;
    v_event_id text;
    v_at       timestamptz;
    v_from     text;
    v_to       text;
    v_queue    bigint;
    v_agent    bigint;
    v_rec      text;
    v_ivr      jsonb;
    v_ins      bigint;
    k          calls;
    c          conversations;
    v_prev     text;
    v_state    text;
    v_cust     bigint;
    v_route    jsonb;
    v_removed  boolean := false;
    v_handed   bigint;
    v_resolved boolean := false;
    v_data     jsonb;
BEGIN
    IF p IS NULL OR jsonb_typeof(p) <> 'object' THEN
        PERFORM cd_invalid('body', 'must be a JSON object');
    END IF;
    -- a non-blank string within its length is taken as is; anything else goes through
    -- cd_j_opt_text (NULL, '' -> NULL, or its error)
    v_call_id := CASE WHEN jsonb_typeof(p -> 'call_id') = 'string' AND length(p ->> 'call_id') <= 200
                           AND btrim(p ->> 'call_id') <> '' THEN p ->> 'call_id'
                      ELSE cd_j_opt_text(p, 'call_id', 200) END;
    IF v_call_id IS NULL THEN PERFORM cd_invalid('call_id', 'is required'); END IF;
    v_event := CASE WHEN jsonb_typeof(p -> 'event') = 'string' AND length(p ->> 'event') <= 20
                         AND btrim(p ->> 'event') <> '' THEN p ->> 'event'
                    ELSE cd_j_opt_text(p, 'event', 20) END;
    IF v_event IS NULL OR v_event NOT IN ('offered', 'queued', 'answered', 'held', 'resumed', 'transferred',
                                          'ended', 'abandoned', 'voicemail') THEN
        PERFORM cd_invalid('event', 'must be offered, queued, answered, held, resumed, transferred, '
                                    'ended, abandoned or voicemail');
    END IF;
    v_event_id := CASE WHEN p -> 'event_id' IS NULL THEN NULL
                       WHEN jsonb_typeof(p -> 'event_id') = 'string' AND length(p ->> 'event_id') <= 200
                            AND btrim(p ->> 'event_id') <> '' THEN p ->> 'event_id'
                       ELSE cd_j_opt_text(p, 'event_id', 200) END;
    v_at := CASE WHEN cd_opt(p, 'at') IS NULL THEN now() ELSE cd_j_time(p, 'at') END;
    v_from := regexp_replace(CASE WHEN p -> 'from' IS NULL THEN NULL
                                  WHEN jsonb_typeof(p -> 'from') = 'string' AND length(p ->> 'from') <= 64
                                       AND btrim(p ->> 'from') <> '' THEN p ->> 'from'
                                  ELSE cd_j_opt_text(p, 'from', 64) END,
                             '[[:space:]().-]', '', 'g');
    v_to := regexp_replace(CASE WHEN p -> 'to' IS NULL THEN NULL
                                WHEN jsonb_typeof(p -> 'to') = 'string' AND length(p ->> 'to') <= 64
                                     AND btrim(p ->> 'to') <> '' THEN p ->> 'to'
                                ELSE cd_j_opt_text(p, 'to', 64) END,
                           '[[:space:]().-]', '', 'g');
    v_agent := CASE WHEN p -> 'agent' IS NULL THEN NULL ELSE cd_j_opt_ref(p, 'agents', 'agent') END;
    v_rec := CASE WHEN p -> 'recording_url' IS NULL THEN NULL
                  ELSE cd_j_opt_text(p, 'recording_url', 2048) END;
    v_ivr := cd_opt(p, 'ivr');
    IF v_ivr IS NOT NULL AND jsonb_typeof(v_ivr) <> 'object' THEN
        PERFORM cd_invalid('ivr', 'must be an object');
    END IF;
    IF v_event = 'queued' THEN
        -- a name (not all digits) that exists: found here; anything else as in 0009
        IF jsonb_typeof(p -> 'queue') = 'string' AND p ->> 'queue' !~ '^[0-9]*$' THEN
            SELECT q.id INTO v_queue FROM queues q WHERE lower(q.name) = lower(p ->> 'queue');
        END IF;
        IF v_queue IS NULL THEN
            v_queue := coalesce(cd_j_opt_ref(p, 'queues', 'queue'),
                                (SELECT q.id FROM queues q
                                  WHERE lower(q.name) = lower(nullif(p ->> 'default_queue', ''))),
                                (SELECT min(q.id) FROM queues q));
        END IF;
        IF v_queue IS NULL THEN PERFORM cd_invalid('queue', 'no queue to route the call to'); END IF;
    END IF;

    -- one call at a time (its first event creates it)
    PERFORM pg_advisory_xact_lock(cd_lock_class_identity(), hashtext('call:' || v_call_id));
    SELECT * INTO k FROM calls WHERE call_id = v_call_id FOR UPDATE;

    INSERT INTO phone_events (call_id, event, event_id, at, data)
    VALUES (v_call_id, v_event, v_event_id, v_at,
            jsonb_strip_nulls(jsonb_build_object('from', v_from, 'to', v_to, 'agent', v_agent,
                                                 'queue', v_queue, 'ivr', v_ivr, 'recording_url', v_rec)))
    ON CONFLICT DO NOTHING
    RETURNING id INTO v_ins;
    IF v_ins IS NULL THEN
        IF k.id IS NULL THEN   -- cannot happen: an event is stored with its call
            PERFORM cd_not_found(format('call %s not found', v_call_id));
        END IF;
        SELECT * INTO c FROM conversations WHERE id = k.conversation_id;
        RETURN jsonb_build_object('conversation', c.id, 'call', k.id, 'call_id', v_call_id, 'state', k.state,
                                  'previous', k.state, 'duplicate', true, 'customer', c.customer_id,
                                  'queue', c.queue_id, 'status', c.status,
                                  'route', NULL, 'removed', false, 'handed_to', NULL, 'resolved', false);
    END IF;

    IF k.id IS NULL THEN
        v_cust := CASE WHEN v_from ~ '^\+[1-9][0-9]{6,14}$' THEN cd_customer_by_phone(v_from) END;
        IF v_cust IS NULL THEN
            INSERT INTO customers (attributes)
            VALUES (jsonb_strip_nulls(jsonb_build_object('phone', v_from))) RETURNING id INTO v_cust;
        END IF;
        IF v_event = 'queued' THEN
            -- a new call queued at once: its only event is this one, so the replay is
            -- 'queued' and the conversation goes straight into its queue
            INSERT INTO conversations (customer_id, channel, status, external_ref, last_message_at,
                                       queue_id, enqueued_at, priority, sla_policy_id)
            VALUES (v_cust, 'voice', 'queued', v_call_id, v_at, v_queue, now(),
                    (SELECT q.priority FROM queues q WHERE q.id = v_queue),
                    (SELECT q.sla_policy_id FROM queues q WHERE q.id = v_queue))
            RETURNING * INTO c;
            INSERT INTO calls (call_id, conversation_id, state, from_number, to_number, recording_url,
                               last_event_at)
            VALUES (v_call_id, c.id, 'queued', v_from, v_to, v_rec, v_at)
            RETURNING * INTO k;
            v_data := jsonb_strip_nulls(jsonb_build_object('call_id', v_call_id, 'at', cd_ts(v_at),
                                                           'event_id', v_event_id, 'agent', v_agent,
                                                           'from', v_from, 'ivr', v_ivr,
                                                           'recording_url', v_rec, 'state', k.state));
            INSERT INTO conversation_events (conversation_id, kind, data)
            VALUES (c.id, 'call_queued', v_data),
                   (c.id, 'enqueued', jsonb_build_object('queue', v_queue, 'reason', 'call queued'));
            RETURN jsonb_build_object('conversation', c.id, 'call', k.id, 'call_id', v_call_id,
                                      'state', k.state, 'previous', NULL, 'duplicate', false,
                                      'customer', c.customer_id, 'queue', c.queue_id, 'status', c.status,
                                      'route', cd_route_info(c.id), 'removed', false, 'handed_to', NULL,
                                      'resolved', false);
        END IF;
        INSERT INTO conversations (customer_id, channel, status, external_ref, last_message_at)
        VALUES (v_cust, 'voice', 'queued', v_call_id, v_at)
        RETURNING * INTO c;
        INSERT INTO calls (call_id, conversation_id, state, from_number, to_number, last_event_at)
        VALUES (v_call_id, c.id, v_event, v_from, v_to, v_at)
        RETURNING * INTO k;
        v_prev := NULL;
    ELSE
        c := cd_conversation_lock(k.conversation_id);
        v_prev := k.state;
    END IF;

    v_state := cd_call_replay(v_call_id);
    UPDATE calls
       SET state = CASE v_state WHEN 'resumed' THEN 'answered' ELSE v_state END,
           from_number = coalesce(from_number, v_from), to_number = coalesce(to_number, v_to),
           agent_id = CASE WHEN v_event IN ('answered', 'transferred') AND v_agent IS NOT NULL
                           THEN v_agent ELSE agent_id END,
           recording_url = coalesce(v_rec, recording_url),
           last_event_at = greatest(last_event_at, v_at),
           answered_at = CASE WHEN v_event = 'answered' THEN least(coalesce(answered_at, v_at), v_at)
                              ELSE answered_at END,
           ended_at = CASE WHEN v_event IN ('ended', 'abandoned', 'voicemail') AND cd_call_stage(v_state) = 4
                           THEN coalesce(ended_at, v_at) ELSE ended_at END
     WHERE id = k.id RETURNING * INTO k;
    IF k.ended_at IS NOT NULL AND k.answered_at IS NOT NULL AND k.state = 'ended' THEN
        UPDATE calls SET talk_s = greatest(0, floor(extract(epoch FROM k.ended_at - k.answered_at)))::int
         WHERE id = k.id RETURNING * INTO k;
    END IF;

    v_data := jsonb_strip_nulls(jsonb_build_object('call_id', v_call_id, 'at', cd_ts(v_at), 'event_id', v_event_id,
                                                   'agent', v_agent, 'from', v_from, 'ivr', v_ivr,
                                                   'recording_url', v_rec, 'state', k.state));
    PERFORM cd_event(c.id, 'call_' || v_event, v_data);

    -- effects on the conversation, only when the event moved the call on
    IF v_event = 'queued' AND k.state = 'queued' AND c.queue_id IS NULL
       AND c.status = 'queued' THEN
        UPDATE conversations cv
           SET queue_id = v_queue, enqueued_at = now(),
               priority = (SELECT q.priority FROM queues q WHERE q.id = v_queue),
               sla_policy_id = (SELECT q.sla_policy_id FROM queues q WHERE q.id = v_queue)
         WHERE cv.id = c.id RETURNING * INTO c;
        PERFORM cd_event(c.id, 'enqueued', jsonb_build_object('queue', v_queue, 'reason', 'call queued'));
        IF c.sla_policy_id IS NOT NULL THEN
            PERFORM cd_sla_arm(c.id, c.sla_policy_id, 'first_response', c.created_at);
            PERFORM cd_sla_arm(c.id, c.sla_policy_id, 'resolution', c.created_at);
            PERFORM cd_sla_schedule(c.id);
        END IF;
        v_route := cd_route_info(c.id);
    ELSIF k.state IN ('answered', 'held', 'transferred') AND c.status IN ('queued', 'offered', 'assigned')
          AND (c.status <> 'assigned' OR (v_agent IS NOT NULL AND v_agent IS DISTINCT FROM c.agent_id)) THEN
        -- taken at the PBX (or moved to another agent there)
        IF c.status = 'offered' THEN PERFORM cd_revoke_pending_offer(c.id, 'taken'); END IF;
        IF coalesce(v_agent, c.agent_id) IS NOT NULL THEN
            UPDATE conversations
               SET status = 'assigned', agent_id = coalesce(v_agent, agent_id),
                   assigned_at = coalesce(assigned_at, v_at),
                   first_response_at = coalesce(first_response_at, v_at)
             WHERE id = c.id RETURNING * INTO c;
            v_handed := c.agent_id;
            PERFORM cd_sla_stop(c.id, ARRAY['first_response'], v_at);
        ELSIF c.queue_id IS NOT NULL THEN
            -- answered by someone contactd does not know: out of routing
            UPDATE conversations SET status = 'closed', closed_at = v_at WHERE id = c.id RETURNING * INTO c;
            v_removed := true;
        END IF;
    ELSIF v_event = 'answered' AND c.status = 'assigned' THEN
        UPDATE conversations SET first_response_at = coalesce(first_response_at, v_at) WHERE id = c.id;
        PERFORM cd_sla_stop(c.id, ARRAY['first_response'], v_at);
    ELSIF cd_call_stage(k.state) = 4 AND c.status IN ('queued', 'offered', 'assigned', 'pending') THEN
        IF c.status = 'offered' THEN PERFORM cd_revoke_pending_offer(c.id, 'cancelled'); END IF;
        IF k.state = 'ended' AND c.status IN ('assigned', 'pending') THEN
            UPDATE conversations SET status = 'closed', closed_at = v_at WHERE id = c.id RETURNING * INTO c;
            v_resolved := true;
        ELSE
            v_removed := c.queue_id IS NOT NULL;
            UPDATE conversations SET status = 'abandoned', closed_at = v_at WHERE id = c.id RETURNING * INTO c;
            IF k.state = 'voicemail' THEN
                INSERT INTO messages (conversation_id, channel, direction, author_kind, author_customer_id, body,
                                      metadata)
                VALUES (c.id, 'voice', 'in', 'customer', c.customer_id,
                        'Voicemail' || coalesce(': ' || k.recording_url, ''),
                        jsonb_strip_nulls(jsonb_build_object('recording_url', k.recording_url)));
                PERFORM cd_event(c.id, 'voicemail', jsonb_strip_nulls(jsonb_build_object(
                    'recording_url', k.recording_url)));
            END IF;
        END IF;
    END IF;

    IF v_handed IS NOT NULL THEN v_route := cd_route_info(c.id); END IF;
    RETURN jsonb_build_object('conversation', c.id, 'call', k.id, 'call_id', v_call_id, 'state', k.state,
                              'previous', v_prev, 'duplicate', false, 'customer', c.customer_id,
                              'queue', c.queue_id, 'status', c.status, 'route', v_route,
                              'removed', v_removed, 'handed_to', v_handed, 'resolved', v_resolved);
END
$$;

-- See 0003 for the contract.
CREATE OR REPLACE FUNCTION cd_offer_create(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_conv    bigint;
    v_agent   bigint;
    v_expires timestamptz;
    v_reason  jsonb;
    c         conversations;
    v_offer   bigint;
BEGIN
    IF p IS NULL OR jsonb_typeof(p) <> 'object' THEN
        PERFORM cd_invalid('body', 'must be a JSON object');
    END IF;
    v_conv := cd_j_id(p, 'conversation');
    v_agent := cd_j_id(p, 'agent');
    v_expires := cd_j_time(p, 'expires_at');
    IF v_expires < now() THEN
        PERFORM cd_invalid('expires_at', 'must not be in the past');
    END IF;
    v_reason := coalesce(p -> 'reason', 'null');
    -- the live agent and the conversation's row lock in one statement; when either is
    -- missing, the errors of cd_agent_live and cd_conversation_lock in their order
    SELECT cv.* INTO c FROM conversations cv
     WHERE cv.id = v_conv AND EXISTS (SELECT 1 FROM agents a WHERE a.id = v_agent AND a.deleted_at IS NULL)
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM cd_agent_live(v_agent);
        c := cd_conversation_lock(v_conv);
    END IF;
    IF c.status <> 'queued' THEN
        PERFORM cd_wrong_state(format('conversation %s is %s, not queued', c.id, c.status));
    END IF;
    WITH o AS (INSERT INTO offers (conversation_id, agent_id, expires_at)
               VALUES (c.id, v_agent, v_expires) RETURNING id),
         u AS (UPDATE conversations SET status = 'offered' WHERE id = c.id RETURNING id),
         e AS (INSERT INTO conversation_events (conversation_id, kind, data)
               SELECT c.id, 'offered', jsonb_build_object('offer', o.id, 'agent', v_agent,
                                                          'expires_at', cd_ts(v_expires), 'reason', v_reason)
                 FROM o)
    SELECT o.id INTO v_offer FROM o, u;
    RETURN jsonb_build_object('offer', v_offer, 'conversation', c.id, 'agent', v_agent,
                              'expires_at', cd_ts(v_expires), 'route', cd_route_info(c.id));
END
$$;

-- See 0003 for the contract.
CREATE OR REPLACE FUNCTION cd_offer_decide(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_offer    bigint;
    v_decision text;
    v_reason   jsonb;
    v_cmid     text;
    v_replay   jsonb;
    o          offers;
    c          conversations;
BEGIN
    IF p IS NULL OR jsonb_typeof(p) <> 'object' THEN
        PERFORM cd_invalid('body', 'must be a JSON object');
    END IF;
    v_offer := cd_j_id(p, 'offer');
    IF NOT p ? 'decision' THEN PERFORM cd_invalid('decision', 'is required'); END IF;
    v_decision := cd_j_text(p -> 'decision', 'decision');
    IF v_decision NOT IN ('accepted', 'rejected', 'expired', 'revoked') THEN
        PERFORM cd_invalid('decision', 'must be "accepted", "rejected", "expired" or "revoked"');
    END IF;
    v_reason := cd_opt(p, 'reason');
    v_cmid := CASE WHEN p -> 'client_msg_id' IS NULL THEN NULL ELSE cd_j_client_msg_id(p) END;

    IF v_cmid IS NULL THEN
        -- the offer's conversation, locked, in one statement (no retry key to look up first)
        SELECT cv.* INTO c FROM conversations cv
         WHERE cv.id = (SELECT x.conversation_id FROM offers x WHERE x.id = v_offer)
           FOR NO KEY UPDATE;
    END IF;
    IF c.id IS NULL THEN
        SELECT * INTO o FROM offers WHERE id = v_offer;
        IF NOT FOUND THEN PERFORM cd_not_found(format('offer %s not found', v_offer)); END IF;
        v_replay := cd_request_replay('agent', o.agent_id, v_cmid, 'offer');
        IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
        -- lock order: the conversation, then the offer (as everywhere)
        c := cd_conversation_lock(o.conversation_id);
    END IF;
    SELECT * INTO o FROM offers WHERE id = v_offer FOR UPDATE;
    IF o.state <> 'pending' THEN
        PERFORM cd_wrong_state(format('offer %s is already %s', o.id, o.state));
    END IF;
    IF v_decision = 'accepted' AND c.status <> 'offered' THEN
        PERFORM cd_wrong_state(format('conversation %s is %s, not offered', c.id, c.status));
    END IF;

    IF v_decision = 'accepted' THEN
        WITH d AS (UPDATE offers
                      SET state = v_decision, decided_at = now(),
                          reason = cd_reason_text(v_reason)
                    WHERE id = o.id RETURNING id),
             e AS (INSERT INTO conversation_events (conversation_id, kind, data)
                   VALUES (c.id, 'accepted', jsonb_build_object('offer', o.id, 'agent', o.agent_id,
                                                                'reason', v_reason)),
                          (c.id, 'assigned', jsonb_build_object('offer', o.id, 'agent', o.agent_id))),
             u AS (UPDATE conversations
                      SET status = 'assigned', agent_id = o.agent_id,
                          assigned_at = coalesce(assigned_at, now()), target_agent_id = NULL
                    WHERE id = c.id RETURNING *)
        SELECT u.* INTO c FROM u, d;
    ELSE
        UPDATE offers
           SET state = v_decision, decided_at = now(),
               reason = coalesce(cd_reason_text(v_reason), CASE v_decision WHEN 'expired' THEN 'timeout' END)
         WHERE id = o.id;
        IF c.status = 'offered' THEN
            UPDATE conversations SET status = 'queued' WHERE id = c.id RETURNING * INTO c;
        END IF;
        PERFORM cd_event(c.id, CASE v_decision WHEN 'rejected' THEN 'rejected'
                                               WHEN 'expired' THEN 'offer_timeout' ELSE 'revoked' END,
                         jsonb_build_object('offer', o.id, 'agent', o.agent_id, 'reason', v_reason));
    END IF;
    RETURN cd_request_save('agent', o.agent_id, v_cmid, 'offer', jsonb_build_object(
        'offer', o.id, 'conversation', c.id, 'agent', o.agent_id, 'state', v_decision,
        'customer', c.customer_id, 'channel', c.channel, 'queue', c.queue_id, 'status', c.status,
        'duplicate', false));
END
$$;
