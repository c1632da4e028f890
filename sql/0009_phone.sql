-- 0009_phone.sql -- phone events (SPEC section 2): one call = one voice conversation.
--
-- The PBX reports what happens to a call (offered, queued, answered, held,
-- resumed, transferred, ended, abandoned, voicemail); contactd routes queued
-- calls to agents and tells the PBX where to send them.  Every event is
-- stored once (the unique indexes of phone_events in 0001 implement SPEC's
-- dedupe rules); events that arrive out of order are kept in `at` order and
-- the call's state is the replay of all its events in that order, where a
-- state never goes back to an earlier stage:
--     offered (1) < queued (2) < answered / held / transferred (3) < ended /
--     abandoned / voicemail (4, final: the first final event in `at` order wins)
-- Within stage 3 the events alternate freely (held, resumed = answered, ...).
--
-- The conversation (channel voice, external_ref = call_id) is created by the
-- call's first event.  It waits with no queue (the router ignores it) until
-- `queued` names one (or the default); then it is routed like any contact,
-- and its SLA clocks start.  The caller is the customer holding the `from`
-- number as a phone identity, else a new customer who gets it.

-- The router must never see a waiting conversation without a queue (a call
-- still in the IVR): same snapshot as 0003 plus that filter.
CREATE OR REPLACE FUNCTION cd_router_snapshot() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'now', cd_ms(now()),
        'queues', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', q.id, 'name', q.name,
                       'skills', coalesce((SELECT jsonb_object_agg(qs.skill_id::text, qs.min_level)
                                             FROM queue_skills qs WHERE qs.queue_id = q.id), '{}'::jsonb),
                       'priority', q.priority, 'overflow', q.overflow,
                       'service_level_s', q.service_level_s, 'sla_policy', q.sla_policy_id)
                   ORDER BY q.id)
              FROM queues q), '[]'::jsonb),
        'agents', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', a.id, 'login', a.login, 'role', a.role, 'tier', a.tier,
                       'skills', coalesce((SELECT jsonb_object_agg(ak.skill_id::text, ak.level)
                                             FROM agent_skills ak WHERE ak.agent_id = a.id), '{}'::jsonb),
                       'capacity', jsonb_build_object('chat', a.capacity_chat, 'email', a.capacity_email,
                                                      'voice', a.capacity_voice),
                       'status', a.status, 'status_at', cd_ms(a.status_at))
                   ORDER BY a.id)
              FROM agents a WHERE a.deleted_at IS NULL), '[]'::jsonb),
        'conversations', coalesce((
            SELECT jsonb_agg(cd_route_info(c.id) ORDER BY c.id)
              FROM conversations c
             WHERE c.status IN ('queued', 'offered', 'assigned', 'pending')
               AND (c.queue_id IS NOT NULL OR c.agent_id IS NOT NULL)), '[]'::jsonb))
$$;

-- Stage of a call state / event (see the top of this file).
CREATE FUNCTION cd_call_stage(p_state text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_state WHEN 'offered' THEN 1 WHEN 'queued' THEN 2
                        WHEN 'answered' THEN 3 WHEN 'held' THEN 3 WHEN 'resumed' THEN 3
                        WHEN 'transferred' THEN 3 ELSE 4 END
$$;

-- The state after replaying CALL's stored events in `at` order.
CREATE FUNCTION cd_call_replay(p_call_id text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_state text;
    e record;
BEGIN
    FOR e IN SELECT event FROM phone_events WHERE call_id = p_call_id ORDER BY at, id LOOP
        IF v_state IS NULL
           OR (cd_call_stage(v_state) < 4 AND cd_call_stage(e.event) >= cd_call_stage(v_state)) THEN
            v_state := CASE e.event WHEN 'resumed' THEN 'answered' ELSE e.event END;
        END IF;
    END LOOP;
    RETURN v_state;
END
$$;

-- The customer of phone number P_NUMBER (E.164): its holder, or a new
-- customer who gets it as an identity.  Serialised per number.
CREATE FUNCTION cd_customer_by_phone(p_number text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_cust bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(cd_lock_class_identity(), hashtext('phone:' || p_number));
    SELECT customer_id INTO v_cust FROM customer_identities WHERE kind = 'phone' AND value = p_number;
    IF v_cust IS NOT NULL THEN RETURN cd_customer_live(v_cust); END IF;
    INSERT INTO customers DEFAULT VALUES RETURNING id INTO v_cust;
    INSERT INTO customer_identities (customer_id, kind, value) VALUES (v_cust, 'phone', p_number);
    RETURN v_cust;
END
$$;

-- cd_phone_event(p) -> {conversation, call, state, previous, duplicate,
--     route, removed, handed_to, resolved, customer, queue}
-- Input (SPEC section 2): call_id (string 1..200), event, event_id (string
--   1..200 | null), from / to (phone numbers; spaces, dots, dashes and
--   parentheses dropped; `from` must then be E.164 to name the customer,
--   anything else is only recorded), at (ISO 8601 with zone, or epoch ms;
--   default now), queue (name or id), default_queue (name: config
--   routing.default_queue), agent (login or id), ivr (object), recording_url
--   (string <= 2048).
-- Output, besides ids and the call's state before / after:
--   duplicate  the event was stored before (nothing changed; same ids)
--   route      cd_route_info when this event put the call into routing
--   removed    true when the call must leave the router (abandoned, ended
--              or voicemail before anyone took it)
--   handed_to  the agent the call now belongs to when the PBX says so
--              (answered / transferred with `agent`, taken at the PBX) --
--              the router must assign it there
--   resolved   true when the call ended after an agent had it (the agent's
--              voice slot is free)
-- Conversation effects: queued -> queue, priority, SLA policy of the queue
--   (clocks start), status queued, enqueued_at, timeline `enqueued`;
--   answered -> status assigned (agent_id = `agent` if given, else the
--   agent it was routed to), assigned_at, first_response_at; transferred
--   with an agent -> agent_id; ended -> status closed, closed_at, talk_s
--   (ended - answered) or, never answered, abandoned; abandoned ->
--   status abandoned; voicemail -> status abandoned, the recording kept as
--   an inbound message and timeline `voicemail`.  Every stored event is in
--   the timeline as `call_<event>` {call_id, at, agent, ...}.
-- Errors: 22023 naming the field (call_id, event, event_id, at, queue,
--   agent, recording_url, ivr, from, to); no queue at all when one is
--   needed: 22023 on queue.
CREATE FUNCTION cd_phone_event(p jsonb) RETURNS jsonb
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
    PERFORM cd_check_body(p);
    v_call_id := cd_j_opt_text(p, 'call_id', 200);
    IF v_call_id IS NULL THEN PERFORM cd_invalid('call_id', 'is required'); END IF;
    v_event := cd_j_opt_text(p, 'event', 20);
    IF v_event IS NULL OR v_event NOT IN ('offered', 'queued', 'answered', 'held', 'resumed', 'transferred',
                                          'ended', 'abandoned', 'voicemail') THEN
        PERFORM cd_invalid('event', 'must be offered, queued, answered, held, resumed, transferred, '
                                    'ended, abandoned or voicemail');
    END IF;
    v_event_id := cd_j_opt_text(p, 'event_id', 200);
    v_at := CASE WHEN cd_opt(p, 'at') IS NULL THEN now() ELSE cd_j_time(p, 'at') END;
    v_from := regexp_replace(cd_j_opt_text(p, 'from', 64), '[[:space:]().-]', '', 'g');
    v_to := regexp_replace(cd_j_opt_text(p, 'to', 64), '[[:space:]().-]', '', 'g');
    v_agent := cd_j_opt_ref(p, 'agents', 'agent');
    v_rec := cd_j_opt_text(p, 'recording_url', 2048);
    v_ivr := cd_opt(p, 'ivr');
    IF v_ivr IS NOT NULL AND jsonb_typeof(v_ivr) <> 'object' THEN
        PERFORM cd_invalid('ivr', 'must be an object');
    END IF;
    IF v_event = 'queued' THEN
        v_queue := coalesce(cd_j_opt_ref(p, 'queues', 'queue'),
                            (SELECT q.id FROM queues q
                              WHERE lower(q.name) = lower(nullif(p ->> 'default_queue', ''))),
                            (SELECT min(q.id) FROM queues q));
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
