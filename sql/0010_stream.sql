-- 0010_stream.sql -- the event stream: events_log filled by triggers, read in order
-- without losing anything (GET /v1/stream, webhooks), webhook delivery cursors, pruning.
--
-- What is logged (kind, data), each row in the same transaction as the change:
--   conversation.<timeline kind>  every conversation_events insert (enqueued, offered,
--                                 assigned, transferred, sla_warning, sla_breach, resolved ...)
--                                 {conversation, event (timeline row id), data (the timeline
--                                 data), at (the timeline time)}
--   agent.status                  every agent_status_log insert {agent, status, at}
--   message.out                   messages with direction 'out' (agent or API replies)
--                                 {conversation, message, channel, customer, external_ref,
--                                 to:{name, external_id, phone, email} (the customer's newest
--                                 identity of each kind, verified first; null when none),
--                                 in_reply_to:{message, external_id} (the conversation's
--                                 latest inbound message, or null),
--                                 author:{kind, agent, name}, body, created_at}
--                                 what an integrator needs to deliver a reply on a channel
--                                 it serves (sms, whatsapp, social, web, api)
--   message.in                    messages with direction 'in' (from customers, on every
--                                 channel) {conversation, message, channel, customer,
--                                 external_id (the channel's id of the message, or null),
--                                 body (its first 16384 characters: a long e-mail is not
--                                 copied whole into the log), body_truncated, created_at}
-- Not logged: internal notes (agents only).  All triggers are statement
-- level with transition tables: a group commit of 100 chat messages costs one trigger
-- call and one INSERT ... SELECT.
--
-- Ordering.  events_log.id comes from an identity sequence: allocation order, not commit
-- order.  A reader that handed out id 11 while the transaction holding id 10 is still
-- open would lose 10 for a client that resumes "after 11".  cd_stream_read therefore
-- never reads past a missing id (a gap) while the transaction that took it may still
-- commit.  It skips the gap before row R only when both hold:
--   * R was logged more than 2 s ago (logged_at, the clock time of the insert, taken
--     after R's id), and
--   * no write transaction of this database that began before R was logged is still
--     open (pg_stat_activity: backend_xid set, xact_start < R.logged_at).
-- The transaction holding the missing id took it before R's id was taken, so it began
-- before R was logged; and the triggers below log at the end of a statement that already
-- wrote a row, so it has its xid by then.  The second test makes a slow commit (a WAL
-- flush stall, a long transaction) wait instead of being skipped; the first covers the
-- moment between a bare INSERT INTO events_log's id and its xid.  A gap whose next row is
-- more than 60 s old is skipped regardless (a write transaction left open that long must
-- not stop the stream); the reader reports it in stale_skips.  A gap skipped otherwise
-- belonged to a transaction that rolled back (or to a sequence jump after a crash).
-- The daemon's role sees its own sessions in pg_stat_activity; a reader under another role
-- needs pg_read_all_stats for the second test to see writers of other roles.

ALTER TABLE events_log ADD COLUMN logged_at timestamptz NOT NULL DEFAULT clock_timestamp();

-- ---------------------------------------------------------------------------
-- Triggers
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_events_log_conversation_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events_log (kind, data)
    SELECT 'conversation.' || n.kind,
           jsonb_build_object('conversation', n.conversation_id, 'event', n.id,
                              'data', n.data, 'at', cd_ts(n.at))
      FROM cd_new_rows n
     ORDER BY n.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER conversation_events_log AFTER INSERT ON conversation_events
    REFERENCING NEW TABLE AS cd_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cd_events_log_conversation_events();

CREATE FUNCTION cd_events_log_agent_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events_log (kind, data)
    SELECT 'agent.status',
           jsonb_build_object('agent', n.agent_id, 'status', n.status, 'at', cd_ts(n.at))
      FROM cd_new_rows n
     ORDER BY n.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER agent_status_log_log AFTER INSERT ON agent_status_log
    REFERENCING NEW TABLE AS cd_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cd_events_log_agent_status();

CREATE FUNCTION cd_events_log_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- customers' messages: a dashboard or an integrator sees every message arrive.  Kept
    -- lean (no joins): on the chat group commit (100 messages a statement,
    -- tests/sql/check_chat.sh) this row costs about a tenth of cd_chat_customer_messages.
    INSERT INTO events_log (kind, data)
    SELECT 'message.in',
           jsonb_build_object('conversation', n.conversation_id, 'message', n.id,
                              'channel', n.channel, 'customer', n.author_customer_id,
                              'external_id', n.external_id, 'body', left(n.body, 16384),
                              'body_truncated', length(n.body) > 16384,
                              'created_at', cd_ts(n.created_at))
      FROM cd_new_rows n
     WHERE n.direction = 'in'
     ORDER BY n.id;
    -- replies (one a statement): with their conversation's customer and external_ref.
    INSERT INTO events_log (kind, data)
    SELECT 'message.out',
           jsonb_build_object('conversation', n.conversation_id, 'message', n.id,
                              'channel', n.channel, 'customer', c.customer_id,
                              'external_ref', c.external_ref,
                              'to', jsonb_build_object(
                                  'name', cu.name,
                                  'external_id', (SELECT i.value FROM customer_identities i
                                                   WHERE i.customer_id = c.customer_id
                                                     AND i.kind = 'external'
                                                   ORDER BY i.verified DESC, i.id DESC LIMIT 1),
                                  'phone', (SELECT i.value FROM customer_identities i
                                             WHERE i.customer_id = c.customer_id AND i.kind = 'phone'
                                             ORDER BY i.verified DESC, i.id DESC LIMIT 1),
                                  'email', (SELECT i.value FROM customer_identities i
                                             WHERE i.customer_id = c.customer_id AND i.kind = 'email'
                                             ORDER BY i.verified DESC, i.id DESC LIMIT 1)),
                              'in_reply_to', (SELECT jsonb_build_object('message', m.id,
                                                                        'external_id', m.external_id)
                                                FROM messages m
                                               WHERE m.conversation_id = n.conversation_id
                                                 AND m.direction = 'in' AND m.id < n.id
                                               ORDER BY m.id DESC LIMIT 1),
                              'author', jsonb_build_object('kind', n.author_kind,
                                                           'agent', n.author_agent_id,
                                                           'name', a.name),
                              'body', n.body, 'created_at', cd_ts(n.created_at))
      FROM cd_new_rows n
      JOIN conversations c ON c.id = n.conversation_id
      JOIN customers cu ON cu.id = c.customer_id
      LEFT JOIN agents a ON a.id = n.author_agent_id
     WHERE n.direction = 'out'
     ORDER BY n.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_events_log AFTER INSERT ON messages
    REFERENCING NEW TABLE AS cd_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cd_events_log_messages();

-- ---------------------------------------------------------------------------
-- Reading
-- ---------------------------------------------------------------------------

-- cd_stream_head() -> the id of the newest event (0 when none): where a reader that wants
-- only new events starts.
CREATE FUNCTION cd_stream_head() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(max(id), 0) FROM events_log
$$;

-- cd_stream_read(p_after, p_limit, p_max_bytes) -> {events:[{id, kind, at, data}], last,
--                                                  skipped, stale_skips, more}
--   events   at most p_limit (1..1000) events with id > p_after, in id order, and no more
--            than about p_max_bytes (1024..16777216) of data (at least one event), stopping
--            before a gap whose transaction may still commit (see the top of this file)
--   last     the id to read after next time: the last event's id, or past skipped gaps
--            (p_after when nothing was read)
--   skipped  how many missing ids were treated as rolled back (or pruned)
--   stale_skips  how many gaps were skipped only because they were over 60 s old
--   more     a limit stopped the read: more events may be ready now
-- p_after < 0 is invalid (22023).
CREATE FUNCTION cd_stream_read(p_after bigint, p_limit integer, p_max_bytes integer) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r         record;
    v_next    bigint := p_after + 1;   -- the id expected next
    v_cut     bigint := p_after;       -- the last id handed out
    v_skipped bigint := 0;
    v_bytes   bigint := 0;
    v_n       integer := 0;
    v_more    boolean := false;
    v_fresh   timestamptz := clock_timestamp() - interval '2 seconds';
    v_stale   timestamptz := clock_timestamp() - interval '60 seconds';
    v_writer  timestamptz;             -- start of the oldest open write transaction
    v_looked  boolean := false;
    v_stale_n bigint := 0;
    v_events  jsonb;
BEGIN
    IF p_after IS NULL OR p_after < 0 THEN
        PERFORM cd_invalid('after', 'must be an id >= 0');
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000 THEN
        PERFORM cd_invalid('limit', 'must be 1..1000');
    END IF;
    IF p_max_bytes IS NULL OR p_max_bytes NOT BETWEEN 1024 AND 16777216 THEN
        PERFORM cd_invalid('max_bytes', 'must be 1024..16777216');
    END IF;
    FOR r IN SELECT e.id, e.logged_at,
                    octet_length(e.data::text) + length(e.kind) AS bytes
               FROM events_log e WHERE e.id > p_after ORDER BY e.id LIMIT p_limit LOOP
        IF r.id > v_next THEN
            -- a gap: its transaction may still commit (wait for it) unless it is over
            EXIT WHEN r.logged_at > v_fresh;
            IF NOT v_looked THEN
                SELECT min(a.xact_start) INTO v_writer
                  FROM pg_stat_activity a
                 WHERE a.datname = current_database() AND a.backend_xid IS NOT NULL
                   AND a.pid <> pg_backend_pid();
                v_looked := true;
            END IF;
            EXIT WHEN v_writer < r.logged_at AND r.logged_at > v_stale;
        END IF;
        IF v_n > 0 AND v_bytes + r.bytes > p_max_bytes THEN
            v_more := true;
            EXIT;
        END IF;
        IF r.id > v_next AND v_writer < r.logged_at THEN
            v_stale_n := v_stale_n + 1;
        END IF;
        v_skipped := v_skipped + (r.id - v_next);
        v_bytes := v_bytes + r.bytes;
        v_n := v_n + 1;
        v_cut := r.id;
        v_next := r.id + 1;
    END LOOP;
    v_more := v_more OR v_n >= p_limit;
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', e.id, 'kind', e.kind, 'at', cd_ts(e.at),
                                                 'data', e.data) ORDER BY e.id), '[]')
      INTO v_events
      FROM events_log e WHERE e.id > p_after AND e.id <= v_cut;
    RETURN jsonb_build_object('events', v_events, 'last', v_cut, 'skipped', v_skipped,
                              'stale_skips', v_stale_n, 'more', v_more);
END
$$;

-- cd_events_prune(p) -> {deleted}: deletes at most p.batch (1..100000, default 10000) of
-- the oldest events logged more than p.older_than_s (>= 60, default 604800 = 7 days) ago.
-- Events that a configured webhook URL has not acknowledged yet (id > its cursor) are kept
-- until they are p.unacked_older_than_s (>= older_than_s, default 2592000 = 30 days) old, so
-- that a receiver that is down for days still gets everything (at least once), while a URL
-- that never answers cannot make the log grow without bound.  The daemon calls it every
-- hour, again while a call deleted a full batch.
CREATE FUNCTION cd_events_prune(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_age     bigint := coalesce((p ->> 'older_than_s')::bigint, 604800);
    v_unacked bigint := coalesce((p ->> 'unacked_older_than_s')::bigint, 2592000);
    v_batch   integer := coalesce((p ->> 'batch')::integer, 10000);
    v_acked   bigint := coalesce((SELECT min(w.last_id) FROM webhook_cursors w),
                                 9223372036854775807);
    v_n       integer;
BEGIN
    IF v_age < 60 THEN PERFORM cd_invalid('older_than_s', 'must be >= 60'); END IF;
    IF v_unacked < v_age THEN
        PERFORM cd_invalid('unacked_older_than_s', 'must be >= older_than_s');
    END IF;
    IF v_batch NOT BETWEEN 1 AND 100000 THEN PERFORM cd_invalid('batch', 'must be 1..100000'); END IF;
    DELETE FROM events_log
     WHERE id IN (SELECT e.id FROM events_log e
                   WHERE e.at < now() - make_interval(secs => v_age)
                     AND (e.id <= v_acked OR e.at < now() - make_interval(secs => v_unacked))
                   ORDER BY e.at LIMIT v_batch);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN jsonb_build_object('deleted', v_n);
END
$$;

-- ---------------------------------------------------------------------------
-- Webhook delivery state
-- ---------------------------------------------------------------------------

-- One row per configured webhook URL: last_id is the newest event the receiver answered
-- 2xx for (advanced only then: at-least-once delivery); attempts / next_attempt_at /
-- last_status / last_error describe the current failure streak (attempts 0 = none).
CREATE TABLE webhook_cursors (
    url             text PRIMARY KEY CHECK (url ~ '^https?://' AND length(url) <= 2048),
    last_id         bigint NOT NULL CHECK (last_id >= 0),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz,
    last_status     integer,
    last_error      text CHECK (length(last_error) <= 512),
    delivered       bigint NOT NULL DEFAULT 0,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER webhook_cursors_touch BEFORE UPDATE ON webhook_cursors
    FOR EACH ROW EXECUTE FUNCTION cd_touch();

-- cd_webhook_start(p {urls:[text]}) -> {cursors:[{url, last_id, attempts, retry_in_ms}]}
-- Makes the cursor rows match the configured URLs: a new URL starts at the current head
-- (it receives events logged from now on), a known one keeps its cursor and failure streak
-- (retry_in_ms: how long until its next attempt is due, 0 = now), and rows of URLs no
-- longer configured are deleted (configured again later, they start at the head again).
CREATE FUNCTION cd_webhook_start(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_urls text[];
    v_head bigint := cd_stream_head();
BEGIN
    IF jsonb_typeof(p -> 'urls') IS DISTINCT FROM 'array' THEN
        PERFORM cd_invalid('urls', 'must be an array');
    END IF;
    SELECT coalesce(array_agg(DISTINCT u), '{}') INTO v_urls
      FROM jsonb_array_elements_text(p -> 'urls') u;
    DELETE FROM webhook_cursors WHERE url <> ALL (v_urls);
    INSERT INTO webhook_cursors (url, last_id)
    SELECT u, v_head FROM unnest(v_urls) u
    ON CONFLICT (url) DO NOTHING;
    RETURN jsonb_build_object('cursors', coalesce((
        SELECT jsonb_agg(jsonb_build_object(
                   'url', w.url, 'last_id', w.last_id, 'attempts', w.attempts,
                   'retry_in_ms', greatest(0, coalesce(
                       (extract(epoch FROM w.next_attempt_at - clock_timestamp()) * 1000)::bigint, 0)))
                   ORDER BY w.url)
          FROM webhook_cursors w WHERE w.url = ANY (v_urls)), '[]'));
END
$$;

-- cd_webhook_ack(p {url, id}) -> {last_id}: the receiver answered 2xx for event ID: the
-- cursor moves to it (never backwards) and the failure streak ends.  Unknown URL: P0002.
CREATE FUNCTION cd_webhook_ack(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
BEGIN
    UPDATE webhook_cursors
       SET last_id = greatest(last_id, (p ->> 'id')::bigint), attempts = 0,
           next_attempt_at = NULL, last_status = NULL, last_error = NULL,
           delivered = delivered + 1, delivered_at = now()
     WHERE url = p ->> 'url'
    RETURNING last_id INTO v_last;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = 'url: no such webhook', COLUMN = 'url';
    END IF;
    RETURN jsonb_build_object('last_id', v_last);
END
$$;

-- cd_webhook_failed(p {url, attempts, retry_in_ms, status, error}) -> {}: records a failed
-- attempt (so that a restart keeps the backoff).  Unknown URL: nothing happens.
CREATE FUNCTION cd_webhook_failed(p jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    UPDATE webhook_cursors
       SET attempts = greatest(0, (p ->> 'attempts')::integer),
           next_attempt_at = clock_timestamp()
                             + make_interval(secs => coalesce((p ->> 'retry_in_ms')::bigint, 0) / 1000.0),
           last_status = (p ->> 'status')::integer,
           last_error = left(p ->> 'error', 512)
     WHERE url = p ->> 'url';
    SELECT '{}'::jsonb;
$$;
