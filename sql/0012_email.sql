-- 0012_email.sql -- inbound e-mail (SPEC section 3): the lmtp / smtp listeners.
--
-- The daemon parses each mail (GMime, on a worker thread) into a JSON record
-- and stores it once per accepted recipient (inbox) with cd_email_ingest: one
-- transaction per (mail, inbox), so that LMTP can answer each recipient after
-- its own commit.  This file decides, in the database:
--   * which inbox a RCPT address names (cd_email_rcpt);
--   * the customer (the sender's address as an e-mail identity, shared with
--     every other channel through cd_customer_resolve);
--   * threading: In-Reply-To / References naming a stored Message-ID, else a
--     [#ID] token in the subject from an identity already on that
--     conversation, else a new conversation in the inbox's queue;
--   * dedupe: the same Message-ID to the same inbox is stored once.

CREATE FUNCTION cd_lock_class_email() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT 1667523841 $$;  -- 'cde\x01'

-- cd_email_rcpt(address) -> {inbox, address, queue} or NULL (no inbox).
-- The address is trimmed, lower-cased and stripped of <>; a sub-address
-- (local+tag@domain) falls back to local@domain when only that exists.
-- Only e-mail inboxes count (not "sms:..." and the like).
CREATE FUNCTION cd_email_rcpt(p_address text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH a AS (SELECT lower(btrim(btrim(coalesce(p_address, '')), '<>')) AS v)
    SELECT jsonb_build_object('inbox', i.id, 'address', i.address, 'queue', i.queue_id)
      FROM a, inboxes i
     WHERE i.channel = 'email'
       AND i.address IN (a.v, regexp_replace(a.v, '^([^@+]+)\+[^@]*@', '\1@'))
     ORDER BY (i.address = a.v) DESC
     LIMIT 1
$$;

-- A plausible e-mail address as a normalised identity value, else NULL.
CREATE FUNCTION cd_email_norm_address(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN x ~ '^[^@[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+$' AND length(x) <= 320
                THEN x END
      FROM (SELECT lower(btrim(p)) AS x) s
$$;

-- cd_email_ingest(p) -> {duplicate, conversation, message, customer, opened,
--                        threaded_by, status, agent, queue, route, attachments}
-- Input (built by the daemon from the parsed mail):
--   inbox          id (from cd_email_rcpt)
--   from           {email, name}: the From header (else the envelope sender)
--   subject, date (ISO 8601 or null), body (UTF-8 text, may be '')
--   message_id     without <>, 1..998 chars (derived from a content hash
--                  by the daemon when the mail has none)
--   in_reply_to, references: arrays of Message-IDs (without <>)
--   attachments    [{name, type, size, sha256, data (base64)}]
--   envelope       {mail_from, rcpt}, size (bytes as received)
-- duplicate true: this inbox stored that Message-ID before; the answer names
--   the stored conversation and message, nothing changes.
-- threaded_by: "references" | "subject" | null (new conversation).  A reply
--   to a conversation that is resolved, closed or abandoned opens a new one
--   (metadata.follows names the old one) so that finished conversations keep
--   their KPIs.  opened true: route = cd_route_info for the router.
-- Errors: 22023 naming the field (inbox, message_id); P0002 unknown inbox.
CREATE FUNCTION cd_email_ingest(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_inbox   bigint;
    v_queue   bigint;
    v_msgid   text;
    v_email   text;
    v_name    text;
    v_subject text;
    v_body    text;
    v_refs    text[];
    v_date    timestamptz;
    v_cust    bigint;
    v_conv    bigint;
    v_tok     text;
    v_by      text;
    v_follows bigint;
    v_opened  boolean := false;
    v_natt    int := 0;
    v_route   jsonb;
    v_last_agent bigint;
    v_last_at timestamptz;
    c         conversations;
    m         messages;
    e         email_message_ids;
    a         jsonb;
BEGIN
    PERFORM cd_check_body(p);
    v_inbox := cd_j_id(p, 'inbox');
    SELECT queue_id INTO v_queue FROM inboxes WHERE id = v_inbox;
    IF NOT FOUND THEN PERFORM cd_not_found(format('inbox %s not found', v_inbox)); END IF;
    v_msgid := p ->> 'message_id';
    IF v_msgid IS NULL OR v_msgid = '' OR length(v_msgid) > 998 THEN
        PERFORM cd_invalid('message_id', 'must be 1..998 characters');
    END IF;

    -- dedupe: one (inbox, Message-ID) at a time
    PERFORM pg_advisory_xact_lock(cd_lock_class_email(), hashtext(v_inbox::text || ':' || v_msgid));
    SELECT * INTO e FROM email_message_ids WHERE inbox_id = v_inbox AND message_id = v_msgid;
    IF e.id IS NOT NULL THEN
        SELECT * INTO c FROM conversations WHERE id = e.conversation_id;
        RETURN jsonb_build_object('duplicate', true, 'conversation', c.id, 'message', e.message_row_id,
                                  'customer', c.customer_id, 'opened', false, 'threaded_by', NULL,
                                  'status', c.status, 'agent', c.agent_id, 'queue', c.queue_id,
                                  'route', NULL, 'attachments', 0);
    END IF;

    v_email := cd_email_norm_address(p #>> '{from,email}');
    v_name := left(nullif(btrim(p #>> '{from,name}'), ''), 200);
    v_subject := left(p ->> 'subject', 500);
    v_body := coalesce(p ->> 'body', '');
    -- the normaliser's ISO 8601 (GLib) casts as is; anything else is tried in a
    -- subtransaction (a bad date is dropped, never a failed mail)
    IF p ->> 'date' ~ '^[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$' THEN
        v_date := (p ->> 'date')::timestamptz;
    ELSIF p ->> 'date' IS NOT NULL THEN
        BEGIN
            v_date := (p ->> 'date')::timestamptz;
        EXCEPTION WHEN others THEN
            v_date := NULL;
        END;
    END IF;
    v_cust := cd_customer_resolve(NULL, v_email, NULL, v_name);

    -- 1. In-Reply-To, then References (newest first), naming a stored Message-ID
    SELECT array_agg(x ORDER BY o) INTO v_refs
      FROM (SELECT x, o FROM jsonb_array_elements_text(coalesce(cd_opt(p, 'in_reply_to'), '[]')) WITH ORDINALITY t(x, o)
            UNION ALL
            SELECT x, 1000000 - o FROM jsonb_array_elements_text(coalesce(cd_opt(p, 'references'), '[]'))
                   WITH ORDINALITY t(x, o)) r
     WHERE x <> '';
    IF v_refs IS NOT NULL THEN
        SELECT i.conversation_id INTO v_conv
          FROM email_message_ids i
         WHERE i.message_id = ANY (v_refs)
         ORDER BY (i.inbox_id = v_inbox) DESC, array_position(v_refs, i.message_id), i.id DESC
         LIMIT 1;
        IF v_conv IS NOT NULL THEN v_by := 'references'; END IF;
    END IF;
    -- 2. [#ID] in the subject, from an identity already on that conversation
    IF v_conv IS NULL AND v_subject ~ '\[#[0-9]{1,18}\]' THEN
        v_tok := substring(v_subject FROM '\[#([0-9]{1,18})\]');
        SELECT cv.id INTO v_conv FROM conversations cv
         WHERE cv.id = v_tok::bigint
           AND (cd_customer_live(cv.customer_id) = v_cust
                OR EXISTS (SELECT 1 FROM messages mm
                            WHERE mm.conversation_id = cv.id AND mm.author_customer_id = v_cust));
        IF v_conv IS NOT NULL THEN v_by := 'subject'; END IF;
    END IF;

    IF v_conv IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(cd_lock_class_customer(), cd_lock_key(cd_customer_live(customer_id)))
           FROM conversations WHERE id = v_conv;
        SELECT * INTO c FROM conversations WHERE id = v_conv FOR NO KEY UPDATE;
        IF c.status IN ('resolved', 'closed', 'abandoned') THEN
            v_follows := c.id;
            c := NULL;
        ELSIF c.status = 'pending' THEN
            UPDATE conversations
               SET status = CASE WHEN agent_id IS NULL THEN 'queued' ELSE 'assigned' END,
                   enqueued_at = CASE WHEN agent_id IS NULL THEN now() ELSE enqueued_at END
             WHERE id = c.id RETURNING * INTO c;
        END IF;
    END IF;
    -- 3. a new conversation in the inbox's queue
    IF c.id IS NULL THEN
        PERFORM pg_advisory_xact_lock(cd_lock_class_customer(), cd_lock_key(v_cust));
        INSERT INTO conversations (customer_id, channel, status, queue_id, tier, priority, sla_policy_id,
                                   subject, inbox_id, enqueued_at, last_message_at)
        SELECT v_cust, 'email', 'queued', q.id, 1, q.priority, q.sla_policy_id, v_subject, v_inbox,
               now(), now()
          FROM queues q WHERE q.id = v_queue
        RETURNING * INTO c;
        PERFORM cd_event(c.id, 'enqueued', jsonb_build_object('queue', v_queue, 'reason', 'email',
                                                               'follows', v_follows));
        v_opened := true;
    END IF;

    INSERT INTO messages (conversation_id, channel, direction, author_kind, author_customer_id, body, metadata)
    VALUES (c.id, 'email', 'in', 'customer', v_cust, v_body,
            jsonb_strip_nulls(jsonb_build_object(
                'subject', v_subject, 'message_id', v_msgid,
                'from', jsonb_build_object('email', v_email, 'name', v_name,
                                           'raw', left(p #>> '{from,email}', 512)),
                'date', cd_ts(v_date), 'in_reply_to', cd_opt(p, 'in_reply_to'),
                'references', cd_opt(p, 'references'), 'envelope', cd_opt(p, 'envelope'),
                'size', cd_opt(p, 'size'), 'threaded_by', v_by, 'follows', v_follows,
                'html', cd_opt(p, 'html'), 'malformed', cd_opt(p, 'malformed'))))
    RETURNING * INTO m;
    INSERT INTO email_message_ids (inbox_id, message_id, conversation_id, message_row_id)
    VALUES (v_inbox, v_msgid, c.id, m.id);
    FOR a IN SELECT x FROM jsonb_array_elements(coalesce(cd_opt(p, 'attachments'), '[]')) t(x) LOOP
        INSERT INTO attachments (message_id, name, content_type, size, sha256, bytes)
        VALUES (m.id, left(a ->> 'name', 255), coalesce(nullif(a ->> 'type', ''), 'application/octet-stream'),
                (a ->> 'size')::bigint, a ->> 'sha256', decode(coalesce(a ->> 'data', ''), 'base64'));
        v_natt := v_natt + 1;
    END LOOP;
    UPDATE conversations SET last_message_at = m.created_at, subject = coalesce(subject, v_subject)
     WHERE id = c.id RETURNING * INTO c;
    IF v_opened THEN
        -- cd_route_info(c.id) for a conversation just opened (no offer, no agent, nothing
        -- rejected), built here: as a SQL function cd_route_info was planned again at every
        -- call, 40 % of an ingest (0014 caches its plan; this stays the cheaper path).
        -- tests/e2e/test_email.py compares the two.
        SELECT p.agent_id, coalesce(p.resolved_at, p.closed_at, p.last_message_at, p.updated_at)
          INTO v_last_agent, v_last_at
          FROM conversations p
         WHERE p.customer_id = c.customer_id AND p.id <> c.id AND p.agent_id IS NOT NULL
         ORDER BY p.id DESC
         LIMIT 1;
        v_route := jsonb_build_object(
            'id', c.id, 'queue', c.queue_id, 'channel', c.channel, 'tier', c.tier,
            'priority', c.priority, 'enqueued_at', cd_ms(c.enqueued_at), 'customer', c.customer_id,
            'status', c.status, 'agent', c.agent_id, 'target_agent', c.target_agent_id,
            'offer', NULL, 'offer_agent', NULL, 'offer_expires_at', NULL,
            'last_agent', v_last_agent, 'last_agent_at', cd_ms(v_last_at),
            'rejected', '[]'::jsonb,
            'sla', jsonb_build_object('policy', c.sla_policy_id,
                                      'first_response_due', cd_ms(c.first_response_due),
                                      'next_response_due', cd_ms(c.next_response_due),
                                      'resolution_due', cd_ms(c.resolution_due),
                                      'paused_at', cd_ms(c.sla_paused_at)),
            'created_at', cd_ms(c.created_at));
    END IF;
    RETURN jsonb_build_object('duplicate', false, 'conversation', c.id, 'message', m.id, 'customer', v_cust,
                              'opened', v_opened, 'threaded_by', v_by, 'follows', v_follows,
                              'status', c.status, 'agent', c.agent_id, 'queue', c.queue_id,
                              'route', v_route,
                              'attachments', v_natt);
END
$$;

-- cd_email_ingest_batch([item, ...]) -> [{ok, result} | {ok:false, sqlstate, message, field}]
-- Group commit of cd_email_ingest: the mails of many LMTP sessions in one
-- transaction.  The batch is tried once as a whole; only when an item raises
-- is it redone (the first attempt rolled back) with each item in its own
-- subtransaction, so that one bad item (or a lock conflict) fails alone
-- (a subtransaction per item on every call cost as much as the work; see
-- 0013_events_batch.sql).
CREATE FUNCTION cd_email_ingest_batch(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e     jsonb;
    v_out jsonb[] := '{}';
    v_col text;
BEGIN
    IF jsonb_typeof(p) IS DISTINCT FROM 'array' THEN
        PERFORM cd_invalid('items', 'must be an array');
    END IF;
    BEGIN
        FOR e IN SELECT value FROM jsonb_array_elements(p) LOOP
            v_out := v_out || jsonb_build_object('ok', true, 'result', cd_email_ingest(e));
        END LOOP;
        RETURN to_jsonb(v_out);
    EXCEPTION WHEN OTHERS THEN
        v_out := '{}';   -- everything the first attempt wrote is rolled back
    END;
    FOR e IN SELECT value FROM jsonb_array_elements(p) LOOP
        BEGIN
            v_out := v_out || jsonb_build_object('ok', true, 'result', cd_email_ingest(e));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_col = COLUMN_NAME;
            v_out := v_out || jsonb_build_object('ok', false, 'sqlstate', SQLSTATE, 'message', SQLERRM,
                                                 'field', nullif(v_col, ''));
        END;
    END LOOP;
    RETURN to_jsonb(v_out);
END
$$;

-- ---------------------------------------------------------------------------
-- Replies: agent messages on e-mail conversations go out through the relay.
-- ---------------------------------------------------------------------------
-- Every outbound message (direction 'out') on the email channel queues one
-- outbox row in the transaction that stores it, whatever path wrote it (the
-- client protocol or the HTTP API), so an acknowledged reply is never lost.
-- Its own Message-ID is recorded in email_message_ids so that the customer's
-- answer threads by In-Reply-To.  The payload is complete: the daemon only
-- formats and sends it.
--   {to, to_name, from, from_name, subject, message_id, in_reply_to,
--    references, body, date}
-- to is the address of the conversation's last inbound mail, else the
-- customer's e-mail identity; from is the inbox address (the inbox the
-- conversation came in on).
CREATE FUNCTION cd_email_outbox_enqueue() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c       conversations;
    v_from  text;
    v_to    text;
    v_name  text;
    v_last  jsonb;
    v_refs  jsonb;
    v_subj  text;
    v_msgid text;
    v_agent text;
BEGIN
    SELECT * INTO c FROM conversations WHERE id = NEW.conversation_id;
    SELECT address INTO v_from FROM inboxes WHERE id = c.inbox_id;
    SELECT metadata INTO v_last FROM messages
     WHERE conversation_id = c.id AND direction = 'in' AND channel = 'email'
     ORDER BY id DESC LIMIT 1;
    v_to := cd_email_norm_address(v_last #>> '{from,email}');
    v_name := v_last #>> '{from,name}';
    IF v_to IS NULL THEN
        SELECT value INTO v_to FROM customer_identities
         WHERE customer_id = cd_customer_live(c.customer_id) AND kind = 'email'
         ORDER BY id DESC LIMIT 1;
    END IF;
    IF v_from IS NULL THEN
        SELECT address INTO v_from FROM inboxes WHERE channel = 'email' ORDER BY id LIMIT 1;
    END IF;
    v_subj := regexp_replace(coalesce(nullif(btrim(coalesce(v_last ->> 'subject', c.subject)), ''),
                                      'Your request'),
                             '^((re|aw|sv|fwd?)\s*:\s*)+', '', 'i');
    IF position(format('[#%s]', c.id) IN v_subj) = 0 THEN
        v_subj := v_subj || format(' [#%s]', c.id);
    END IF;
    v_subj := 'Re: ' || v_subj;
    v_msgid := format('contactd.%s.%s@%s', NEW.id, substr(md5(random()::text), 1, 12),
                      coalesce(nullif(split_part(v_from, '@', 2), ''), 'contactd.invalid'));
    v_refs := coalesce(v_last -> 'references', '[]'::jsonb);
    IF v_last ->> 'message_id' IS NOT NULL THEN
        v_refs := v_refs || jsonb_build_array(v_last ->> 'message_id');
    END IF;
    -- the newest 20 are enough to thread (RFC 5322 3.6.4 allows trimming)
    SELECT coalesce(jsonb_agg(x ORDER BY o), '[]') INTO v_refs
      FROM jsonb_array_elements(v_refs) WITH ORDINALITY t(x, o)
     WHERE o > jsonb_array_length(v_refs) - 20;
    IF NEW.author_agent_id IS NOT NULL THEN
        SELECT name INTO v_agent FROM agents WHERE id = NEW.author_agent_id;
    END IF;
    INSERT INTO outbox (kind, conversation_id, message_id, payload, state, last_error)
    VALUES ('email', c.id, NEW.id,
            jsonb_build_object('to', v_to, 'to_name', v_name, 'from', v_from, 'from_name', v_agent,
                               'subject', v_subj, 'message_id', v_msgid,
                               'in_reply_to', v_last ->> 'message_id', 'references', v_refs,
                               'body', NEW.body, 'date', cd_ts(NEW.created_at)),
            CASE WHEN v_to IS NULL OR v_from IS NULL THEN 'failed' ELSE 'pending' END,
            CASE WHEN v_to IS NULL THEN 'no e-mail address for the customer'
                 WHEN v_from IS NULL THEN 'no e-mail inbox to send from' END);
    IF v_to IS NULL OR v_from IS NULL THEN
        PERFORM cd_event(c.id, 'email_failed',
                         jsonb_build_object('message', NEW.id, 'error',
                                            CASE WHEN v_to IS NULL THEN 'no e-mail address for the customer'
                                                 ELSE 'no e-mail inbox to send from' END));
    ELSIF c.inbox_id IS NOT NULL THEN
        INSERT INTO email_message_ids (inbox_id, message_id, conversation_id, message_row_id)
        VALUES (c.inbox_id, v_msgid, c.id, NEW.id)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_email_outbox AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.direction = 'out' AND NEW.channel = 'email')
    EXECUTE FUNCTION cd_email_outbox_enqueue();

-- cd_email_outbox_claim(limit, lease_s) -> [{id, conversation, message, attempts, payload}]
-- Takes up to `limit` due e-mails: state 'sending', attempts + 1, and a lease
-- (next_attempt_at = now + lease_s) after which a send that never reported
-- back (the daemon died) is tried again.  SKIP LOCKED: several nodes may claim.
CREATE FUNCTION cd_email_outbox_claim(p_limit int, p_lease_s int) RETURNS jsonb
LANGUAGE sql AS $$
    WITH due AS (
        SELECT id FROM outbox
         WHERE kind = 'email' AND state IN ('pending', 'sending') AND next_attempt_at <= now()
         ORDER BY next_attempt_at, id
         LIMIT greatest(p_limit, 1)
         FOR UPDATE SKIP LOCKED
    ), upd AS (
        UPDATE outbox o
           SET state = 'sending', attempts = o.attempts + 1,
               next_attempt_at = now() + make_interval(secs => greatest(p_lease_s, 1))
          FROM due WHERE o.id = due.id
        RETURNING o.id, o.conversation_id, o.message_id, o.attempts, o.payload
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'conversation', conversation_id,
                                                 'message', message_id, 'attempts', attempts,
                                                 'payload', payload) ORDER BY id), '[]')
      FROM upd
$$;

-- cd_email_outbox_done({id, ok, permanent, error, retry_base_s, max_attempts})
--   -> {id, conversation, message, state, agent, attempts, next_attempt_at}
-- ok: sent (timeline email_sent).  Else a temporary failure is retried after
-- retry_base_s * 2^(attempts-1) (at most 6 h) until max_attempts; a permanent
-- failure, or the last attempt, is 'failed' (timeline email_failed; the
-- daemon tells the conversation's agent).
CREATE FUNCTION cd_email_outbox_done(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    o       outbox;
    v_ok    boolean := coalesce((p ->> 'ok')::boolean, false);
    v_perm  boolean := coalesce((p ->> 'permanent')::boolean, false);
    v_err   text := left(p ->> 'error', 1000);
    v_base  int := greatest(coalesce((p ->> 'retry_base_s')::int, 60), 1);
    v_max   int := greatest(coalesce((p ->> 'max_attempts')::int, 10), 1);
    v_agent bigint;
BEGIN
    SELECT * INTO o FROM outbox WHERE id = cd_j_id(p, 'id') AND kind = 'email' FOR UPDATE;
    IF NOT FOUND THEN PERFORM cd_not_found('outbox row not found'); END IF;
    IF o.state <> 'sending' THEN
        RETURN jsonb_build_object('id', o.id, 'conversation', o.conversation_id, 'message', o.message_id,
                                  'state', o.state, 'agent', NULL, 'attempts', o.attempts);
    END IF;
    IF v_ok THEN
        UPDATE outbox SET state = 'sent', sent_at = now(), last_error = NULL WHERE id = o.id RETURNING * INTO o;
        PERFORM cd_event(o.conversation_id, 'email_sent',
                         jsonb_build_object('message', o.message_id, 'to', o.payload ->> 'to',
                                            'message_id', o.payload ->> 'message_id', 'attempts', o.attempts));
    ELSIF v_perm OR o.attempts >= v_max THEN
        UPDATE outbox SET state = 'failed', last_error = v_err WHERE id = o.id RETURNING * INTO o;
        PERFORM cd_event(o.conversation_id, 'email_failed',
                         jsonb_build_object('message', o.message_id, 'to', o.payload ->> 'to',
                                            'error', v_err, 'attempts', o.attempts));
        SELECT agent_id INTO v_agent FROM conversations WHERE id = o.conversation_id;
    ELSE
        UPDATE outbox
           SET state = 'pending', last_error = v_err,
               next_attempt_at = now() + make_interval(secs => least(v_base * 2 ^ least(o.attempts - 1, 20), 21600))
         WHERE id = o.id RETURNING * INTO o;
    END IF;
    RETURN jsonb_build_object('id', o.id, 'conversation', o.conversation_id, 'message', o.message_id,
                              'state', o.state, 'agent', v_agent, 'attempts', o.attempts,
                              'next_attempt_at', cd_ts(o.next_attempt_at), 'error', v_err);
END
$$;
