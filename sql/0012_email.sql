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
    BEGIN
        v_date := (p ->> 'date')::timestamptz;
    EXCEPTION WHEN others THEN
        v_date := NULL;
    END;
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
    RETURN jsonb_build_object('duplicate', false, 'conversation', c.id, 'message', m.id, 'customer', v_cust,
                              'opened', v_opened, 'threaded_by', v_by, 'follows', v_follows,
                              'status', c.status, 'agent', c.agent_id, 'queue', c.queue_id,
                              'route', CASE WHEN v_opened THEN cd_route_info(c.id) END,
                              'attachments', v_natt);
END
$$;
