-- 0020_phone_offer.sql -- a call queued with an agent free is offered in the same transaction.
--
-- The path from a PBX's `queued` to its `route` ran three transactions: the call event
-- (durable), the offer (cd_offer_create: lock, INSERT offers, UPDATE the conversation to
-- offered, a timeline event; ~0.8-0.9 ms of the ~3 ms median), the accept (durable).  When
-- the router can pick an agent for the call before it is stored (given a stand-in for the
-- call, it offers it at once: an eligible agent is free that nobody ahead in line takes;
-- src/routing/routing.c, routing_preroute), the daemon passes that pick here and the conversation is inserted already offered, with its
-- offer row and its `offered` event in the same statements as the call's own: no second
-- transaction, no UPDATE of the conversation.
--
-- cd_phone_event(p, p_offer) -> as cd_phone_event(p) (0009/0016), plus `offer` (the offer's
--   id) when it made one.  P_OFFER: null, or {queue, agent, expires_at (epoch ms), reason
--   (the router's why, stored in the `offered` event as cd_offer_create does), sticky_s
--   (routing.sticky_agent_s)}.  It is used only for the first event of a new call being
--   `queued` into P_OFFER's queue, when the offer has not expired, the agent exists and no
--   other agent served this customer within sticky_s (the router picked without knowing
--   the customer, so it could not prefer that agent); otherwise it is ignored (no `offer`)
--   and the daemon routes the call as before.  Not reachable from the HTTP API: the daemon
--   passes p_offer only for its own pick.
-- cd_phone_event(p) is cd_phone_event(p, NULL).

CREATE FUNCTION cd_phone_event(p jsonb, p_offer jsonb) RETURNS jsonb
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
    v_oagent   bigint;
    v_oexp     timestamptz;
    v_offer    bigint;
    v_last     bigint;
    v_last_at  timestamptz;
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
            -- 'queued' and the conversation goes straight into its queue.  With P_OFFER
            -- (the router's pick for it, made before this call), it is offered at once
            -- when that pick still holds: same queue, offer not expired, the agent not
            -- deleted, and no other agent who served this customer within sticky_s (the
            -- router, which knew no customer, would have preferred that one).
            IF p_offer IS NOT NULL THEN
                v_oagent := (p_offer ->> 'agent')::bigint;
                v_oexp := to_timestamp((p_offer ->> 'expires_at')::numeric / 1000);
                -- the customer's last agent (cd_route_info's rule)
                SELECT x.agent_id, coalesce(x.resolved_at, x.closed_at, x.last_message_at, x.updated_at)
                  INTO v_last, v_last_at
                  FROM conversations x
                 WHERE x.customer_id = v_cust AND x.agent_id IS NOT NULL
                 ORDER BY x.id DESC LIMIT 1;
                IF (p_offer ->> 'queue')::bigint IS DISTINCT FROM v_queue OR v_oexp <= now()
                   OR NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = v_oagent AND a.deleted_at IS NULL)
                   OR (v_last <> v_oagent
                       AND v_last_at > now() - make_interval(
                           secs => greatest(0, coalesce((p_offer ->> 'sticky_s')::int, 0))))
                THEN
                    v_oagent := NULL;
                END IF;
            END IF;
            INSERT INTO conversations (customer_id, channel, status, external_ref, last_message_at,
                                       queue_id, enqueued_at, priority, sla_policy_id)
            VALUES (v_cust, 'voice', CASE WHEN v_oagent IS NULL THEN 'queued' ELSE 'offered' END,
                    v_call_id, v_at, v_queue, now(),
                    (SELECT q.priority FROM queues q WHERE q.id = v_queue),
                    (SELECT q.sla_policy_id FROM queues q WHERE q.id = v_queue))
            RETURNING * INTO c;
            INSERT INTO calls (call_id, conversation_id, state, from_number, to_number, recording_url,
                               last_event_at)
            VALUES (v_call_id, c.id, 'queued', v_from, v_to, v_rec, v_at)
            RETURNING * INTO k;
            IF v_oagent IS NOT NULL THEN
                INSERT INTO offers (conversation_id, agent_id, expires_at)
                VALUES (c.id, v_oagent, v_oexp) RETURNING id INTO v_offer;
            END IF;
            v_data := jsonb_strip_nulls(jsonb_build_object('call_id', v_call_id, 'at', cd_ts(v_at),
                                                           'event_id', v_event_id, 'agent', v_agent,
                                                           'from', v_from, 'ivr', v_ivr,
                                                           'recording_url', v_rec, 'state', k.state));
            -- the events cd_offer_create would have added, in one INSERT with the call's
            INSERT INTO conversation_events (conversation_id, kind, data)
            SELECT c.id, e.kind, e.data
              FROM (VALUES (1, 'call_queued', v_data),
                           (2, 'enqueued', jsonb_build_object('queue', v_queue, 'reason', 'call queued')),
                           (3, 'offered', jsonb_build_object('offer', v_offer, 'agent', v_oagent,
                                                             'expires_at', cd_ts(v_oexp),
                                                             'reason', coalesce(p_offer -> 'reason', 'null'))))
                   AS e(n, kind, data)
             WHERE e.n < 3 OR v_offer IS NOT NULL
             ORDER BY e.n;
            -- an offered conversation without an SLA policy: its route is all known here
            -- (cd_route_info's object, without reading anything again); with a policy the
            -- insert trigger has just set its due times, which only a read shows
            v_route := CASE WHEN v_offer IS NOT NULL AND c.sla_policy_id IS NULL THEN
                jsonb_build_object(
                    'id', c.id, 'queue', c.queue_id, 'channel', c.channel, 'tier', c.tier,
                    'priority', c.priority, 'enqueued_at', cd_ms(c.enqueued_at), 'customer', c.customer_id,
                    'status', c.status, 'agent', c.agent_id, 'target_agent', c.target_agent_id,
                    'offer', v_offer, 'offer_agent', v_oagent, 'offer_expires_at', cd_ms(v_oexp),
                    'last_agent', v_last, 'last_agent_at', cd_ms(v_last_at), 'rejected', '[]'::jsonb,
                    'sla', jsonb_build_object('policy', NULL, 'first_response_due', NULL,
                                              'next_response_due', NULL, 'resolution_due', NULL,
                                              'paused_at', cd_ms(c.sla_paused_at)),
                    'created_at', cd_ms(c.created_at))
                ELSE cd_route_info(c.id) END;
            RETURN jsonb_build_object('conversation', c.id, 'call', k.id, 'call_id', v_call_id,
                                      'state', k.state, 'previous', NULL, 'duplicate', false,
                                      'customer', c.customer_id, 'queue', c.queue_id, 'status', c.status,
                                      'route', v_route, 'removed', false, 'handed_to', NULL,
                                      'resolved', false)
                   || CASE WHEN v_offer IS NULL THEN '{}'::jsonb
                           ELSE jsonb_build_object('offer', v_offer) END;
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

CREATE OR REPLACE FUNCTION cd_phone_event(p jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT cd_phone_event(p, NULL::jsonb)
$$;
