-- 0006_transfer_agent.sql -- a transfer to an agent assigns the conversation to that agent.
--
-- 0003 only recorded the wanted agent (target_agent_id) and put the
-- conversation back in line, and nothing made the router honour it.  What
-- agents expect from "transfer to Bob" (Zendesk, Chatwoot, Zammad) is that Bob
-- has it now: the conversation is assigned to him at once, beyond his
-- capacity if need be (he is being handed it by a colleague or a supervisor,
-- not offered it), and he and the customer are told.  The target must be a
-- live agent who is not offline (55000 otherwise: nobody would answer).

-- cd_conversation_transfer(p) -> {conversation, queue, agent, agent_name,
--                                 from_agent, customer, channel, status, offer,
--                                 route, duplicate}
-- Input: conversation (id), by_agent (id; null = the HTTP API: no permission
--   check), exactly one of queue (name or id) / agent (login or id),
--   client_msg_id.
-- The conversation must be open (queued/offered/assigned/pending; else
-- 55000).  by_agent must be its agent or a supervisor / admin (42501).
-- A pending offer is revoked either way.
--   to a queue: back to waiting: status queued, agent_id null, enqueued_at
--     now, queue_id changes; priority = the new queue's priority plus any
--     escalation above its old queue's priority.  Timeline `transferred`
--     {by, from_agent, to_queue}.  agent null.
--   to an agent: status assigned, agent_id = that agent (assigned_at kept
--     when set); queue unchanged.  Timeline `transferred` {by, from_agent,
--     to_agent} and `assigned` {agent, reason:"transfer"}.  55000 when the
--     agent is offline; transferring to the agent it already has changes
--     nothing but is answered the same.
-- Output from_agent = the agent it had (its capacity is free), agent /
-- agent_name = the new holder (null for a queue), route = cd_route_info.
-- Errors: 22023 (neither or both of queue/agent; unknown queue / agent names
--   the field); P0002 unknown conversation / by_agent; 42501; 55000.
CREATE OR REPLACE FUNCTION cd_conversation_transfer(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_conv    bigint;
    v_by      bigint;
    v_queue   bigint;
    v_target  bigint;
    v_cmid    text;
    v_replay  jsonb;
    a         record;
    t         agents;
    c         conversations;
    v_from    bigint;
    v_offer   jsonb;
    v_old_pri int;
    v_new_pri int;
BEGIN
    PERFORM cd_check_body(p);
    v_conv := cd_j_id(p, 'conversation');
    v_by := cd_j_id(p, 'by_agent', false);
    IF (cd_opt(p, 'queue') IS NULL) = (cd_opt(p, 'agent') IS NULL) THEN
        PERFORM cd_invalid('queue', 'give either queue or agent');
    END IF;
    v_queue := cd_j_opt_ref(p, 'queues', 'queue');
    v_target := cd_j_opt_ref(p, 'agents', 'agent');
    v_cmid := cd_j_client_msg_id(p);
    v_replay := cd_request_replay('agent', v_by, v_cmid, 'transfer');
    IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
    IF v_by IS NOT NULL THEN a := cd_agent_live(v_by); END IF;
    IF v_target IS NOT NULL THEN
        SELECT * INTO t FROM agents WHERE id = v_target AND deleted_at IS NULL;
        IF NOT FOUND THEN PERFORM cd_invalid('agent', format('unknown agent %s', v_target)); END IF;
    END IF;

    c := cd_conversation_lock(v_conv);
    IF v_by IS NOT NULL THEN PERFORM cd_check_agent_may(a.id, a.role, c.id, c.agent_id); END IF;
    IF c.status NOT IN ('queued', 'offered', 'assigned', 'pending') THEN
        PERFORM cd_wrong_state(format('conversation %s is %s', c.id, c.status));
    END IF;
    v_from := c.agent_id;
    IF v_queue IS NOT NULL THEN
        v_offer := cd_revoke_pending_offer(c.id, 'cancelled');
        SELECT priority INTO v_old_pri FROM queues WHERE id = c.queue_id;
        SELECT priority INTO v_new_pri FROM queues WHERE id = v_queue;
        UPDATE conversations
           SET status = 'queued', agent_id = NULL, queue_id = v_queue, enqueued_at = now(),
               target_agent_id = NULL,
               priority = v_new_pri + greatest(0, c.priority - coalesce(v_old_pri, c.priority))
         WHERE id = c.id RETURNING * INTO c;
        PERFORM cd_event(c.id, 'transferred', jsonb_build_object('by', v_by, 'from_agent', v_from,
                                                                'to_queue', v_queue));
    ELSIF c.agent_id IS DISTINCT FROM v_target OR c.status NOT IN ('assigned', 'pending') THEN
        IF t.status = 'offline' THEN
            PERFORM cd_wrong_state(format('agent %s is offline', t.login));
        END IF;
        v_offer := cd_revoke_pending_offer(c.id, 'cancelled');
        UPDATE conversations
           SET status = 'assigned', agent_id = v_target, target_agent_id = NULL,
               assigned_at = coalesce(assigned_at, now())
         WHERE id = c.id RETURNING * INTO c;
        PERFORM cd_event(c.id, 'transferred', jsonb_build_object('by', v_by, 'from_agent', v_from,
                                                                'to_agent', v_target));
        PERFORM cd_event(c.id, 'assigned', jsonb_build_object('agent', v_target, 'reason', 'transfer'));
    END IF;
    RETURN cd_request_save('agent', v_by, v_cmid, 'transfer', jsonb_build_object(
        'conversation', c.id, 'queue', c.queue_id, 'agent', CASE WHEN v_target IS NOT NULL THEN c.agent_id END,
        'agent_name', t.name, 'from_agent', v_from, 'customer', c.customer_id, 'channel', c.channel,
        'status', c.status, 'offer', v_offer, 'route', cd_route_info(c.id), 'duplicate', false));
END
$$;
