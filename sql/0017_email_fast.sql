-- 0017_email_fast.sql -- inbound e-mail: a cheaper group commit, large attachments
-- staged in small transactions before the mail's own, lz4 for what is toasted.
--
-- 1. cd_email_ingest_batch (0012) called cd_email_ingest once per mail: about fifteen
--    statements each, and every INSERT into messages / conversation_events fired their
--    statement triggers (events_log, SLA) once per MAIL (track_functions: the events_log
--    trigger alone cost 0.14 ms a mail).  Now cd_email_ingest_rows decides each mail in
--    PL/pgSQL as before (dedupe, customer, threading, the conversation), with the ids of
--    its message and attachments taken from their sequences, and writes the messages,
--    the timeline events, the Message-IDs and the attachments of the WHOLE batch with one
--    INSERT ... SELECT FROM unnest(...) per table: the statement triggers fire once per
--    batch.  A new conversation is inserted with its last_message_at and subject (no
--    UPDATE after the message); a threaded one is updated once.  Within a batch a mail
--    sees the earlier mails' Message-IDs (dedupe and threading) as if they were stored.
--    Same answers; cd_email_ingest(p) is the one-item case.
-- 2. email_blob_chunks: an attachment's bytes can be staged beforehand in chunks (the
--    daemon stages attachments above 256 KB in chunks of 64 KB, each its own short
--    transaction, content-addressed by sha256 so that a retry stores nothing twice), and
--    the ingest only links them (attachment_chunks): the mail's transaction no longer
--    writes megabytes of WAL that every other commit waits behind.  cd_attachment_bytes
--    reads an attachment back whole, either way.  Chunks no attachment links are removed
--    by cd_email_chunks_prune once older than its argument (the daemon: one hour).

-- 3. lz4 instead of pglz for the columns every ingest writes past the TOAST threshold
--    (a mail's body and metadata, its message.in event with the first 16 KB of the body,
--    small attachments): with 4 KB mails, pglz was about a fifth of the PostgreSQL time
--    of an ingest.  Rows already written keep their compression.  A server built without
--    lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE messages ALTER COLUMN body SET COMPRESSION lz4,
                         ALTER COLUMN metadata SET COMPRESSION lz4;
    ALTER TABLE events_log ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE attachments ALTER COLUMN bytes SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 not supported by this server: pglz stays';
END
$$;

CREATE TABLE email_blob_chunks (
    sha256    text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes     bytea NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now()
);
-- attachments are mostly compressed already: stored out of line, never compressed
ALTER TABLE email_blob_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
CREATE INDEX email_blob_chunks_staged_idx ON email_blob_chunks (staged_at);

-- An attachment whose bytes are chunks (attachments.bytes is NULL then).
CREATE TABLE attachment_chunks (
    attachment_id bigint NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
    ord           int NOT NULL CHECK (ord >= 1),
    chunk         text NOT NULL REFERENCES email_blob_chunks (sha256),
    PRIMARY KEY (attachment_id, ord)
);
CREATE INDEX attachment_chunks_chunk_idx ON attachment_chunks (chunk);

-- cd_email_stage_chunk(bytes) -> sha256 (hex) of BYTES, stored once.  A chunk staged
-- again (a retry, the same attachment in another mail) only has its staged_at renewed,
-- so that the prune does not take it between its staging and the ingest that links it.
CREATE FUNCTION cd_email_stage_chunk(p bytea) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_key text := encode(sha256(p), 'hex');
BEGIN
    IF p IS NULL OR octet_length(p) = 0 THEN
        PERFORM cd_invalid('bytes', 'must not be empty');
    END IF;
    INSERT INTO email_blob_chunks (sha256, bytes) VALUES (v_key, p)
    ON CONFLICT (sha256) DO UPDATE SET staged_at = now();
    RETURN v_key;
END
$$;

-- cd_email_chunks_prune(older_than_s, batch) -> {deleted}: staged chunks that no
-- attachment links and that were staged (or staged again) more than OLDER_THAN_S
-- seconds ago: a mail whose ingest never came (the daemon died, the MTA gave up).
CREATE FUNCTION cd_email_chunks_prune(p_older_than_s int, p_batch int) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    DELETE FROM email_blob_chunks b
     WHERE b.sha256 IN (SELECT x.sha256 FROM email_blob_chunks x
                         WHERE x.staged_at < now() - make_interval(secs => greatest(p_older_than_s, 0))
                           AND NOT EXISTS (SELECT 1 FROM attachment_chunks l WHERE l.chunk = x.sha256)
                         ORDER BY x.staged_at
                         LIMIT greatest(p_batch, 1)
                           FOR UPDATE SKIP LOCKED)
       -- linked meanwhile by a committed ingest: kept
       AND NOT EXISTS (SELECT 1 FROM attachment_chunks l WHERE l.chunk = b.sha256);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN jsonb_build_object('deleted', n);
END
$$;

-- cd_attachment_bytes(attachment id) -> the attachment's bytes, whole: attachments.bytes,
-- else its chunks in order; NULL when the bytes were not kept (over the size limit).
CREATE FUNCTION cd_attachment_bytes(p_id bigint) RETURNS bytea
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v bytea;
BEGIN
    SELECT a.bytes INTO v FROM attachments a WHERE a.id = p_id;
    IF v IS NULL THEN
        SELECT string_agg(b.bytes, ''::bytea ORDER BY l.ord) INTO v
          FROM attachment_chunks l JOIN email_blob_chunks b ON b.sha256 = l.chunk
         WHERE l.attachment_id = p_id;
    END IF;
    RETURN v;
END
$$;

-- cd_email_ingest_rows([item, ...]) -> jsonb[] of cd_email_ingest's answers, same order.
-- Items as cd_email_ingest's (0012); an attachment carries either data (base64) or
-- chunks: [sha256, ...] of chunks staged with cd_email_stage_chunk, in order (their
-- lengths must add up to size; each key is the sha256 of the chunk's bytes, computed by
-- the database, so the daemon that names them knows exactly what is linked).  Raises on
-- the first bad item (cd_email_ingest_batch then redoes the items one by one).
CREATE FUNCTION cd_email_ingest_rows(p jsonb) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_mseq    regclass := pg_get_serial_sequence('messages', 'id')::regclass;
    v_aseq    regclass := pg_get_serial_sequence('attachments', 'id')::regclass;
    v_out     jsonb[] := '{}';
    n         int := 0;     -- items
    nm        int := 0;     -- messages to insert
    na        int := 0;     -- attachments to insert
    ne        int := 0;     -- enqueued events
    -- the batch's rows, written at the end
    m_id      bigint[] := '{}';
    m_conv    bigint[] := '{}';
    m_cust    bigint[] := '{}';
    m_body    text[] := '{}';
    m_meta    jsonb[] := '{}';
    m_inbox   bigint[] := '{}';
    m_msgid   text[] := '{}';
    m_out     int[] := '{}';     -- the answer (v_out index) of each message
    a_id      bigint[] := '{}';
    a_msg     bigint[] := '{}';
    a_name    text[] := '{}';
    a_type    text[] := '{}';
    a_size    bigint[] := '{}';
    a_sha     text[] := '{}';
    a_data    bytea[] := '{}';
    a_chunks  jsonb[] := '{}';
    e_conv    bigint[] := '{}';
    e_data    jsonb[] := '{}';
    item      jsonb;
    v_inbox   bigint;
    v_queue   bigint;
    v_msgid   text;
    v_email   text;
    v_name    text;
    v_subject text;
    v_refs    text[];
    v_date    timestamptz;
    v_cust    bigint;
    v_conv    bigint;
    v_tok     bigint;
    v_by      text;
    v_follows bigint;
    v_opened  boolean;
    v_natt    int;
    v_route   jsonb;
    v_last_agent bigint;
    v_last_at timestamptz;
    v_prev    int;
    v_mid     bigint;
    c         conversations;
    e         email_message_ids;
    a         jsonb;
    v_bad     bigint;
BEGIN
    IF jsonb_typeof(p) IS DISTINCT FROM 'array' THEN
        PERFORM cd_invalid('items', 'must be an array');
    END IF;
    FOR item IN SELECT value FROM jsonb_array_elements(p) LOOP
        n := n + 1;
        PERFORM cd_check_body(item);
        v_inbox := cd_j_id(item, 'inbox');
        SELECT queue_id INTO v_queue FROM inboxes WHERE id = v_inbox;
        IF NOT FOUND THEN PERFORM cd_not_found(format('inbox %s not found', v_inbox)); END IF;
        v_msgid := item ->> 'message_id';
        IF v_msgid IS NULL OR v_msgid = '' OR length(v_msgid) > 998 THEN
            PERFORM cd_invalid('message_id', 'must be 1..998 characters');
        END IF;

        -- dedupe: one (inbox, Message-ID) at a time; an earlier mail of this batch counts
        PERFORM pg_advisory_xact_lock(cd_lock_class_email(), hashtext(v_inbox::text || ':' || v_msgid));
        v_prev := NULL;
        IF nm > 0 THEN
            SELECT u.o INTO v_prev FROM unnest(m_inbox, m_msgid) WITH ORDINALITY u(i, x, o)
             WHERE u.i = v_inbox AND u.x = v_msgid LIMIT 1;
        END IF;
        IF v_prev IS NOT NULL THEN
            v_out[n] := jsonb_build_object('duplicate', true, 'conversation', m_conv[v_prev],
                                           'message', m_id[v_prev],
                                           'customer', v_out[m_out[v_prev]] -> 'customer',
                                           'opened', false, 'threaded_by', NULL,
                                           'status', v_out[m_out[v_prev]] -> 'status',
                                           'agent', v_out[m_out[v_prev]] -> 'agent',
                                           'queue', v_out[m_out[v_prev]] -> 'queue',
                                           'route', NULL, 'attachments', 0);
            CONTINUE;
        END IF;
        SELECT * INTO e FROM email_message_ids WHERE inbox_id = v_inbox AND message_id = v_msgid;
        IF e.id IS NOT NULL THEN
            SELECT * INTO c FROM conversations WHERE id = e.conversation_id;
            v_out[n] := jsonb_build_object('duplicate', true, 'conversation', c.id, 'message', e.message_row_id,
                                           'customer', c.customer_id, 'opened', false, 'threaded_by', NULL,
                                           'status', c.status, 'agent', c.agent_id, 'queue', c.queue_id,
                                           'route', NULL, 'attachments', 0);
            CONTINUE;
        END IF;

        v_email := cd_email_norm_address(item #>> '{from,email}');
        v_name := left(nullif(btrim(item #>> '{from,name}'), ''), 200);
        v_subject := left(item ->> 'subject', 500);
        v_date := NULL;
        IF item ->> 'date' ~ '^[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$' THEN
            v_date := (item ->> 'date')::timestamptz;
        ELSIF item ->> 'date' IS NOT NULL THEN
            BEGIN
                v_date := (item ->> 'date')::timestamptz;
            EXCEPTION WHEN others THEN
                v_date := NULL;
            END;
        END IF;
        v_cust := cd_customer_resolve(NULL, v_email, NULL, v_name);
        v_conv := NULL;
        v_by := NULL;
        v_follows := NULL;
        v_opened := false;
        v_route := NULL;
        c := NULL;

        -- 1. In-Reply-To, then References (newest first), naming a stored Message-ID
        --    (or one of an earlier mail of this batch: newer than any stored)
        v_refs := NULL;
        IF jsonb_array_length(coalesce(cd_opt(item, 'in_reply_to'), '[]')) > 0
           OR jsonb_array_length(coalesce(cd_opt(item, 'references'), '[]')) > 0 THEN
            SELECT array_agg(x ORDER BY o) INTO v_refs
              FROM (SELECT x, o FROM jsonb_array_elements_text(coalesce(cd_opt(item, 'in_reply_to'), '[]'))
                                     WITH ORDINALITY t(x, o)
                    UNION ALL
                    SELECT x, 1000000 - o FROM jsonb_array_elements_text(coalesce(cd_opt(item, 'references'), '[]'))
                           WITH ORDINALITY t(x, o)) r
             WHERE x <> '';
        END IF;
        IF v_refs IS NOT NULL THEN
            SELECT r.conv INTO v_conv
              FROM (SELECT i.inbox_id, i.message_id, i.conversation_id AS conv, i.id AS ord
                      FROM email_message_ids i
                     WHERE i.message_id = ANY (v_refs)
                    UNION ALL
                    SELECT u.i, u.x, u.cv, 9000000000000000000 + u.o
                      FROM unnest(m_inbox, m_msgid, m_conv) WITH ORDINALITY u(i, x, cv, o)
                     WHERE u.x = ANY (v_refs)) r
             ORDER BY (r.inbox_id = v_inbox) DESC, array_position(v_refs, r.message_id), r.ord DESC
             LIMIT 1;
            IF v_conv IS NOT NULL THEN v_by := 'references'; END IF;
        END IF;
        -- 2. [#ID] in the subject, from an identity already on that conversation
        IF v_conv IS NULL AND v_subject ~ '\[#[0-9]{1,18}\]' THEN
            v_tok := substring(v_subject FROM '\[#([0-9]{1,18})\]')::bigint;
            SELECT cv.id INTO v_conv FROM conversations cv
             WHERE cv.id = v_tok
               AND (cd_customer_live(cv.customer_id) = v_cust
                    OR EXISTS (SELECT 1 FROM messages mm
                                WHERE mm.conversation_id = cv.id AND mm.author_customer_id = v_cust)
                    OR EXISTS (SELECT 1 FROM unnest(m_conv, m_cust) u(conv, cu)
                                WHERE u.conv = cv.id AND u.cu = v_cust));
            IF v_conv IS NOT NULL THEN v_by := 'subject'; END IF;
        END IF;

        IF v_conv IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(cd_lock_class_customer(), cd_lock_key(cd_customer_live(customer_id)))
               FROM conversations WHERE id = v_conv;
            SELECT * INTO c FROM conversations WHERE id = v_conv FOR NO KEY UPDATE;
            IF c.status IN ('resolved', 'closed', 'abandoned') THEN
                v_follows := c.id;
                c := NULL;
            ELSE
                -- pending goes back to queued (assigned with an agent); the message's time
                UPDATE conversations
                   SET status = CASE WHEN status <> 'pending' THEN status
                                     WHEN agent_id IS NULL THEN 'queued' ELSE 'assigned' END,
                       enqueued_at = CASE WHEN status = 'pending' AND agent_id IS NULL
                                          THEN now() ELSE enqueued_at END,
                       last_message_at = now(), subject = coalesce(subject, v_subject)
                 WHERE id = c.id RETURNING * INTO c;
            END IF;
        END IF;
        -- 3. a new conversation in the inbox's queue (its message's time already set)
        IF c.id IS NULL THEN
            PERFORM pg_advisory_xact_lock(cd_lock_class_customer(), cd_lock_key(v_cust));
            INSERT INTO conversations (customer_id, channel, status, queue_id, tier, priority, sla_policy_id,
                                       subject, inbox_id, enqueued_at, last_message_at)
            SELECT v_cust, 'email', 'queued', q.id, 1, q.priority, q.sla_policy_id, v_subject, v_inbox,
                   now(), now()
              FROM queues q WHERE q.id = v_queue
            RETURNING * INTO c;
            ne := ne + 1;
            e_conv[ne] := c.id;
            e_data[ne] := jsonb_build_object('queue', v_queue, 'reason', 'email', 'follows', v_follows);
            v_opened := true;
        END IF;

        v_mid := nextval(v_mseq);
        nm := nm + 1;
        m_id[nm] := v_mid;
        m_conv[nm] := c.id;
        m_cust[nm] := v_cust;
        m_body[nm] := coalesce(item ->> 'body', '');
        m_inbox[nm] := v_inbox;
        m_msgid[nm] := v_msgid;
        m_out[nm] := n;
        m_meta[nm] := jsonb_strip_nulls(jsonb_build_object(
                'subject', v_subject, 'message_id', v_msgid,
                'from', jsonb_build_object('email', v_email, 'name', v_name,
                                           'raw', left(item #>> '{from,email}', 512)),
                'date', cd_ts(v_date), 'in_reply_to', cd_opt(item, 'in_reply_to'),
                'references', cd_opt(item, 'references'), 'envelope', cd_opt(item, 'envelope'),
                'size', cd_opt(item, 'size'), 'threaded_by', v_by, 'follows', v_follows,
                'html', cd_opt(item, 'html'), 'malformed', cd_opt(item, 'malformed')));
        v_natt := 0;
        IF jsonb_array_length(coalesce(cd_opt(item, 'attachments'), '[]')) > 0 THEN
            FOR a IN SELECT x FROM jsonb_array_elements(item -> 'attachments') t(x) LOOP
                na := na + 1;
                v_natt := v_natt + 1;
                a_id[na] := nextval(v_aseq);
                a_msg[na] := v_mid;
                a_name[na] := left(a ->> 'name', 255);
                a_type[na] := coalesce(nullif(a ->> 'type', ''), 'application/octet-stream');
                a_size[na] := (a ->> 'size')::bigint;
                a_sha[na] := a ->> 'sha256';
                IF jsonb_typeof(a -> 'chunks') = 'array' THEN
                    a_chunks[na] := a -> 'chunks';
                    a_data[na] := NULL;
                ELSE
                    a_chunks[na] := NULL;
                    a_data[na] := decode(coalesce(a ->> 'data', ''), 'base64');
                END IF;
            END LOOP;
        END IF;

        IF v_opened THEN
            -- the SLA trigger of the INSERT set the due times after RETURNING
            IF c.sla_policy_id IS NOT NULL THEN
                SELECT * INTO c FROM conversations WHERE id = c.id;
            END IF;
            -- cd_route_info(c.id) for a conversation just opened (see 0012)
            SELECT x.agent_id, coalesce(x.resolved_at, x.closed_at, x.last_message_at, x.updated_at)
              INTO v_last_agent, v_last_at
              FROM conversations x
             WHERE x.customer_id = c.customer_id AND x.id <> c.id AND x.agent_id IS NOT NULL
             ORDER BY x.id DESC
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
        v_out[n] := jsonb_build_object('duplicate', false, 'conversation', c.id, 'message', v_mid,
                                       'customer', v_cust, 'opened', v_opened, 'threaded_by', v_by,
                                       'follows', v_follows, 'status', c.status, 'agent', c.agent_id,
                                       'queue', c.queue_id, 'route', v_route, 'attachments', v_natt);
    END LOOP;

    -- the batch's rows: one statement per table (statement triggers fire once)
    IF ne > 0 THEN
        INSERT INTO conversation_events (conversation_id, kind, data)
        SELECT u.cv, 'enqueued', u.d FROM unnest(e_conv, e_data) WITH ORDINALITY u(cv, d, o) ORDER BY u.o;
    END IF;
    IF nm > 0 THEN
        INSERT INTO messages (id, conversation_id, channel, direction, author_kind, author_customer_id,
                              body, metadata)
        OVERRIDING SYSTEM VALUE
        SELECT u.id, u.cv, 'email', 'in', 'customer', u.cu, u.b, u.md
          FROM unnest(m_id, m_conv, m_cust, m_body, m_meta) u(id, cv, cu, b, md)
         ORDER BY u.id;
        INSERT INTO email_message_ids (inbox_id, message_id, conversation_id, message_row_id)
        SELECT u.i, u.x, u.cv, u.id FROM unnest(m_inbox, m_msgid, m_conv, m_id) u(i, x, cv, id) ORDER BY u.id;
    END IF;
    IF na > 0 THEN
        INSERT INTO attachments (id, message_id, name, content_type, size, sha256, bytes)
        OVERRIDING SYSTEM VALUE
        SELECT u.id, u.m, u.nm, u.t, u.s, u.h, u.d
          FROM unnest(a_id, a_msg, a_name, a_type, a_size, a_sha, a_data) u(id, m, nm, t, s, h, d)
         ORDER BY u.id;
        IF EXISTS (SELECT 1 FROM unnest(a_chunks) u(c) WHERE u.c IS NOT NULL) THEN
            -- a missing chunk fails the foreign key (23503): the mail is not stored
            INSERT INTO attachment_chunks (attachment_id, ord, chunk)
            SELECT u.id, k.o, k.x
              FROM unnest(a_id, a_chunks) u(id, ch)
             CROSS JOIN LATERAL jsonb_array_elements_text(u.ch) WITH ORDINALITY k(x, o)
             WHERE u.ch IS NOT NULL;
            SELECT u.id INTO v_bad
              FROM unnest(a_id, a_size, a_chunks) u(id, s, ch)
             WHERE u.ch IS NOT NULL
               AND u.s IS DISTINCT FROM (SELECT coalesce(sum(octet_length(b.bytes)), 0)
                                           FROM attachment_chunks l
                                           JOIN email_blob_chunks b ON b.sha256 = l.chunk
                                          WHERE l.attachment_id = u.id)
             LIMIT 1;
            IF v_bad IS NOT NULL THEN
                PERFORM cd_invalid('attachments', 'the chunks of an attachment do not add up to its size');
            END IF;
        END IF;
    END IF;
    RETURN v_out;
END
$$;

-- cd_email_ingest(p) -> cd_email_ingest_rows of one item (0012's contract).
CREATE OR REPLACE FUNCTION cd_email_ingest(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN (cd_email_ingest_rows(jsonb_build_array(p)))[1];
END
$$;

-- cd_email_ingest_batch([item, ...]) -> [{ok, result} | {ok:false, sqlstate, message, field}]
-- The whole batch in one cd_email_ingest_rows; only when it raises is it redone item by
-- item, each in its own subtransaction (0012's answers, 0013's pattern).
CREATE OR REPLACE FUNCTION cd_email_ingest_batch(p jsonb) RETURNS jsonb
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
        RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('ok', true, 'result', r) ORDER BY o), '[]')
                  FROM unnest(cd_email_ingest_rows(p)) WITH ORDINALITY u(r, o));
    EXCEPTION WHEN OTHERS THEN
        NULL;   -- everything the first attempt wrote is rolled back
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
