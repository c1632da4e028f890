-- 0005_sla.sql -- SLA timers, pauses, breach escalation and manual escalation.
--
-- The clocks live here, next to the data that starts and stops them, so every
-- channel (chat, e-mail, API events, phone) gets them without its own code:
--   * a conversation created with an SLA policy starts its first_response and
--     resolution timers (statement trigger on conversations);
--   * an agent's public message stops first_response and next_response; a
--     customer message after the first response starts next_response unless
--     one is running -- the clock runs from the OLDEST unanswered customer
--     message (statement trigger on messages);
--   * status pending (waiting on the customer) pauses every running timer;
--     leaving pending resumes them; resolved / closed / abandoned stop them
--     (row trigger on conversations' status);
--   * an edit of the policy (hours, holidays, zone, budgets) recomputes the
--     due times of the running timers (row trigger on sla_policies).
-- Due times are computed by cd_sla_policy_due (0004_sla_clock.sql) from the
-- timer's start, its budget in business seconds and the conversation's pause
-- intervals, which are all kept: a recomputation is exact, whatever happened
-- in between.
--
-- Firing is the daemon's job (src/routing/sla.c): it polls cd_sla_upcoming
-- for timers about to fire and calls cd_sla_fire for each when its time has
-- come.  cd_sla_fire changes the timer's state under the conversation's row
-- lock, so a warning or a breach fires exactly once whatever the daemon does
-- (restarts, kill -9, two calls racing).

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

-- One row per (conversation, timer); next_response is re-armed in place
-- (its history is in the timeline: sla_warning / sla_breach events).
CREATE TABLE sla_timers (
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    timer           text NOT NULL CHECK (timer IN ('first_response', 'next_response', 'resolution')),
    policy_id       bigint NOT NULL REFERENCES sla_policies (id),
    started_at      timestamptz NOT NULL,
    budget_s        integer NOT NULL CHECK (budget_s >= 1),
    -- NULL while paused past the point, or when no business time is ever open
    warn_at         timestamptz,
    due_at          timestamptz,
    warned_at       timestamptz,
    breached_at     timestamptz,
    -- met (agent replied, resolved) or ended (closed, abandoned, policy dropped the timer)
    stopped_at      timestamptz,
    -- the next instant the daemon must act on: warn_at until warned, then
    -- due_at until breached; NULL when stopped, paused or done
    next_fire_at    timestamptz,
    PRIMARY KEY (conversation_id, timer)
);
CREATE INDEX sla_timers_fire_idx ON sla_timers (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE INDEX sla_timers_running_policy_idx ON sla_timers (policy_id) WHERE stopped_at IS NULL;

-- Intervals during which the conversation waited on the customer.
CREATE TABLE sla_pauses (
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,           -- NULL: still paused
    PRIMARY KEY (conversation_id, started_at),
    CONSTRAINT sla_pauses_order CHECK (ended_at IS NULL OR ended_at >= started_at)
);

-- ---------------------------------------------------------------------------
-- Scheduling
-- ---------------------------------------------------------------------------

-- The budget of TIMER given a policy's three budgets (NULL: not used).
-- (Plain columns, not a row: row-typed parameters tie a function to its schema.)
CREATE FUNCTION cd_sla_budget(p_first integer, p_next integer, p_resolution integer, p_timer text)
RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_timer WHEN 'first_response' THEN p_first
                        WHEN 'next_response' THEN p_next
                        WHEN 'resolution' THEN p_resolution END
$$;

-- Copies the running timers' due times into conversations.*_due (what the
-- conversation API shows).
CREATE FUNCTION cd_sla_sync_conversation(p_conv bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE conversations c
       SET first_response_due = (SELECT t.due_at FROM sla_timers t WHERE t.conversation_id = c.id
                                    AND t.timer = 'first_response' AND t.stopped_at IS NULL),
           next_response_due = (SELECT t.due_at FROM sla_timers t WHERE t.conversation_id = c.id
                                   AND t.timer = 'next_response' AND t.stopped_at IS NULL),
           resolution_due = (SELECT t.due_at FROM sla_timers t WHERE t.conversation_id = c.id
                                AND t.timer = 'resolution' AND t.stopped_at IS NULL)
     WHERE c.id = p_conv
$$;

-- Recomputes warn / due / next_fire of the conversation's running timers from
-- their start, their policy's current calendar and budget, and every pause.
CREATE FUNCTION cd_sla_schedule(p_conv bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_pauses tstzrange[];
BEGIN
    SELECT coalesce(array_agg(tstzrange(s.started_at, s.ended_at, '[)') ORDER BY s.started_at), '{}')
      INTO v_pauses
      FROM sla_pauses s WHERE s.conversation_id = p_conv;
    UPDATE sla_timers t
       SET due_at = x.due, warn_at = x.warn,
           next_fire_at = CASE WHEN t.breached_at IS NOT NULL THEN NULL
                               WHEN t.warned_at IS NULL AND x.warn IS NOT NULL THEN x.warn
                               ELSE x.due END
      FROM (SELECT t2.timer,
                   cd_sla_due(p.timezone, p.hours, p.holidays, t2.started_at, t2.budget_s, v_pauses) AS due,
                   cd_sla_due(p.timezone, p.hours, p.holidays, t2.started_at,
                              t2.budget_s::numeric * p.warn_pct / 100, v_pauses) AS warn
              FROM sla_timers t2 JOIN sla_policies p ON p.id = t2.policy_id
             WHERE t2.conversation_id = p_conv AND t2.stopped_at IS NULL) x
     WHERE t.conversation_id = p_conv AND t.timer = x.timer;
    PERFORM cd_sla_sync_conversation(p_conv);
END
$$;

-- (Re-)starts TIMER of conversation P_CONV at P_AT under its policy (nothing
-- when the conversation has none or the policy does not use that timer).
-- Does NOT schedule: the caller runs cd_sla_schedule once afterwards.
CREATE FUNCTION cd_sla_arm(p_conv bigint, p_policy bigint, p_timer text, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    p sla_policies;
    v_budget integer;
BEGIN
    SELECT * INTO p FROM sla_policies WHERE id = p_policy;
    v_budget := cd_sla_budget(p.first_response_s, p.next_response_s, p.resolution_s, p_timer);
    IF v_budget IS NULL THEN RETURN false; END IF;
    INSERT INTO sla_timers (conversation_id, timer, policy_id, started_at, budget_s)
    VALUES (p_conv, p_timer, p_policy, p_at, v_budget)
    ON CONFLICT (conversation_id, timer) DO UPDATE
       SET policy_id = EXCLUDED.policy_id, started_at = EXCLUDED.started_at,
           budget_s = EXCLUDED.budget_s, warn_at = NULL, due_at = NULL, warned_at = NULL,
           breached_at = NULL, stopped_at = NULL, next_fire_at = NULL;
    RETURN true;
END
$$;

-- Stops the running timers of P_CONV named in P_TIMERS at P_AT.
CREATE FUNCTION cd_sla_stop(p_conv bigint, p_timers text[], p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sla_timers SET stopped_at = p_at, next_fire_at = NULL
     WHERE conversation_id = p_conv AND timer = ANY (p_timers) AND stopped_at IS NULL;
    IF FOUND THEN PERFORM cd_sla_sync_conversation(p_conv); END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- Triggers
-- ---------------------------------------------------------------------------

-- New conversations with a policy: first_response and resolution from created_at.
CREATE FUNCTION cd_sla_conversations_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT n.id, n.sla_policy_id, n.created_at FROM new_rows n
              WHERE n.sla_policy_id IS NOT NULL
                AND n.status NOT IN ('resolved', 'closed', 'abandoned')
    LOOP
        PERFORM cd_sla_arm(r.id, r.sla_policy_id, 'first_response', r.created_at);
        PERFORM cd_sla_arm(r.id, r.sla_policy_id, 'resolution', r.created_at);
        PERFORM cd_sla_schedule(r.id);
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER conversations_sla_insert AFTER INSERT ON conversations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cd_sla_conversations_inserted();

-- Messages: an agent's public reply stops first / next response; a customer
-- message after the first response starts next_response (if not running).
-- One call per statement: the chat group commit inserts many at once.
CREATE FUNCTION cd_sla_messages_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    -- no policy at all (many installations): no timer can exist, nothing to do
    IF NOT EXISTS (SELECT 1 FROM sla_policies) THEN RETURN NULL; END IF;
    FOR r IN SELECT n.conversation_id, min(n.created_at) AS at FROM new_rows n
              WHERE n.direction = 'out'
                AND EXISTS (SELECT 1 FROM sla_timers t
                             WHERE t.conversation_id = n.conversation_id AND t.stopped_at IS NULL
                               AND t.timer IN ('first_response', 'next_response'))
              GROUP BY n.conversation_id
    LOOP
        PERFORM cd_sla_stop(r.conversation_id, ARRAY['first_response', 'next_response'], r.at);
    END LOOP;
    FOR r IN SELECT x.conversation_id, x.at, c.sla_policy_id
               FROM (SELECT n.conversation_id, min(n.created_at) AS at FROM new_rows n
                      WHERE n.direction = 'in' GROUP BY n.conversation_id) x
               JOIN conversations c ON c.id = x.conversation_id
              WHERE c.sla_policy_id IS NOT NULL
                AND c.status NOT IN ('resolved', 'closed', 'abandoned')
                -- answered once: not the first response's business any more
                AND c.first_response_at IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM sla_timers t
                                 WHERE t.conversation_id = x.conversation_id
                                   AND t.timer = 'next_response' AND t.stopped_at IS NULL)
    LOOP
        IF cd_sla_arm(r.conversation_id, r.sla_policy_id, 'next_response', r.at) THEN
            PERFORM cd_sla_schedule(r.conversation_id);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_sla_insert AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cd_sla_messages_inserted();

-- Status changes: pending pauses, leaving pending resumes, the end stops.
CREATE FUNCTION cd_sla_status_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('resolved', 'closed', 'abandoned') THEN
        UPDATE sla_pauses SET ended_at = now()
         WHERE conversation_id = NEW.id AND ended_at IS NULL;
        PERFORM cd_sla_stop(NEW.id, ARRAY['first_response', 'next_response', 'resolution'], now());
    ELSIF NEW.status = 'pending' THEN
        INSERT INTO sla_pauses (conversation_id, started_at)
        SELECT NEW.id, now()
         WHERE NOT EXISTS (SELECT 1 FROM sla_pauses WHERE conversation_id = NEW.id AND ended_at IS NULL)
        ON CONFLICT DO NOTHING;
        PERFORM cd_sla_schedule(NEW.id);
    ELSIF OLD.status = 'pending' THEN
        UPDATE sla_pauses SET ended_at = now()
         WHERE conversation_id = NEW.id AND ended_at IS NULL;
        PERFORM cd_sla_schedule(NEW.id);
    END IF;
    RETURN NULL;
END
$$;
-- sla_paused_at / sla_paused_total_s (what lists and cd_route_info show) follow
-- the status whoever changes it: set on entering pending, added up and
-- cleared on leaving it (transfer, escalation, resolve, close, a customer
-- message -- which may have done it already).
CREATE FUNCTION cd_sla_pause_columns() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'pending' THEN
        NEW.sla_paused_at := coalesce(NEW.sla_paused_at, now());
    ELSIF OLD.status = 'pending' AND NEW.sla_paused_at IS NOT NULL THEN
        NEW.sla_paused_total_s := NEW.sla_paused_total_s
            + greatest(0, floor(extract(epoch FROM now() - NEW.sla_paused_at)))::int;
        NEW.sla_paused_at := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER conversations_sla_pause_columns BEFORE UPDATE OF status ON conversations
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION cd_sla_pause_columns();

CREATE TRIGGER conversations_sla_status AFTER UPDATE OF status ON conversations
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.sla_policy_id IS NOT NULL)
    EXECUTE FUNCTION cd_sla_status_changed();

-- Policy edits apply to running timers: new budgets, new calendar; a timer
-- the policy no longer uses stops.
CREATE FUNCTION cd_sla_policy_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_conv bigint;
BEGIN
    -- conversations first, then their timers: the order every other path takes
    -- (cd_sla_fire, the message and status triggers), so no deadlock
    PERFORM 1 FROM conversations c
     WHERE c.id IN (SELECT t.conversation_id FROM sla_timers t
                     WHERE t.policy_id = NEW.id AND t.stopped_at IS NULL)
     ORDER BY c.id FOR NO KEY UPDATE;
    UPDATE sla_timers t
       SET stopped_at = CASE WHEN x.b IS NULL THEN now() END,
           next_fire_at = CASE WHEN x.b IS NULL THEN NULL ELSE t.next_fire_at END,
           budget_s = coalesce(x.b, t.budget_s)
      FROM (SELECT t2.conversation_id, t2.timer,
                   cd_sla_budget(NEW.first_response_s, NEW.next_response_s, NEW.resolution_s, t2.timer) AS b
              FROM sla_timers t2 WHERE t2.policy_id = NEW.id AND t2.stopped_at IS NULL) x
     WHERE t.conversation_id = x.conversation_id AND t.timer = x.timer;
    FOR v_conv IN SELECT DISTINCT t.conversation_id FROM sla_timers t
                   WHERE t.policy_id = NEW.id
                     AND (t.stopped_at IS NULL OR t.stopped_at = now())
    LOOP
        PERFORM cd_sla_schedule(v_conv);
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER sla_policies_sla_changed AFTER UPDATE ON sla_policies
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION cd_sla_policy_changed();

-- ---------------------------------------------------------------------------
-- Escalation (breach and manual)
-- ---------------------------------------------------------------------------

-- Raises conversation P_CONV's tier by one (up to the highest tier of any live
-- agent, never down) and its priority by one; timeline `escalated`.  The
-- caller holds the row lock.  Returns {tier, previous_tier, priority, reason}.
CREATE FUNCTION cd_escalate_core(p_conv bigint, p_reason text, p_by bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_old  integer;
    v_max  integer;
    v_tier integer;
    v_pri  integer;
    v_data jsonb;
BEGIN
    SELECT tier INTO v_old FROM conversations WHERE id = p_conv;
    SELECT max(a.tier) INTO v_max FROM agents a WHERE a.deleted_at IS NULL;
    v_tier := greatest(v_old, least(v_old + 1, coalesce(v_max, v_old)));
    UPDATE conversations SET tier = v_tier, priority = priority + 1 WHERE id = p_conv
    RETURNING priority INTO v_pri;
    v_data := jsonb_build_object('tier', v_tier, 'previous_tier', v_old, 'priority', v_pri,
                                 'reason', p_reason, 'by', p_by);
    PERFORM cd_event(p_conv, 'escalated', v_data);
    RETURN v_data;
END
$$;

-- cd_sla_upcoming(p) -> {now, timers:[[conversation, "timer", in_ms], ...]}
-- Timers whose next firing is within horizon_ms (default 1500) of now,
-- overdue ones included, soonest first, at most `limit` (default 1000).
-- in_ms is relative to the database's clock (may be <= 0: fire at once).
CREATE FUNCTION cd_sla_upcoming(p jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('now', cd_ms(now()), 'timers', coalesce(jsonb_agg(
               jsonb_build_array(t.conversation_id, t.timer,
                                 ceil(extract(epoch FROM t.next_fire_at - now()) * 1000)::bigint)
               ORDER BY t.next_fire_at), '[]'::jsonb))
      FROM (SELECT * FROM sla_timers
             WHERE next_fire_at IS NOT NULL
               AND next_fire_at <= now() + make_interval(secs => coalesce((p ->> 'horizon_ms')::int, 1500) / 1000.0)
             ORDER BY next_fire_at
             LIMIT coalesce((p ->> 'limit')::int, 1000)) t
$$;

-- cd_sla_fire(p) -> {fired:false, in_ms (null: nothing to do)} or
--   {fired:true, conversation, timer, state:"warning"|"breached", due (ISO),
--    status, agent, queue, customer, offer_agent, tier, priority,
--    escalated:{tier, previous_tier, priority, reason}|null, in_ms}
-- Input: conversation (id), timer.  Fires the timer's next step if it is due
-- (within 2 ms of the database's clock): a warning (timeline sla_warning)
-- or a breach (timeline sla_breach, then escalation).  A warning whose due
-- time has passed too is skipped (marked, not told): the breach says more.
-- in_ms: when to call again (the breach after a warning; or not yet due).
-- Exactly once: state changes under the conversation's row lock.
CREATE FUNCTION cd_sla_fire(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_conv  bigint;
    v_timer text;
    c       conversations;
    t       sla_timers;
    v_state text;
    v_esc   jsonb;
    v_offer bigint;
BEGIN
    v_conv := cd_j_id(p, 'conversation');
    v_timer := p ->> 'timer';
    SELECT * INTO c FROM conversations WHERE id = v_conv FOR NO KEY UPDATE;
    IF NOT FOUND THEN RETURN jsonb_build_object('fired', false, 'in_ms', NULL); END IF;
    SELECT * INTO t FROM sla_timers WHERE conversation_id = v_conv AND timer = v_timer FOR UPDATE;
    IF NOT FOUND OR t.next_fire_at IS NULL THEN
        RETURN jsonb_build_object('fired', false, 'in_ms', NULL);
    END IF;
    IF t.next_fire_at > now() + interval '2 milliseconds' THEN
        RETURN jsonb_build_object('fired', false,
                                  'in_ms', ceil(extract(epoch FROM t.next_fire_at - now()) * 1000)::bigint);
    END IF;
    IF t.warned_at IS NULL AND t.warn_at IS NOT NULL AND t.next_fire_at = t.warn_at
       AND (t.due_at IS NULL OR t.due_at > now()) THEN
        v_state := 'warning';
        UPDATE sla_timers SET warned_at = now(), next_fire_at = due_at
         WHERE conversation_id = v_conv AND timer = v_timer RETURNING * INTO t;
        PERFORM cd_event(c.id, 'sla_warning', jsonb_build_object('timer', v_timer, 'due', cd_ts(t.due_at)));
    ELSE
        v_state := 'breached';
        UPDATE sla_timers SET warned_at = coalesce(warned_at, now()), breached_at = now(), next_fire_at = NULL
         WHERE conversation_id = v_conv AND timer = v_timer RETURNING * INTO t;
        PERFORM cd_event(c.id, 'sla_breach', jsonb_build_object('timer', v_timer, 'due', cd_ts(t.due_at)));
        v_esc := cd_escalate_core(c.id, 'sla_breach:' || v_timer, NULL);
        SELECT * INTO c FROM conversations WHERE id = v_conv;
    END IF;
    SELECT o.agent_id INTO v_offer FROM offers o WHERE o.conversation_id = c.id AND o.state = 'pending';
    RETURN jsonb_build_object(
        'fired', true, 'conversation', c.id, 'timer', v_timer, 'state', v_state,
        'due', cd_ts(t.due_at), 'status', c.status, 'agent', c.agent_id, 'queue', c.queue_id,
        'customer', c.customer_id, 'offer_agent', v_offer, 'tier', c.tier, 'priority', c.priority,
        'escalated', v_esc,
        'in_ms', CASE WHEN t.next_fire_at IS NULL THEN NULL
                      ELSE greatest(0, ceil(extract(epoch FROM t.next_fire_at - now()) * 1000))::bigint END);
END
$$;

-- cd_conversation_escalate(p) -> {conversation, tier, previous_tier, priority,
--     reason, status, agent, released_agent, customer, route, duplicate}
-- Input: conversation (id), by_agent (id; null = the HTTP API), reason
-- (string <= 500, required), client_msg_id.
-- The conversation must be open (55000); by_agent its agent or a supervisor /
-- admin (42501).  Escalates like a breach (tier + 1 up to the highest agent
-- tier, priority + 1, timeline `escalated` with the reason).  When it is
-- held (assigned / pending) by an agent whose tier is now below the
-- conversation's, it goes back to its queue for a more senior agent
-- (status queued, agent_id null, enqueued_at now; released_agent = that
-- agent, its capacity is free).  route = cd_route_info for the router.
CREATE FUNCTION cd_conversation_escalate(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_conv     bigint;
    v_by       bigint;
    v_reason   text;
    v_cmid     text;
    v_replay   jsonb;
    a          record;
    c          conversations;
    v_esc      jsonb;
    v_released bigint;
    v_holder   integer;
BEGIN
    PERFORM cd_check_body(p);
    v_conv := cd_j_id(p, 'conversation');
    v_by := cd_j_id(p, 'by_agent', false);
    v_reason := cd_j_opt_text(p, 'reason', 500);
    IF v_reason IS NULL THEN PERFORM cd_invalid('reason', 'required (why it needs escalating)'); END IF;
    v_cmid := cd_j_client_msg_id(p);
    v_replay := cd_request_replay('agent', v_by, v_cmid, 'escalate');
    IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
    IF v_by IS NOT NULL THEN a := cd_agent_live(v_by); END IF;
    c := cd_conversation_lock(v_conv);
    IF v_by IS NOT NULL THEN PERFORM cd_check_agent_may(a.id, a.role, c.id, c.agent_id); END IF;
    IF c.status NOT IN ('queued', 'offered', 'assigned', 'pending') THEN
        PERFORM cd_wrong_state(format('conversation %s is %s', c.id, c.status));
    END IF;
    v_esc := cd_escalate_core(c.id, v_reason, v_by);
    SELECT * INTO c FROM conversations WHERE id = v_conv;
    IF c.status IN ('assigned', 'pending') AND c.agent_id IS NOT NULL THEN
        SELECT tier INTO v_holder FROM agents WHERE id = c.agent_id;
        IF coalesce(v_holder, 0) < c.tier THEN
            v_released := c.agent_id;
            UPDATE conversations SET status = 'queued', agent_id = NULL, enqueued_at = now()
             WHERE id = c.id RETURNING * INTO c;
            PERFORM cd_event(c.id, 'enqueued', jsonb_build_object('queue', c.queue_id, 'reason', 'escalated',
                                                                 'from_agent', v_released));
        END IF;
    END IF;
    RETURN cd_request_save('agent', v_by, v_cmid, 'escalate', v_esc || jsonb_build_object(
        'conversation', c.id, 'status', c.status, 'agent', c.agent_id, 'released_agent', v_released,
        'customer', c.customer_id, 'queue', c.queue_id, 'route', cd_route_info(c.id),
        'duplicate', false));
END
$$;

-- cd_conversation_pending(p) -> {conversation, status, previous, duplicate}
-- Input: conversation (id), by_agent (id; null = the HTTP API), client_msg_id.
-- The agent says the conversation waits on the customer: an assigned
-- conversation becomes pending (its SLA clocks stop until the customer
-- writes, see cd_sla_status_changed); pending stays pending.  Other states:
-- 55000.  by_agent must be its agent or a supervisor / admin (42501).
CREATE FUNCTION cd_conversation_pending(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_conv   bigint;
    v_by     bigint;
    v_cmid   text;
    v_replay jsonb;
    a        record;
    c        conversations;
    v_prev   text;
BEGIN
    PERFORM cd_check_body(p);
    v_conv := cd_j_id(p, 'conversation');
    v_by := cd_j_id(p, 'by_agent', false);
    v_cmid := cd_j_client_msg_id(p);
    v_replay := cd_request_replay('agent', v_by, v_cmid, 'pending');
    IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
    IF v_by IS NOT NULL THEN a := cd_agent_live(v_by); END IF;
    c := cd_conversation_lock(v_conv);
    IF v_by IS NOT NULL THEN PERFORM cd_check_agent_may(a.id, a.role, c.id, c.agent_id); END IF;
    v_prev := c.status;
    IF c.status = 'assigned' THEN
        UPDATE conversations SET status = 'pending', sla_paused_at = now() WHERE id = c.id RETURNING * INTO c;
        PERFORM cd_event(c.id, 'pending', jsonb_build_object('by', v_by));
    ELSIF c.status <> 'pending' THEN
        PERFORM cd_wrong_state(format('conversation %s is %s, not assigned', c.id, c.status));
    END IF;
    RETURN cd_request_save('agent', v_by, v_cmid, 'pending', jsonb_build_object(
        'conversation', c.id, 'status', c.status, 'previous', v_prev, 'duplicate', false));
END
$$;
