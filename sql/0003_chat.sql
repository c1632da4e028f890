-- 0003_chat.sql -- the chat path (SPEC section 1) and the router's writes,
-- as plpgsql functions.
--
-- The daemon calls each one as ONE statement, `SELECT fn($1::jsonb)::text`,
-- so every call is one transaction and the reply to the client is sent only
-- after it committed.  Every function takes one jsonb object (the message
-- function: an array) and returns jsonb.
--
--   cd_chat_customer_hello(p)      customer hello: find / create the customer
--   cd_chat_customer_messages(p)   GROUP COMMIT of customer messages (array in, array out)
--   cd_chat_customer_close(p)      customer `close`
--   cd_chat_survey(p)              customer `survey`
--   cd_agent_auth(p)               agent hello: the agent and its password hash
--   cd_agent_presence(p)           agent `presence`
--   cd_agent_message(p)            agent `message`
--   cd_offer_create(p)             router: offer a queued conversation to an agent
--   cd_offer_decide(p)             router: accepted | rejected | expired | revoked
--   cd_conversation_resolve(p)     agent `resolve` (and the HTTP API)
--   cd_conversation_transfer(p)    agent `transfer` (and the HTTP API)
--   cd_router_snapshot()           what the router rebuilds from after a restart
--
-- Errors (SQLSTATE, mapped by src/store/store.c):
--   22023 invalid_parameter_value  MESSAGE '<field>: <what is wrong>', COLUMN '<field>'  -> invalid
--   P0002 no_data_found            '<thing> N not found'                                 -> not_found
--   23505 unique_violation         a second survey, a reused client_msg_id               -> conflict
--   55000 object_not_in_prerequisite_state
--                                  the object is not in a state that allows this
--                                  (offering a conversation that is not queued,
--                                  deciding an offer that is no longer pending)       -> conflict
--   42501 insufficient_privilege   the caller may not do this (not its conversation,
--                                  not the assigned agent)                             -> forbidden
-- cd_chat_customer_messages never raises for a bad item: it answers that item
-- with {ok:false, code, field, message} and commits the others.
--
-- Conventions of the inputs:
--   * ids are JSON integers (a string of digits is accepted too); "name or id"
--     fields (queue, agent of a transfer) take a name/login or an id.
--   * an absent field and a JSON null are the same; unknown fields are ignored
--     (these are internal calls: the C side checks what clients send).
--   * times in outputs: `*_at` strings are UTC ISO 8601 with milliseconds
--     (cd_ts); the router snapshot and `route` objects use epoch milliseconds.
--
-- Safe retries (SPEC 1: "repeating a frame with the same client_msg_id from
-- the same sender returns the same ok and records nothing twice"):
--   * messages (customer and agent) are deduplicated by the unique indexes on
--     messages (author, client_msg_id): the retry answers with the original
--     ids and "duplicate": true;
--   * close, survey, presence, resolve, transfer and offer decisions accept
--     an optional `client_msg_id`: the first answer is kept in
--     client_requests and a repeat returns it again with "duplicate": true
--     (the C side should not notify anybody again for a duplicate).  A
--     client_msg_id reused for another kind of request is a 23505.
--
-- Locks.  Every function that changes a conversation locks its row first
-- (FOR NO KEY UPDATE) and only then its offers, so they never deadlock on
-- each other.  The message function also takes a transaction advisory lock
-- per customer (two-int form, class cd_lock_class_customer(); it cannot
-- collide with the bigint advisory locks of migrations or the router
-- leader) so that two concurrent batches never open two conversations for
-- one customer nor store one client_msg_id twice.

-- ---------------------------------------------------------------------------
-- Schema additions
-- ---------------------------------------------------------------------------

-- What a visitor told us that is not a proven identity: an unverified
-- visitor's e-mail / phone, or values that already belong to another
-- customer (identities are never moved by a hello).  {"email":..,"phone":..}
ALTER TABLE customers ADD COLUMN attributes jsonb
    CHECK (attributes IS NULL OR jsonb_typeof(attributes) = 'object');

-- Transfer to an agent: the conversation waits in its queue, and the router
-- offers it to this agent (see cd_conversation_transfer).  Cleared when the
-- conversation is assigned or transferred to a queue.
ALTER TABLE conversations ADD COLUMN target_agent_id bigint REFERENCES agents (id);

-- Every customer message updates its conversation (last_message_at), and
-- routing changes its status: leave room on each page for HOT updates
-- (measured: 90 -> ~45% of those updates HOT, 70 -> ~80%).  Applies to pages
-- written from now on.
ALTER TABLE conversations SET (fillfactor = 70);

-- "the customer's open conversation on channel X" (every chat message, hello).
-- Open = not resolved / closed / abandoned; queries must spell the predicate
-- exactly like this for the planner to use the index.
CREATE INDEX conversations_customer_open_idx ON conversations (customer_id, channel, id)
    WHERE status NOT IN ('resolved', 'closed', 'abandoned');
-- Not added on purpose (the hot path pays for every index): the snapshot's
-- status filter uses conversations_status_queue_idx, pending offers are
-- indexed by offers_one_pending_uq (0001), and target_agent_id needs no index
-- for its foreign key because agents are only soft-deleted.

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_forbidden(p_msg text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = p_msg;
END
$$;

CREATE FUNCTION cd_not_found(p_msg text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = p_msg;
END
$$;

CREATE FUNCTION cd_wrong_state(p_msg text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = p_msg;
END
$$;

-- epoch milliseconds (NULL stays NULL)
CREATE FUNCTION cd_ms(p_t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT floor(extract(epoch FROM p_t) * 1000)::bigint
$$;

-- p -> field, with a JSON null read as absent (SQL NULL)
CREATE FUNCTION cd_opt(p jsonb, p_field text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p -> p_field) = 'null' THEN NULL ELSE p -> p_field END
$$;

-- An id: a positive JSON integer or a string of digits.  NULL for an absent
-- or null field unless P_REQUIRED.
CREATE FUNCTION cd_j_id(p jsonb, p_field text, p_required boolean DEFAULT true) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := cd_opt(p, p_field);
    s text;
BEGIN
    IF v IS NULL THEN
        IF p_required THEN PERFORM cd_invalid(p_field, 'is required'); END IF;
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) IN ('number', 'string') THEN
        s := v #>> '{}';
    END IF;
    IF s IS NULL OR s !~ '^[0-9]{1,18}$' OR s::bigint = 0 THEN
        PERFORM cd_invalid(p_field, 'must be an id');
    END IF;
    RETURN s::bigint;
END
$$;

-- An optional string (NULL when absent or null); '' counts as absent when
-- P_EMPTY_IS_NULL.  Longer than P_MAX characters is invalid.
CREATE FUNCTION cd_j_opt_text(p jsonb, p_field text, p_max int, p_empty_is_null boolean DEFAULT true)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := cd_opt(p, p_field);
    s text;
BEGIN
    IF v IS NULL THEN RETURN NULL; END IF;
    s := cd_j_text(v, p_field);
    IF p_empty_is_null AND btrim(s) = '' THEN RETURN NULL; END IF;
    IF length(s) > p_max THEN
        PERFORM cd_invalid(p_field, format('must be at most %s characters', p_max));
    END IF;
    RETURN s;
END
$$;

-- An optional JSON boolean (default false).
CREATE FUNCTION cd_j_bool(p jsonb, p_field text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := cd_opt(p, p_field);
BEGIN
    IF v IS NULL THEN RETURN false; END IF;
    IF jsonb_typeof(v) <> 'boolean' THEN PERFORM cd_invalid(p_field, 'must be true or false'); END IF;
    RETURN v::text::boolean;
END
$$;

-- A message body: a non-blank string of at most 65536 bytes.
CREATE FUNCTION cd_j_body(p jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := cd_opt(p, 'body');
    s text;
BEGIN
    IF v IS NULL THEN PERFORM cd_invalid('body', 'is required'); END IF;
    s := cd_j_text(v, 'body');
    IF s !~ '\S' THEN PERFORM cd_invalid('body', 'must not be empty'); END IF;
    IF octet_length(s) > 65536 THEN PERFORM cd_invalid('body', 'must be at most 65536 bytes'); END IF;
    RETURN s;
END
$$;

-- client_msg_id: NULL or 1..200 characters (messages.client_msg_id CHECK)
CREATE FUNCTION cd_j_client_msg_id(p jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := cd_opt(p, 'client_msg_id');
    s text;
BEGIN
    IF v IS NULL THEN RETURN NULL; END IF;
    IF jsonb_typeof(v) = 'string' THEN s := v #>> '{}'; END IF;
    IF s IS NULL OR length(s) NOT BETWEEN 1 AND 200 THEN
        PERFORM cd_invalid('client_msg_id', 'must be a string of 1 to 200 characters');
    END IF;
    RETURN s;
END
$$;

-- A queue or agent named by name/login or id, as cd_j_ref of 0002 (22023
-- "unknown queue ..." when there is none).
CREATE FUNCTION cd_j_opt_ref(p jsonb, p_kind text, p_field text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN cd_opt(p, p_field) IS NULL THEN NULL
                ELSE cd_j_ref(p_kind, p -> p_field, p_field) END
$$;

-- The customer that ID stands for now: merged customers are followed to the
-- survivor (merged_into).  NULL when there is no such customer.
CREATE FUNCTION cd_customer_live(p_id bigint) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_id   bigint := p_id;
    v_next bigint;
BEGIN
    FOR i IN 1..100 LOOP
        SELECT merged_into INTO v_next FROM customers WHERE id = v_id;
        IF NOT FOUND THEN RETURN NULL; END IF;
        IF v_next IS NULL THEN RETURN v_id; END IF;
        v_id := v_next;
    END LOOP;
    RETURN v_id;
END
$$;

-- Advisory lock classes (first key of pg_advisory_xact_lock(int, int)).
CREATE FUNCTION cd_lock_class_customer() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT 1667523329 $$;  -- 'cdc\x01'
CREATE FUNCTION cd_lock_class_identity() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT 1667524865 $$;  -- 'cdi\x01'
-- second key for a customer id (ids 2^31 apart share a lock: harmless)
CREATE FUNCTION cd_lock_key(p_id bigint) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_id & 2147483647)::int
$$;

-- The live agent P_ID as (id, role, login), or P0002 (unknown or deleted).
CREATE FUNCTION cd_agent_live(p_id bigint, OUT id bigint, OUT role text, OUT login text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT a.id, a.role, a.login INTO id, role, login
      FROM agents a WHERE a.id = p_id AND a.deleted_at IS NULL;
    IF NOT FOUND THEN PERFORM cd_not_found(format('agent %s not found', p_id)); END IF;
END
$$;

-- The conversation row, locked (FOR NO KEY UPDATE), or P0002.
CREATE FUNCTION cd_conversation_lock(p_id bigint) RETURNS conversations
LANGUAGE plpgsql AS $$
DECLARE
    r conversations;
BEGIN
    SELECT * INTO r FROM conversations WHERE id = p_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN PERFORM cd_not_found(format('conversation %s not found', p_id)); END IF;
    RETURN r;
END
$$;

-- 42501 unless AGENT (id, role) is the agent of conversation CONV (whose
-- agent_id is CONV_AGENT), or a supervisor / admin.
CREATE FUNCTION cd_check_agent_may(p_agent bigint, p_role text, p_conv bigint, p_conv_agent bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_conv_agent IS DISTINCT FROM p_agent AND p_role NOT IN ('supervisor', 'admin') THEN
        PERFORM cd_forbidden(format('agent %s is not assigned to conversation %s', p_agent, p_conv));
    END IF;
END
$$;

-- 42501 unless conversation CONV (of customer CONV_CUSTOMER) belongs to
-- CUSTOMER (or to the customer it was merged into).
CREATE FUNCTION cd_check_customer_owns(p_customer bigint, p_conv bigint, p_conv_customer bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_conv_customer <> p_customer AND p_conv_customer IS DISTINCT FROM cd_customer_live(p_customer) THEN
        PERFORM cd_forbidden(format('conversation %s does not belong to customer %s', p_conv, p_customer));
    END IF;
END
$$;

CREATE FUNCTION cd_event(p_conversation bigint, p_kind text, p_data jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO conversation_events (conversation_id, kind, data)
    VALUES (p_conversation, p_kind, coalesce(p_data, '{}'))
$$;

-- Revokes the conversation's pending offer, if any (timeline `revoked`).
-- Returns {offer, agent} of the revoked offer (to send offer_revoked), or NULL.
-- The caller holds the conversation's row lock.
CREATE FUNCTION cd_revoke_pending_offer(p_conversation bigint, p_reason text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_offer bigint;
    v_agent bigint;
BEGIN
    UPDATE offers SET state = 'revoked', reason = p_reason, decided_at = now()
     WHERE conversation_id = p_conversation AND state = 'pending'
    RETURNING id, agent_id INTO v_offer, v_agent;
    IF v_offer IS NULL THEN RETURN NULL; END IF;
    PERFORM cd_event(p_conversation, 'revoked',
                     jsonb_build_object('offer', v_offer, 'agent', v_agent, 'reason', p_reason));
    RETURN jsonb_build_object('offer', v_offer, 'agent', v_agent);
END
$$;

-- Retry keys of write frames that do not create a message (client_requests).
-- The stored answer for (sender, client_msg_id) with "duplicate": true, or
-- NULL when there is none.  A key used before for another FRAME is a 23505.
CREATE FUNCTION cd_request_replay(p_kind text, p_sender bigint, p_cmid text, p_frame text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r client_requests;
BEGIN
    IF p_cmid IS NULL OR p_sender IS NULL THEN RETURN NULL; END IF;
    SELECT * INTO r FROM client_requests
     WHERE sender_kind = p_kind AND sender_id = p_sender AND client_msg_id = p_cmid;
    IF NOT FOUND THEN RETURN NULL; END IF;
    IF r.frame_type <> p_frame THEN
        RAISE EXCEPTION USING ERRCODE = '23505', COLUMN = 'client_msg_id',
            MESSAGE = format('client_msg_id "%s" was already used for a %s request', p_cmid, r.frame_type);
    END IF;
    RETURN r.response || '{"duplicate":true}';
END
$$;

CREATE FUNCTION cd_request_save(p_kind text, p_sender bigint, p_cmid text, p_frame text, p_response jsonb)
RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF p_cmid IS NOT NULL AND p_sender IS NOT NULL THEN
        INSERT INTO client_requests (sender_kind, sender_id, client_msg_id, frame_type, response)
        VALUES (p_kind, p_sender, p_cmid, p_frame, p_response)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN p_response;
END
$$;

-- What the router needs to know about conversation P_ID (the elements of
-- cd_router_snapshot().conversations, and `route` of cd_offer_create and
-- cd_conversation_transfer):
--   {id, queue, channel, tier, priority, enqueued_at, customer, status, agent,
--    target_agent, offer, offer_agent, offer_expires_at, last_agent, last_agent_at,
--    rejected:[{agent, at}], sla:{policy, first_response_due, next_response_due,
--    resolution_due, paused_at}, created_at}
-- Times in epoch ms.  offer* describe the pending offer (null when none).
-- last_agent: the agent of the customer's latest OTHER conversation that had
-- one, last_agent_at when that conversation last saw activity (resolved,
-- closed, last message) -- for "the customer's last agent if free within a
-- short window".  rejected: agents that rejected it or let an offer expire.
CREATE FUNCTION cd_route_info(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.id, 'queue', c.queue_id, 'channel', c.channel, 'tier', c.tier,
        'priority', c.priority, 'enqueued_at', cd_ms(c.enqueued_at), 'customer', c.customer_id,
        'status', c.status, 'agent', c.agent_id, 'target_agent', c.target_agent_id,
        'offer', o.id, 'offer_agent', o.agent_id, 'offer_expires_at', cd_ms(o.expires_at),
        'last_agent', l.agent_id, 'last_agent_at', cd_ms(l.at),
        'rejected', coalesce((SELECT jsonb_agg(jsonb_build_object('agent', x.agent_id,
                                                                  'at', cd_ms(x.decided_at)) ORDER BY x.id)
                                FROM offers x
                               WHERE x.conversation_id = c.id AND x.state IN ('rejected', 'expired')),
                             '[]'::jsonb),
        'sla', jsonb_build_object('policy', c.sla_policy_id,
                                  'first_response_due', cd_ms(c.first_response_due),
                                  'next_response_due', cd_ms(c.next_response_due),
                                  'resolution_due', cd_ms(c.resolution_due),
                                  'paused_at', cd_ms(c.sla_paused_at)),
        'created_at', cd_ms(c.created_at))
      FROM conversations c
      LEFT JOIN offers o ON o.conversation_id = c.id AND o.state = 'pending'
      LEFT JOIN LATERAL (
          SELECT p.agent_id, coalesce(p.resolved_at, p.closed_at, p.last_message_at, p.updated_at) AS at
            FROM conversations p
           WHERE p.customer_id = c.customer_id AND p.id <> c.id AND p.agent_id IS NOT NULL
           ORDER BY p.id DESC
           LIMIT 1) l ON true
     WHERE c.id = p_id
$$;

-- ---------------------------------------------------------------------------
-- 1. Customer hello
-- ---------------------------------------------------------------------------

-- cd_chat_customer_hello(p) -> {customer, conversation, resumed, via}
-- Input (the C side has already checked identity_hmac):
--   verified         null | "external" | "email": which identity the HMAC proved
--   external_id      string <= 512 chars          (required when verified = external)
--   email            string, trimmed + lower-cased, name@domain, <= 320 chars
--                                                 (required when verified = email)
--   phone            E.164 ("+" and 7..15 digits; spaces, dots, dashes and
--                    parentheses are removed first)
--   name             <= 200 chars; language: BCP 47 tag <= 35 chars
--   resume_hash      hex SHA-256 of the resume token the client sent, or null
--   new_resume_hash  hex SHA-256 of the new token the C side made (required)
-- Behaviour:
--   verified: the customer holding that identity (kind external / email);
--     the row is marked verified.  None: a new customer with name/language,
--     the proven identity attached as verified.  In both cases the other
--     given identities (email, phone) are attached as UNVERIFIED only when
--     nobody holds them yet: an identity is never taken from another customer
--     (such values go to customers.attributes instead).  resume_hash is
--     ignored (no automatic merge of an anonymous visitor).
--   unverified + resume_hash of a stored token used (or made) within the last
--     30 days: that customer (followed through merges); last_used_at touched.
--   otherwise: a new customer; e-mail / phone are NOT identities (unproven):
--     they are kept in customers.attributes {"email","phone"}.
--   An existing customer's name / language are only filled in when unset
--   (never overwritten); attributes are merged.  new_resume_hash is always
--   stored for the customer (older tokens keep working until 30 days unused;
--   the customer's expired tokens are deleted here).
-- Output: customer (id), conversation (the latest chat conversation that is
--   not resolved/closed/abandoned, or null), resumed (an existing customer was
--   found), via ("identity" | "resume" | "created").
-- Errors: 22023 for any malformed field (COLUMN names it); 23505 if
--   new_resume_hash already belongs to another customer.
CREATE FUNCTION cd_chat_customer_hello(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_verified text;
    v_ext      text;
    v_email    text;
    v_phone    text;
    v_name     text;
    v_lang     text;
    v_resume   text;
    v_new      text;
    v_kind     text;
    v_value    text;
    v_cust     bigint;
    v_via      text;
    v_attrs    jsonb := '{}';
    v_owner    bigint;
    v_conv     bigint;
BEGIN
    PERFORM cd_check_body(p);
    v_verified := cd_j_opt_text(p, 'verified', 16);
    IF v_verified IS NOT NULL AND v_verified NOT IN ('external', 'email') THEN
        PERFORM cd_invalid('verified', 'must be null, "external" or "email"');
    END IF;
    v_ext := cd_j_opt_text(p, 'external_id', 512);
    v_email := lower(btrim(cd_j_opt_text(p, 'email', 400)));
    IF v_email IS NOT NULL AND (length(v_email) > 320
                                OR v_email !~ '^[^@[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+$') THEN
        PERFORM cd_invalid('email', 'must be an e-mail address (name@domain)');
    END IF;
    v_phone := regexp_replace(cd_j_opt_text(p, 'phone', 64), '[[:space:]().-]', '', 'g');
    IF v_phone IS NOT NULL AND v_phone !~ '^\+[1-9][0-9]{6,14}$' THEN
        PERFORM cd_invalid('phone', 'must be an E.164 number such as +34600000000');
    END IF;
    v_name := btrim(cd_j_opt_text(p, 'name', 200));
    v_lang := btrim(cd_j_opt_text(p, 'language', 35));
    IF v_lang IS NOT NULL AND v_lang !~ '^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$' THEN
        PERFORM cd_invalid('language', 'must be a language tag such as "es" or "pt-BR"');
    END IF;
    v_resume := lower(cd_j_opt_text(p, 'resume_hash', 64));
    IF v_resume IS NOT NULL AND v_resume !~ '^[0-9a-f]{64}$' THEN
        PERFORM cd_invalid('resume_hash', 'must be a hex SHA-256');
    END IF;
    IF cd_opt(p, 'new_resume_hash') IS NULL THEN
        PERFORM cd_invalid('new_resume_hash', 'is required');
    END IF;
    v_new := lower(cd_j_opt_text(p, 'new_resume_hash', 64));
    IF v_new IS NULL OR v_new !~ '^[0-9a-f]{64}$' THEN
        PERFORM cd_invalid('new_resume_hash', 'must be a hex SHA-256');
    END IF;

    IF v_verified IS NOT NULL THEN
        v_kind := v_verified;
        v_value := CASE v_verified WHEN 'external' THEN v_ext ELSE v_email END;
        IF v_value IS NULL THEN
            PERFORM cd_invalid(CASE v_verified WHEN 'external' THEN 'external_id' ELSE 'email' END,
                               'is required when verified is "' || v_verified || '"');
        END IF;
        -- serialises concurrent first hellos of one identity
        PERFORM pg_advisory_xact_lock(cd_lock_class_identity(), hashtext(v_kind || ':' || v_value));
        SELECT customer_id INTO v_cust FROM customer_identities WHERE kind = v_kind AND value = v_value;
        IF FOUND THEN
            UPDATE customer_identities SET verified = true
             WHERE kind = v_kind AND value = v_value AND NOT verified;
            v_cust := cd_customer_live(v_cust);
            v_via := 'identity';
        ELSE
            INSERT INTO customers (name, language) VALUES (v_name, v_lang) RETURNING id INTO v_cust;
            INSERT INTO customer_identities (customer_id, kind, value, verified)
            VALUES (v_cust, v_kind, v_value, true);
            v_via := 'created';
        END IF;
        -- the other identities: attached unverified when free, never taken
        IF v_email IS NOT NULL AND v_kind <> 'email' THEN
            INSERT INTO customer_identities (customer_id, kind, value) VALUES (v_cust, 'email', v_email)
            ON CONFLICT (kind, value) DO NOTHING;
            SELECT customer_id INTO v_owner FROM customer_identities WHERE kind = 'email' AND value = v_email;
            IF v_owner IS DISTINCT FROM v_cust THEN v_attrs := v_attrs || jsonb_build_object('email', v_email); END IF;
        END IF;
        IF v_phone IS NOT NULL THEN
            INSERT INTO customer_identities (customer_id, kind, value) VALUES (v_cust, 'phone', v_phone)
            ON CONFLICT (kind, value) DO NOTHING;
            SELECT customer_id INTO v_owner FROM customer_identities WHERE kind = 'phone' AND value = v_phone;
            IF v_owner IS DISTINCT FROM v_cust THEN v_attrs := v_attrs || jsonb_build_object('phone', v_phone); END IF;
        END IF;
    ELSE
        v_attrs := jsonb_strip_nulls(jsonb_build_object('email', v_email, 'phone', v_phone));
        IF v_resume IS NOT NULL THEN
            UPDATE customer_resume_tokens SET last_used_at = now()
             WHERE token_hash = v_resume
               AND coalesce(last_used_at, created_at) > now() - interval '30 days'
            RETURNING customer_id INTO v_cust;
            IF v_cust IS NOT NULL THEN
                v_cust := cd_customer_live(v_cust);
                v_via := 'resume';
            END IF;
        END IF;
        IF v_cust IS NULL THEN
            INSERT INTO customers (name, language, attributes)
            VALUES (v_name, v_lang, nullif(v_attrs, '{}'))
            RETURNING id INTO v_cust;
            v_via := 'created';
            v_attrs := '{}';
        END IF;
    END IF;

    IF v_via <> 'created' OR v_attrs <> '{}' THEN
        UPDATE customers
           SET name = coalesce(name, v_name), language = coalesce(language, v_lang),
               attributes = CASE WHEN v_attrs = '{}' THEN attributes
                                 ELSE coalesce(attributes, '{}') || v_attrs END
         WHERE id = v_cust
           AND (name IS NULL AND v_name IS NOT NULL OR language IS NULL AND v_lang IS NOT NULL
                OR v_attrs <> '{}' AND (attributes IS NULL OR NOT attributes @> v_attrs));
    END IF;

    -- every hello stores a token: the customer's expired ones go
    DELETE FROM customer_resume_tokens
     WHERE customer_id = v_cust AND coalesce(last_used_at, created_at) <= now() - interval '30 days';
    INSERT INTO customer_resume_tokens (token_hash, customer_id, last_used_at)
    VALUES (v_new, v_cust, now())
    ON CONFLICT (token_hash) DO NOTHING;
    IF NOT FOUND THEN
        SELECT customer_id INTO v_owner FROM customer_resume_tokens WHERE token_hash = v_new;
        IF v_owner IS DISTINCT FROM v_cust THEN
            RAISE EXCEPTION USING ERRCODE = '23505', COLUMN = 'new_resume_hash',
                MESSAGE = 'new_resume_hash: already belongs to another customer';
        END IF;
    END IF;

    SELECT id INTO v_conv FROM conversations
     WHERE customer_id = v_cust AND channel = 'chat' AND status NOT IN ('resolved', 'closed', 'abandoned')
     ORDER BY id DESC LIMIT 1;

    RETURN jsonb_build_object('customer', v_cust, 'conversation', v_conv,
                              'resumed', v_via <> 'created', 'via', v_via);
END
$$;

-- ---------------------------------------------------------------------------
-- 2. Customer messages: group commit
-- ---------------------------------------------------------------------------

CREATE TYPE cd_last_agent AS (agent_id bigint, at timestamptz);

-- One item of a batch while cd_chat_customer_messages works on it.
CREATE TYPE cd_chat_msg_item AS (
    idx             int,          -- position in the input (1-based)
    customer        bigint,       -- the live customer (merges followed)
    body            text,
    cmid            text,         -- client_msg_id
    queue_id        bigint,       -- where a new conversation would go
    code            text,         -- NULL: fine so far; else 'invalid' | 'not_found'
    field           text,
    err             text,         -- the error message
    dup             boolean,      -- a retry: answer with the original's ids
    dup_of          int,          -- idx of the original within this batch
    message_id      bigint,
    conversation_id bigint,
    opened          boolean,
    created_at      timestamptz
);

-- cd_chat_customer_messages(p) -> array, one result per item, same order.
-- Input: an array of items from many sessions:
--   {customer (id), body, client_msg_id (string|null), queue (name|id|null),
--    default_queue (name|null: config routing.default_queue)}
-- Per item, either
--   {ok:true, message, conversation, customer, duplicate, opened, queue, agent,
--    status, created_at, route}
--     customer   the live customer id (a merged customer's survivor)
--     duplicate  a retry with the same client_msg_id from the same customer
--                (earlier call, or an earlier item of this call): the ORIGINAL
--                message / conversation ids; nothing is recorded for it
--     opened     this message opened the conversation (status queued, put in
--                its queue); route then holds what the router needs besides
--                queue / customer: {tier, priority, enqueued_at (epoch ms),
--                last_agent, last_agent_at (epoch ms)} (cd_route_info's
--                meaning); else route is null
--     queue, agent, status  the conversation's, after this call (agent: to
--                deliver the message to; status: a `pending` conversation
--                becomes `assigned` again, or `queued` if it has no agent)
--     created_at the message's time (ISO 8601 UTC, ms)
-- or {ok:false, code:"invalid"|"not_found", field, message} for a bad item:
--   item not an object, customer not an id, body not a string / blank / over
--   65536 bytes, client_msg_id not 1..200 chars, unknown queue (invalid);
--   unknown customer (not_found); no queue exists at all when a conversation
--   must be opened ("no queue to route to", invalid).  Bad items never fail
--   the others and raise nothing.
-- Behaviour: a message goes into the customer's open chat conversation (the
--   latest one not resolved/closed/abandoned).  Without one, the customer's
--   first item in this call opens one: channel chat, status queued, queue =
--   the item's queue, else default_queue, else (empty, or naming no queue)
--   the queue with the lowest id; tier 1; priority and sla_policy from the
--   queue; enqueued_at now; timeline `enqueued` {queue, reason:"first
--   message"}.  Several messages of one customer in one call go into ONE
--   conversation, in input order (ascending message ids).  Messages:
--   channel chat, direction in, author_kind customer.  The conversation's
--   last_message_at is set.  A `pending` conversation (waiting on the
--   customer) becomes assigned (or queued) again and its SLA pause ends.
--   SLA due times are NOT computed here (the C sla module owns them).
-- The whole call is one transaction.  The work is set-based: eight
-- statements per call whatever the number of items; per-item lookups are
-- index probes (LATERAL ... LIMIT 1), never joins that could turn into scans
-- of messages / conversations when statistics are stale.
CREATE FUNCTION cd_chat_customer_messages(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_items     cd_chat_msg_item[];
    v_open_cust bigint[];
    v_open_conv bigint[];
    v_new_cust  bigint[];
    v_new_conv  bigint[];
    v_seq       regclass := pg_get_serial_sequence('messages', 'id')::regclass;
    v_now       timestamptz := now();
    v_now_ts    text := cd_ts(now());
BEGIN
    IF jsonb_typeof(p) IS DISTINCT FROM 'array' THEN
        PERFORM cd_invalid('items', 'must be an array');
    END IF;

    -- 1. parse and validate every item; resolve customers and queues
    WITH f AS (
        SELECT e.idx::int AS idx,
               jsonb_typeof(e.j) = 'object' AS is_obj,
               CASE WHEN jsonb_typeof(e.j -> 'customer') IN ('number', 'string')
                         AND (e.j ->> 'customer') ~ '^[0-9]{1,18}$'
                    THEN (e.j ->> 'customer')::bigint END AS cust_in,
               jsonb_typeof(e.j -> 'body') AS body_t,
               e.j ->> 'body' AS body,
               jsonb_typeof(e.j -> 'client_msg_id') AS cmid_t,
               e.j ->> 'client_msg_id' AS cmid,
               jsonb_typeof(e.j -> 'queue') AS q_t,
               CASE WHEN jsonb_typeof(e.j -> 'queue') IN ('string', 'number')
                    THEN nullif(e.j ->> 'queue', '') END AS qkey,
               CASE WHEN jsonb_typeof(e.j -> 'default_queue') = 'string'
                    THEN nullif(e.j ->> 'default_queue', '') END AS dq
          FROM jsonb_array_elements(p) WITH ORDINALITY AS e(j, idx)
    ), keys AS (
        SELECT DISTINCT k FROM (SELECT qkey FROM f UNION ALL SELECT dq FROM f) s(k) WHERE k IS NOT NULL
    ), qmap AS (
        SELECT k, CASE WHEN k ~ '^[0-9]{1,18}$' THEN (SELECT q.id FROM queues q WHERE q.id = k::bigint)
                       ELSE (SELECT q.id FROM queues q WHERE lower(q.name) = lower(k)) END AS qid
          FROM keys
    )
    SELECT array_agg(ROW(f.idx,
                         CASE WHEN c.merged_into IS NULL THEN c.id ELSE cd_customer_live(c.id) END,
                         f.body, CASE WHEN f.cmid_t = 'string' THEN f.cmid END,
                         coalesce(qn.qid, qd.qid, (SELECT min(q.id) FROM queues q)),
                         v.e[1], v.e[2], v.e[3], false, NULL, NULL, NULL, false, NULL)::cd_chat_msg_item
                     ORDER BY f.idx)
      INTO v_items
      FROM f
      -- LATERAL ... LIMIT 1 here and below: always an index probe per item,
      -- whatever the planner believes about the size of the big tables
      LEFT JOIN LATERAL (SELECT x.id, x.merged_into FROM customers x WHERE x.id = f.cust_in LIMIT 1) c ON true
      LEFT JOIN qmap qn ON qn.k = f.qkey
      LEFT JOIN qmap qd ON qd.k = f.dq
      CROSS JOIN LATERAL (SELECT CASE
          WHEN NOT f.is_obj THEN
              ARRAY['invalid', 'item', 'item: must be an object']
          WHEN f.cust_in IS NULL THEN
              ARRAY['invalid', 'customer', 'customer: must be an id']
          WHEN f.body_t IS DISTINCT FROM 'string' THEN
              ARRAY['invalid', 'body', 'body: must be a string']
          WHEN f.body !~ '\S' THEN
              ARRAY['invalid', 'body', 'body: must not be empty']
          WHEN octet_length(f.body) > 65536 THEN
              ARRAY['invalid', 'body', 'body: must be at most 65536 bytes']
          WHEN f.cmid_t IS NOT NULL AND f.cmid_t <> 'null'
               AND (f.cmid_t <> 'string' OR length(f.cmid) NOT BETWEEN 1 AND 200) THEN
              ARRAY['invalid', 'client_msg_id', 'client_msg_id: must be a string of 1 to 200 characters']
          WHEN f.q_t IS NOT NULL AND f.q_t NOT IN ('null', 'string', 'number') THEN
              ARRAY['invalid', 'queue', 'queue: must be a name or an id']
          WHEN f.qkey IS NOT NULL AND qn.qid IS NULL THEN
              ARRAY['invalid', 'queue', format('queue: unknown queue "%s"', left(f.qkey, 100))]
          WHEN c.id IS NULL THEN
              ARRAY['not_found', 'customer', format('customer %s not found', f.cust_in)]
          END AS e) v;

    IF v_items IS NULL THEN
        RETURN '[]'::jsonb;
    END IF;

    -- 2. one lock per customer, in key order (no deadlock between batches)
    PERFORM pg_advisory_xact_lock(cd_lock_class_customer(), s.k)
       FROM (SELECT DISTINCT cd_lock_key(i.customer) AS k
               FROM unnest(v_items) i WHERE i.code IS NULL ORDER BY 1) s;

    -- 3. retries: the same client_msg_id stored before, or earlier in this batch
    SELECT array_agg(ROW(i.idx, i.customer, i.body, i.cmid, i.queue_id, i.code, i.field, i.err,
                         m.id IS NOT NULL OR coalesce(i.first_idx < i.idx, false),
                         CASE WHEN m.id IS NULL AND i.first_idx < i.idx THEN i.first_idx END,
                         m.id, m.conversation_id, false, m.created_at)::cd_chat_msg_item
                     ORDER BY i.idx)
      INTO v_items
      FROM (SELECT u.*,
                   CASE WHEN u.code IS NULL AND u.cmid IS NOT NULL
                        THEN min(u.idx) FILTER (WHERE u.code IS NULL)
                                 OVER (PARTITION BY u.customer, u.cmid) END AS first_idx
              FROM unnest(v_items) u) i
      LEFT JOIN LATERAL (
          SELECT x.id, x.conversation_id, x.created_at FROM messages x
           WHERE i.code IS NULL AND i.cmid IS NOT NULL
             AND x.author_kind = 'customer' AND x.client_msg_id IS NOT NULL
             AND x.author_customer_id = i.customer AND x.client_msg_id = i.cmid
           LIMIT 1) m ON true;

    -- 4. the open chat conversations of the customers that write: the UPDATE
    -- locks each and re-checks that it is still open (a concurrent resolve /
    -- close wins or waits); customers left out get a new conversation below.
    SELECT array_agg(o.id) INTO v_open_conv
      FROM (SELECT DISTINCT i.customer FROM unnest(v_items) i WHERE i.code IS NULL AND NOT i.dup) n
      CROSS JOIN LATERAL (
          SELECT c.id FROM conversations c
           WHERE c.customer_id = n.customer AND c.channel = 'chat'
             AND c.status NOT IN ('resolved', 'closed', 'abandoned')
           ORDER BY c.id DESC LIMIT 1) o;
    WITH u AS (
        UPDATE conversations c
           SET last_message_at = v_now,
               status = CASE WHEN c.status <> 'pending' THEN c.status
                             WHEN c.agent_id IS NULL THEN 'queued' ELSE 'assigned' END,
               enqueued_at = CASE WHEN c.status = 'pending' AND c.agent_id IS NULL
                                  THEN v_now ELSE c.enqueued_at END,
               sla_paused_total_s = c.sla_paused_total_s
                   + CASE WHEN c.sla_paused_at IS NULL THEN 0
                          ELSE greatest(0, floor(extract(epoch FROM v_now - c.sla_paused_at)))::int END,
               sla_paused_at = NULL
         WHERE c.id = ANY (v_open_conv) AND c.status NOT IN ('resolved', 'closed', 'abandoned')
        RETURNING c.customer_id, c.id
    )
    SELECT array_agg(u.customer_id), array_agg(u.id) INTO v_open_cust, v_open_conv FROM u;

    -- 5. new conversations for the others (the queue of their first item)
    WITH need AS (
        SELECT DISTINCT ON (i.customer) i.customer, i.queue_id
          FROM unnest(v_items) i
         WHERE i.code IS NULL AND NOT i.dup AND i.queue_id IS NOT NULL
           AND i.customer <> ALL (coalesce(v_open_cust, '{}'))
         ORDER BY i.customer, i.idx
    ), ins AS (
        INSERT INTO conversations (customer_id, channel, status, queue_id, tier, priority,
                                   sla_policy_id, enqueued_at, last_message_at)
        SELECT n.customer, 'chat', 'queued', q.id, 1, q.priority, q.sla_policy_id, v_now, v_now
          FROM need n JOIN queues q ON q.id = n.queue_id
         ORDER BY n.customer
        RETURNING id, customer_id, queue_id
    ), ev AS (
        INSERT INTO conversation_events (conversation_id, kind, at, data)
        SELECT ins.id, 'enqueued', v_now, jsonb_build_object('queue', ins.queue_id, 'reason', 'first message')
          FROM ins
    )
    SELECT array_agg(ins.customer_id), array_agg(ins.id) INTO v_new_cust, v_new_conv FROM ins;

    -- 6. conversation and message id of every new message (ids taken in input
    -- order, so a customer's messages keep their order; no conversation means
    -- there was no queue to open one in), and 7. the messages themselves
    WITH s AS (
        SELECT t.*,
               CASE WHEN t.todo AND t.conv IS NOT NULL THEN nextval(v_seq) END AS new_id
          FROM (SELECT i.*, i.code IS NULL AND NOT i.dup AS todo,
                       coalesce(o.conv, n.conv) AS conv, n.conv IS NOT NULL AS is_new,
                       row_number() OVER (PARTITION BY i.customer, i.code IS NULL AND NOT i.dup
                                          ORDER BY i.idx) AS rn
                  FROM unnest(v_items) i
                  LEFT JOIN unnest(v_open_cust, v_open_conv) AS o(cust, conv) ON o.cust = i.customer
                  LEFT JOIN unnest(v_new_cust, v_new_conv) AS n(cust, conv) ON n.cust = i.customer
                 ORDER BY i.idx) t
    ), ins AS (
        INSERT INTO messages (id, conversation_id, channel, direction, author_kind, author_customer_id,
                              body, client_msg_id, created_at)
        OVERRIDING SYSTEM VALUE
        SELECT s.new_id, s.conv, 'chat', 'in', 'customer', s.customer, s.body, s.cmid, v_now
          FROM s WHERE s.new_id IS NOT NULL
    )
    SELECT array_agg(ROW(s.idx, s.customer, NULL, s.cmid, s.queue_id,
                         CASE WHEN s.todo AND s.conv IS NULL THEN 'invalid' ELSE s.code END,
                         CASE WHEN s.todo AND s.conv IS NULL THEN 'queue' ELSE s.field END,
                         CASE WHEN s.todo AND s.conv IS NULL THEN 'no queue to route to' ELSE s.err END,
                         s.dup, s.dup_of,
                         CASE WHEN s.todo THEN s.new_id ELSE s.message_id END,
                         CASE WHEN s.todo THEN s.conv ELSE s.conversation_id END,
                         s.todo AND s.is_new AND s.rn = 1,
                         CASE WHEN s.todo THEN v_now ELSE s.created_at END)::cd_chat_msg_item
                     ORDER BY s.idx)
      INTO v_items
      FROM s;

    -- 8. the answers; a retry within the batch answers like its original
    RETURN (
        SELECT jsonb_agg(
                   CASE WHEN coalesce(o.code, i.code) IS NOT NULL THEN
                       jsonb_build_object('ok', false, 'code', coalesce(i.code, o.code),
                                          'field', coalesce(i.field, o.field),
                                          'message', coalesce(i.err, o.err))
                   ELSE
                       jsonb_build_object(
                           'ok', true,
                           'message', coalesce(o.message_id, i.message_id),
                           'conversation', c.id,
                           'customer', i.customer,
                           'duplicate', i.dup,
                           'opened', i.opened,
                           'queue', c.queue_id,
                           'agent', c.agent_id,
                           'status', c.status,
                           'created_at', CASE WHEN coalesce(o.created_at, i.created_at) = v_now THEN v_now_ts
                                              ELSE cd_ts(coalesce(o.created_at, i.created_at)) END,
                           'route', CASE WHEN i.opened THEN jsonb_build_object(
                               'tier', c.tier, 'priority', c.priority,
                               'enqueued_at', cd_ms(c.enqueued_at),
                               'last_agent', (l.r).agent_id, 'last_agent_at', cd_ms((l.r).at)) END)
                   END
                   ORDER BY i.idx)
          FROM unnest(v_items) i
          LEFT JOIN unnest(v_items) o ON o.idx = i.dup_of
          LEFT JOIN LATERAL (SELECT x.* FROM conversations x
                              WHERE x.id = coalesce(o.conversation_id, i.conversation_id) LIMIT 1) c ON true
          -- for a new conversation: the customer's last agent (cd_route_info's rule)
          CROSS JOIN LATERAL (SELECT CASE WHEN i.opened THEN (
              SELECT ROW(x.agent_id, coalesce(x.resolved_at, x.closed_at, x.last_message_at, x.updated_at))
                     ::cd_last_agent
                FROM conversations x
               WHERE x.customer_id = c.customer_id AND x.id <> c.id AND x.agent_id IS NOT NULL
               ORDER BY x.id DESC
               LIMIT 1) END AS r) l);
END
$$;

-- ---------------------------------------------------------------------------
-- 3. Customer close
-- ---------------------------------------------------------------------------

-- cd_chat_customer_close(p) -> {conversation, status, previous, agent, offer, survey, duplicate}
-- Input: customer (id, required), conversation (id; null/absent = the
--   customer's latest open chat conversation), client_msg_id (optional).
-- An open conversation (queued/offered/assigned/pending) or a resolved one
-- becomes closed: closed_at, timeline `closed` {by:"customer", previous,
-- answered: whether an agent was ever assigned -- a close before any
-- assignment is what KPIs count as abandonment}.  A pending offer is revoked
-- (timeline `revoked`, reason "cancelled").  Already closed or abandoned:
-- nothing changes (idempotent), same answer.
-- Output: agent = the conversation's agent (to notify / free its capacity),
-- offer = {offer, agent} of a revoked offer (send offer_revoked) or null,
-- survey = no survey recorded yet for it (offer one to the customer).
-- Errors: P0002 unknown conversation / no open conversation; 42501 not the
-- customer's; 22023 malformed fields.
CREATE FUNCTION cd_chat_customer_close(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_cust   bigint;
    v_conv   bigint;
    v_cmid   text;
    v_replay jsonb;
    c        conversations;
    v_prev   text;
    v_offer  jsonb;
BEGIN
    PERFORM cd_check_body(p);
    v_cust := cd_j_id(p, 'customer');
    v_conv := cd_j_id(p, 'conversation', false);
    v_cmid := cd_j_client_msg_id(p);
    v_replay := cd_request_replay('customer', v_cust, v_cmid, 'close');
    IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;

    IF v_conv IS NULL THEN
        SELECT id INTO v_conv FROM conversations
         WHERE customer_id = coalesce(cd_customer_live(v_cust), v_cust) AND channel = 'chat'
           AND status NOT IN ('resolved', 'closed', 'abandoned')
         ORDER BY id DESC LIMIT 1;
        IF v_conv IS NULL THEN
            PERFORM cd_not_found(format('customer %s has no open conversation', v_cust));
        END IF;
    END IF;
    c := cd_conversation_lock(v_conv);
    PERFORM cd_check_customer_owns(v_cust, c.id, c.customer_id);
    v_prev := c.status;
    IF c.status NOT IN ('closed', 'abandoned') THEN
        v_offer := cd_revoke_pending_offer(c.id, 'cancelled');
        UPDATE conversations SET status = 'closed', closed_at = now() WHERE id = c.id;
        PERFORM cd_event(c.id, 'closed', jsonb_build_object('by', 'customer', 'previous', v_prev,
                                                           'answered', c.assigned_at IS NOT NULL));
        c.status := 'closed';
    END IF;
    RETURN cd_request_save('customer', v_cust, v_cmid, 'close', jsonb_build_object(
        'conversation', c.id, 'status', c.status, 'previous', v_prev, 'agent', c.agent_id,
        'customer', c.customer_id, 'channel', c.channel, 'offer', v_offer,
        'survey', NOT EXISTS (SELECT 1 FROM surveys s WHERE s.conversation_id = c.id),
        'duplicate', false));
END
$$;

-- ---------------------------------------------------------------------------
-- 4. Survey
-- ---------------------------------------------------------------------------

-- cd_chat_survey(p) -> {survey, conversation, duplicate}
-- Input: customer (id), conversation (id), csat 1..5, nps 0..10, ces 1..7
--   (each an integer or null, at least one given), comment (string <= 4000
--   chars or null), client_msg_id (optional).
-- Records the survey (any conversation status) and timeline `survey`
-- {survey, csat, nps, ces}.
-- Errors: 22023 (a score out of range or not an integer names it; none given
--   -> COLUMN csat, "csat: at least one of csat, nps, ces is required");
--   P0002 unknown conversation; 42501 not the customer's conversation;
--   23505 (COLUMN conversation) a survey exists already for it.
CREATE FUNCTION cd_chat_survey(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_cust    bigint;
    v_conv    bigint;
    v_cmid    text;
    v_replay  jsonb;
    v_csat    int;
    v_nps     int;
    v_ces     int;
    v_comment text;
    c         conversations;
    v_id      bigint;
BEGIN
    PERFORM cd_check_body(p);
    v_cust := cd_j_id(p, 'customer');
    v_conv := cd_j_id(p, 'conversation');
    IF cd_opt(p, 'csat') IS NOT NULL THEN v_csat := cd_j_int(p -> 'csat', 'csat', 1, 5); END IF;
    IF cd_opt(p, 'nps') IS NOT NULL THEN v_nps := cd_j_int(p -> 'nps', 'nps', 0, 10); END IF;
    IF cd_opt(p, 'ces') IS NOT NULL THEN v_ces := cd_j_int(p -> 'ces', 'ces', 1, 7); END IF;
    IF v_csat IS NULL AND v_nps IS NULL AND v_ces IS NULL THEN
        PERFORM cd_invalid('csat', 'at least one of csat, nps, ces is required');
    END IF;
    v_comment := cd_j_opt_text(p, 'comment', 4000);
    v_cmid := cd_j_client_msg_id(p);
    v_replay := cd_request_replay('customer', v_cust, v_cmid, 'survey');
    IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;

    c := cd_conversation_lock(v_conv);
    PERFORM cd_check_customer_owns(v_cust, c.id, c.customer_id);
    INSERT INTO surveys (conversation_id, customer_id, csat, nps, ces, comment)
    VALUES (c.id, c.customer_id, v_csat, v_nps, v_ces, v_comment)
    ON CONFLICT (conversation_id) DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '23505', COLUMN = 'conversation',
            MESSAGE = format('conversation %s already has a survey', c.id);
    END IF;
    PERFORM cd_event(c.id, 'survey', jsonb_build_object('survey', v_id, 'csat', v_csat, 'nps', v_nps,
                                                       'ces', v_ces));
    RETURN cd_request_save('customer', v_cust, v_cmid, 'survey',
        jsonb_build_object('survey', v_id, 'conversation', c.id, 'duplicate', false));
END
$$;

-- ---------------------------------------------------------------------------
-- 5. Agent authentication
-- ---------------------------------------------------------------------------

-- cd_agent_auth(p) -> {id, login, name, role, tier, skills:{name:level},
--                      capacity:{chat,email,voice}, status, password_hash} | NULL
-- Input: login (matched regardless of case).  NULL for an unknown or deleted
-- agent, or a login that is not a string.  The C side verifies the Argon2id
-- hash and must never send password_hash to a client.  Changes nothing.
CREATE FUNCTION cd_agent_auth(p jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', a.id, 'login', a.login, 'name', a.name, 'role', a.role, 'tier', a.tier,
               'skills', coalesce((SELECT jsonb_object_agg(s.name, ak.level ORDER BY s.name)
                                     FROM agent_skills ak JOIN skills s ON s.id = ak.skill_id
                                    WHERE ak.agent_id = a.id), '{}'::jsonb),
               'capacity', jsonb_build_object('chat', a.capacity_chat, 'email', a.capacity_email,
                                              'voice', a.capacity_voice),
               'status', a.status,
               'password_hash', a.password_hash)
      FROM agents a
     WHERE jsonb_typeof(p -> 'login') = 'string'
       AND lower(a.login) = lower(p ->> 'login') AND a.deleted_at IS NULL
$$;

-- ---------------------------------------------------------------------------
-- 6. Agent presence
-- ---------------------------------------------------------------------------

-- cd_agent_presence(p) -> {agent, status, previous, status_at, changed, duplicate}
-- Input: agent (id), status "available" | "away" | "offline", client_msg_id.
-- Sets agents.status (and status_at) and appends agent_status_log -- only
-- when the status changes (a repeat answers changed:false, logs nothing).
-- Errors: 22023 status; P0002 unknown / deleted agent.
CREATE FUNCTION cd_agent_presence(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_agent  bigint;
    v_status text;
    v_cmid   text;
    v_replay jsonb;
    v_prev   text;
    v_at     timestamptz;
BEGIN
    PERFORM cd_check_body(p);
    v_agent := cd_j_id(p, 'agent');
    PERFORM cd_require(p, ARRAY['status']);
    v_status := cd_j_text(p -> 'status', 'status');
    IF v_status NOT IN ('available', 'away', 'offline') THEN
        PERFORM cd_invalid('status', 'must be "available", "away" or "offline"');
    END IF;
    v_cmid := cd_j_client_msg_id(p);
    v_replay := cd_request_replay('agent', v_agent, v_cmid, 'presence');
    IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;

    SELECT status, status_at INTO v_prev, v_at FROM agents
     WHERE id = v_agent AND deleted_at IS NULL FOR NO KEY UPDATE;
    IF NOT FOUND THEN PERFORM cd_not_found(format('agent %s not found', v_agent)); END IF;
    IF v_prev <> v_status THEN
        v_at := now();
        UPDATE agents SET status = v_status, status_at = v_at WHERE id = v_agent;
        INSERT INTO agent_status_log (agent_id, status, at) VALUES (v_agent, v_status, v_at);
    END IF;
    RETURN cd_request_save('agent', v_agent, v_cmid, 'presence', jsonb_build_object(
        'agent', v_agent, 'status', v_status, 'previous', v_prev, 'changed', v_prev <> v_status,
        'status_at', cd_ms(v_at), 'duplicate', false));
END
$$;

-- ---------------------------------------------------------------------------
-- 7. Agent message
-- ---------------------------------------------------------------------------

-- cd_agent_message(p) -> {message, conversation, customer, channel, duplicate,
--                         internal, created_at, first_response}
-- Input: agent (id), conversation (id), body (non-blank, <= 65536 bytes),
--   internal (bool, default false), client_msg_id (optional).
-- The agent must be the conversation's agent, or a supervisor / admin (42501
-- otherwise).  Any conversation status is accepted (e.g. a follow-up on a
-- resolved e-mail conversation); delivery is the C side's business.
-- Stored with the conversation's channel, author_kind agent, direction out
-- (or internal).  The first non-internal agent message sets
-- first_response_at (first_response: true); a non-internal message sets
-- last_message_at.  A repeat of client_msg_id by the same agent answers with
-- the original ids and duplicate:true (checked before the permission, so a
-- retry after a transfer still gets its ok) and records nothing.
-- Errors: 22023 fields; P0002 unknown agent / conversation; 42501.
CREATE FUNCTION cd_agent_message(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_agent    bigint;
    v_conv     bigint;
    v_body     text;
    v_internal boolean;
    v_cmid     text;
    a          record;
    c          conversations;
    m          messages;
    v_first    boolean := false;
BEGIN
    PERFORM cd_check_body(p);
    v_agent := cd_j_id(p, 'agent');
    v_conv := cd_j_id(p, 'conversation');
    v_body := cd_j_body(p);
    v_internal := cd_j_bool(p, 'internal');
    v_cmid := cd_j_client_msg_id(p);
    a := cd_agent_live(v_agent);

    IF v_cmid IS NOT NULL THEN
        SELECT * INTO m FROM messages
         WHERE author_kind = 'agent' AND client_msg_id IS NOT NULL
           AND author_agent_id = v_agent AND client_msg_id = v_cmid;
    END IF;
    IF m.id IS NULL THEN
        c := cd_conversation_lock(v_conv);
        PERFORM cd_check_agent_may(a.id, a.role, c.id, c.agent_id);
        INSERT INTO messages (conversation_id, channel, direction, author_kind, author_agent_id, body,
                              client_msg_id)
        VALUES (c.id, c.channel, CASE WHEN v_internal THEN 'internal' ELSE 'out' END, 'agent', v_agent,
                v_body, v_cmid)
        ON CONFLICT DO NOTHING
        RETURNING * INTO m;
        IF m.id IS NOT NULL THEN
            v_first := NOT v_internal AND c.first_response_at IS NULL;
            IF NOT v_internal THEN
                UPDATE conversations
                   SET last_message_at = m.created_at,
                       first_response_at = coalesce(first_response_at, m.created_at)
                 WHERE id = c.id;
            END IF;
            RETURN jsonb_build_object('message', m.id, 'conversation', c.id, 'customer', c.customer_id,
                                      'channel', c.channel, 'duplicate', false, 'internal', v_internal,
                                      'created_at', cd_ts(m.created_at), 'first_response', v_first);
        END IF;
        -- lost a race with a concurrent retry of the same frame
        SELECT * INTO m FROM messages
         WHERE author_kind = 'agent' AND client_msg_id IS NOT NULL
           AND author_agent_id = v_agent AND client_msg_id = v_cmid;
    END IF;
    -- a retry: the original
    SELECT * INTO c FROM conversations WHERE id = m.conversation_id;
    v_first := m.direction = 'out' AND NOT EXISTS (
        SELECT 1 FROM messages x
         WHERE x.conversation_id = m.conversation_id AND x.id < m.id
           AND x.author_kind = 'agent' AND x.direction = 'out');
    RETURN jsonb_build_object('message', m.id, 'conversation', c.id, 'customer', c.customer_id,
                              'channel', m.channel, 'duplicate', true, 'internal', m.direction = 'internal',
                              'created_at', cd_ts(m.created_at), 'first_response', v_first);
END
$$;

-- ---------------------------------------------------------------------------
-- 8. Routing decisions (the router glue)
-- ---------------------------------------------------------------------------

-- A time given as an ISO 8601 string ("2026-11-23T10:00:20.000Z") or as
-- epoch milliseconds (a JSON integer).
CREATE FUNCTION cd_j_time(p jsonb, p_field text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v jsonb := cd_opt(p, p_field);
    s text;
BEGIN
    IF v IS NULL THEN PERFORM cd_invalid(p_field, 'is required'); END IF;
    IF jsonb_typeof(v) = 'number' THEN
        RETURN to_timestamp(cd_j_int(v, p_field, 0, 253402300799999) / 1000.0);
    END IF;
    IF jsonb_typeof(v) = 'string' THEN s := v #>> '{}'; END IF;
    IF s IS NULL OR s !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?(Z|[+-]\d\d(:?\d\d)?)$' THEN
        PERFORM cd_invalid(p_field, 'must be an ISO 8601 time with a zone (e.g. "2026-11-23T10:00:20.000Z") or epoch milliseconds');
    END IF;
    BEGIN
        RETURN s::timestamptz;
    EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
        PERFORM cd_invalid(p_field, 'is not a valid time');
    END;
    RETURN NULL;
END
$$;

-- The text kept in offers.reason for a reason given as a string, or as an
-- object with a string "reason" member.
CREATE FUNCTION cd_reason_text(p_reason jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT left(CASE jsonb_typeof(p_reason)
                WHEN 'string' THEN p_reason #>> '{}'
                WHEN 'object' THEN CASE WHEN jsonb_typeof(p_reason -> 'reason') = 'string'
                                        THEN p_reason ->> 'reason' END
                END, 1000)
$$;

-- cd_offer_create(p) -> {offer, conversation, agent, expires_at, route}
-- Input: conversation (id), agent (id), expires_at (ISO 8601 or epoch ms; not
--   in the past), reason (any JSON: why this agent -- kept in the timeline).
-- The conversation must be queued (55000 otherwise: it is offered, assigned,
-- closed, ...).  Creates the pending offer, status -> offered, timeline
-- `offered` {offer, agent, expires_at, reason}.  target_agent is NOT
-- enforced here: honouring it is the router's job.
-- Errors: 22023 fields; P0002 unknown conversation / agent (deleted agents
--   too); 55000 not queued.
CREATE FUNCTION cd_offer_create(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_conv    bigint;
    v_agent   bigint;
    v_expires timestamptz;
    v_reason  jsonb;
    c         conversations;
    v_offer   bigint;
BEGIN
    PERFORM cd_check_body(p);
    v_conv := cd_j_id(p, 'conversation');
    v_agent := cd_j_id(p, 'agent');
    v_expires := cd_j_time(p, 'expires_at');
    IF v_expires < now() THEN
        PERFORM cd_invalid('expires_at', 'must not be in the past');
    END IF;
    v_reason := coalesce(p -> 'reason', 'null');
    PERFORM cd_agent_live(v_agent);
    c := cd_conversation_lock(v_conv);
    IF c.status <> 'queued' THEN
        PERFORM cd_wrong_state(format('conversation %s is %s, not queued', c.id, c.status));
    END IF;
    INSERT INTO offers (conversation_id, agent_id, expires_at) VALUES (c.id, v_agent, v_expires)
    RETURNING id INTO v_offer;
    UPDATE conversations SET status = 'offered' WHERE id = c.id RETURNING * INTO c;
    PERFORM cd_event(c.id, 'offered', jsonb_build_object('offer', v_offer, 'agent', v_agent,
                                                        'expires_at', cd_ts(v_expires), 'reason', v_reason));
    RETURN jsonb_build_object('offer', v_offer, 'conversation', c.id, 'agent', v_agent,
                              'expires_at', cd_ts(v_expires), 'route', cd_route_info(c.id));
END
$$;

-- cd_offer_decide(p) -> {offer, conversation, agent, state, customer, channel,
--                        queue, status, duplicate}
-- Input: offer (id), decision "accepted" | "rejected" | "expired" | "revoked",
--   reason (optional: a string, or an object kept whole in the timeline; its
--   text goes to offers.reason -- e.g. "timeout", "taken", "cancelled"),
--   client_msg_id (optional, the agent's accept/reject frame; the sender is
--   the offer's agent).
-- The offer gets the state and decided_at.
--   accepted: conversation assigned to the offer's agent, assigned_at (the
--     first assignment only), target_agent cleared; timeline `accepted` and
--     `assigned` {offer, agent}.
--   rejected / expired / revoked: conversation back to queued (enqueued_at
--     unchanged); timeline `rejected` / `offer_timeout` / `revoked`
--     {offer, agent, reason}.
-- Errors: 22023 fields; P0002 unknown offer; 55000 the offer is not pending
--   any more ("offer N is already accepted"), or (accepted) the conversation
--   is not offered.
CREATE FUNCTION cd_offer_decide(p jsonb) RETURNS jsonb
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
    PERFORM cd_check_body(p);
    v_offer := cd_j_id(p, 'offer');
    PERFORM cd_require(p, ARRAY['decision']);
    v_decision := cd_j_text(p -> 'decision', 'decision');
    IF v_decision NOT IN ('accepted', 'rejected', 'expired', 'revoked') THEN
        PERFORM cd_invalid('decision', 'must be "accepted", "rejected", "expired" or "revoked"');
    END IF;
    v_reason := cd_opt(p, 'reason');
    v_cmid := cd_j_client_msg_id(p);

    SELECT * INTO o FROM offers WHERE id = v_offer;
    IF NOT FOUND THEN PERFORM cd_not_found(format('offer %s not found', v_offer)); END IF;
    v_replay := cd_request_replay('agent', o.agent_id, v_cmid, 'offer');
    IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
    -- lock order: the conversation, then the offer (as everywhere)
    c := cd_conversation_lock(o.conversation_id);
    SELECT * INTO o FROM offers WHERE id = v_offer FOR UPDATE;
    IF o.state <> 'pending' THEN
        PERFORM cd_wrong_state(format('offer %s is already %s', o.id, o.state));
    END IF;
    IF v_decision = 'accepted' AND c.status <> 'offered' THEN
        PERFORM cd_wrong_state(format('conversation %s is %s, not offered', c.id, c.status));
    END IF;

    UPDATE offers
       SET state = v_decision, decided_at = now(),
           reason = coalesce(cd_reason_text(v_reason), CASE v_decision WHEN 'expired' THEN 'timeout' END)
     WHERE id = o.id;
    IF v_decision = 'accepted' THEN
        UPDATE conversations
           SET status = 'assigned', agent_id = o.agent_id, assigned_at = coalesce(assigned_at, now()),
               target_agent_id = NULL
         WHERE id = c.id
        RETURNING * INTO c;
        PERFORM cd_event(c.id, 'accepted', jsonb_build_object('offer', o.id, 'agent', o.agent_id,
                                                             'reason', v_reason));
        PERFORM cd_event(c.id, 'assigned', jsonb_build_object('offer', o.id, 'agent', o.agent_id));
    ELSE
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

-- cd_conversation_resolve(p) -> {conversation, agent, customer, channel, status,
--                                resolved_at, offer, duplicate}
-- Input: conversation (id), agent (id; null = the system / HTTP API: no
--   permission check), disposition (string <= 200 or null), client_msg_id.
-- The agent must be the conversation's agent, or a supervisor / admin (42501).
--   open (queued/offered/assigned/pending): status resolved, resolved_at,
--     disposition, a pending offer revoked; timeline `resolved`
--     {by, disposition}.
--   closed / abandoned (the customer left first): resolved_at and
--     disposition are recorded, status stays; timeline `resolved`.
--   already resolved (or resolved_at set): nothing changes, same answer.
-- Output agent = the conversation's agent (its capacity is free again),
-- offer = {offer, agent} of a revoked offer or null.
-- Errors: 22023; P0002 unknown conversation / agent; 42501.
CREATE FUNCTION cd_conversation_resolve(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_conv   bigint;
    v_agent  bigint;
    v_disp   text;
    v_cmid   text;
    v_replay jsonb;
    a        record;
    c        conversations;
    v_offer  jsonb;
BEGIN
    PERFORM cd_check_body(p);
    v_conv := cd_j_id(p, 'conversation');
    v_agent := cd_j_id(p, 'agent', false);
    v_disp := cd_j_opt_text(p, 'disposition', 200);
    v_cmid := cd_j_client_msg_id(p);
    v_replay := cd_request_replay('agent', v_agent, v_cmid, 'resolve');
    IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
    IF v_agent IS NOT NULL THEN a := cd_agent_live(v_agent); END IF;
    c := cd_conversation_lock(v_conv);
    IF v_agent IS NOT NULL THEN PERFORM cd_check_agent_may(a.id, a.role, c.id, c.agent_id); END IF;
    IF c.status <> 'resolved' AND c.resolved_at IS NULL THEN
        IF c.status IN ('closed', 'abandoned') THEN
            UPDATE conversations SET resolved_at = now(), disposition = coalesce(v_disp, disposition)
             WHERE id = c.id RETURNING * INTO c;
        ELSE
            v_offer := cd_revoke_pending_offer(c.id, 'cancelled');
            UPDATE conversations
               SET status = 'resolved', resolved_at = now(), disposition = coalesce(v_disp, disposition)
             WHERE id = c.id RETURNING * INTO c;
        END IF;
        PERFORM cd_event(c.id, 'resolved', jsonb_build_object('by', v_agent, 'disposition', v_disp));
    END IF;
    RETURN cd_request_save('agent', v_agent, v_cmid, 'resolve', jsonb_build_object(
        'conversation', c.id, 'agent', c.agent_id, 'customer', c.customer_id, 'channel', c.channel,
        'status', c.status, 'resolved_at', cd_ts(c.resolved_at), 'offer', v_offer, 'duplicate', false));
END
$$;

-- cd_conversation_transfer(p) -> {conversation, queue, target_agent, from_agent,
--                                 customer, channel, status, offer, route, duplicate}
-- Input: conversation (id), by_agent (id; null = the HTTP API: no permission
--   check), exactly one of queue (name or id) / agent (login or id),
--   client_msg_id.
-- The conversation must be open (queued/offered/assigned/pending; else
-- 55000).  by_agent must be its agent or a supervisor / admin (42501).
-- Either way it goes back to waiting: status queued, agent_id null,
-- enqueued_at now, a pending offer revoked.
--   to a queue: queue_id changes; priority = the new queue's priority plus
--     any escalation the conversation had above its old queue's priority;
--     target_agent cleared.  Timeline `transferred` {by, from_agent, to_queue}.
--   to an agent: queue unchanged; target_agent_id = that agent: the router
--     must offer it to that agent (not enforced here; cleared at assignment).
--     Timeline `transferred` {by, from_agent, to_agent}.
-- Output from_agent = the agent it had (notify it: its capacity is free),
-- route = cd_route_info for the router to (re-)queue it.
-- Errors: 22023 (neither or both of queue/agent; unknown queue / agent
--   names the field); P0002 unknown conversation / by_agent; 42501; 55000.
CREATE FUNCTION cd_conversation_transfer(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_conv    bigint;
    v_by      bigint;
    v_queue   bigint;
    v_target  bigint;
    v_cmid    text;
    v_replay  jsonb;
    a         record;
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

    c := cd_conversation_lock(v_conv);
    IF v_by IS NOT NULL THEN PERFORM cd_check_agent_may(a.id, a.role, c.id, c.agent_id); END IF;
    IF c.status NOT IN ('queued', 'offered', 'assigned', 'pending') THEN
        PERFORM cd_wrong_state(format('conversation %s is %s', c.id, c.status));
    END IF;
    v_from := c.agent_id;
    v_offer := cd_revoke_pending_offer(c.id, 'cancelled');
    IF v_queue IS NOT NULL THEN
        SELECT priority INTO v_old_pri FROM queues WHERE id = c.queue_id;
        SELECT priority INTO v_new_pri FROM queues WHERE id = v_queue;
        UPDATE conversations
           SET status = 'queued', agent_id = NULL, queue_id = v_queue, enqueued_at = now(),
               target_agent_id = NULL,
               priority = v_new_pri + greatest(0, c.priority - coalesce(v_old_pri, c.priority))
         WHERE id = c.id RETURNING * INTO c;
        PERFORM cd_event(c.id, 'transferred', jsonb_build_object('by', v_by, 'from_agent', v_from,
                                                                'to_queue', v_queue));
    ELSE
        UPDATE conversations
           SET status = 'queued', agent_id = NULL, enqueued_at = now(), target_agent_id = v_target
         WHERE id = c.id RETURNING * INTO c;
        PERFORM cd_event(c.id, 'transferred', jsonb_build_object('by', v_by, 'from_agent', v_from,
                                                                'to_agent', v_target));
    END IF;
    RETURN cd_request_save('agent', v_by, v_cmid, 'transfer', jsonb_build_object(
        'conversation', c.id, 'queue', c.queue_id, 'target_agent', c.target_agent_id,
        'from_agent', v_from, 'customer', c.customer_id, 'channel', c.channel, 'status', c.status,
        'offer', v_offer, 'route', cd_route_info(c.id), 'duplicate', false));
END
$$;

-- cd_router_snapshot() -> {now, queues, agents, conversations}
-- Everything the router rebuilds from after a restart; numeric ids (skill ids,
-- not names) and epoch milliseconds:
--   now            the database's clock (ms), to relate the other times to
--   queues         [{id, name, skills:{"<skill id>":min_level}, priority, overflow,
--                    service_level_s, sla_policy}]                       by id
--   agents         [{id, login, role, tier, skills:{"<skill id>":level},
--                    capacity:{chat,email,voice}, status, status_at}]    live agents, by id
--   conversations  cd_route_info of every conversation that is queued, offered,
--                  assigned or pending (pending ones still hold their agent's
--                  capacity; they are not waiting to be routed), by id.  An
--                  `offered` one without a pending offer (offer null) should
--                  be treated as queued.
CREATE FUNCTION cd_router_snapshot() RETURNS jsonb
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
             WHERE c.status IN ('queued', 'offered', 'assigned', 'pending')), '[]'::jsonb))
$$;
