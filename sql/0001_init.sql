-- 0001_init.sql -- the omnichannel data model of contactd.
--
-- Applied by the daemon inside one transaction that it opens itself (so no
-- BEGIN/COMMIT here); the daemon also owns schema_migrations.
--
-- Conventions
--   * Every table has `id bigint GENERATED ALWAYS AS IDENTITY` as its key
--     (events_log too: an identity column is a bigserial with stricter rules).
--   * All times are timestamptz.  Nothing here depends on the session's
--     TimeZone or DateStyle.
--   * Enumerations are text + CHECK rather than CREATE TYPE ... AS ENUM:
--     adding a value later is a one-line constraint swap, not an
--     ALTER TYPE that cannot run inside a transaction block on old servers.
--   * Administrative names (skills, sla policies, queues, api tokens) and
--     agent logins follow one rule, checked here as a backstop and with
--     friendlier messages in 0002_admin.sql:
--         1..64 chars, ^[A-Za-z][A-Za-z0-9_.@-]*$
--     They start with a letter, so a name is never all digits and an id can
--     always be told apart from a name ("names may be used wherever an id is
--     expected").  Uniqueness is case-insensitive (unique index on
--     lower(name)): "Billing" and "billing" are the same queue, and lookups
--     by name compare lower() on both sides.  The stored spelling is kept.
--   * Tables with updated_at get it refreshed by the cd_touch() trigger, so
--     callers never have to remember it.
--   * Foreign keys default to RESTRICT (history must not vanish); rows that
--     only make sense inside their parent (messages of a conversation,
--     identities of a customer, ...) cascade, so erasing a customer (GDPR)
--     is "delete its conversations, then the customer".

CREATE FUNCTION cd_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------
-- Customers and their identities across channels
-- ---------------------------------------------------------------------------

CREATE TABLE customers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text,
    language    text CHECK (length(language) <= 35),     -- BCP 47 tag as given ("es", "pt-BR")
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- set when this customer was merged into another one (POST
    -- /v1/customers/{id}/merge): the row stays so that old ids still resolve;
    -- readers follow merged_into to the surviving customer.
    merged_into bigint REFERENCES customers (id),
    CONSTRAINT customers_not_merged_into_self CHECK (merged_into <> id)
);
CREATE INDEX customers_merged_into_idx ON customers (merged_into) WHERE merged_into IS NOT NULL;
CREATE TRIGGER customers_touch BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION cd_touch();

-- One row per way of reaching a customer.  value is normalised by ingest
-- before it gets here: e-mail lower-cased and trimmed, phone in E.164
-- ("+" and digits), chat/external ids as given.  A value belongs to at most
-- one customer (merging moves identities to the survivor).
CREATE TABLE customer_identities (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('email', 'phone', 'chat', 'external')),
    value       text NOT NULL CHECK (value <> '' AND length(value) <= 512),
    verified    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customer_identities_kind_value_uq UNIQUE (kind, value),
    CONSTRAINT customer_identities_email_normalised
        CHECK (kind <> 'email' OR value = lower(btrim(value)))
);
CREATE INDEX customer_identities_customer_idx ON customer_identities (customer_id);

-- Resume tokens given to unverified chat visitors (hello ... "resume").
-- Only a hash of the token is stored (hex SHA-256 by convention).
CREATE TABLE customer_resume_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash   text NOT NULL CHECK (token_hash <> ''),
    customer_id  bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    CONSTRAINT customer_resume_tokens_hash_uq UNIQUE (token_hash)
);
CREATE INDEX customer_resume_tokens_customer_idx ON customer_resume_tokens (customer_id);

-- ---------------------------------------------------------------------------
-- Skills, SLA policies, queues
-- ---------------------------------------------------------------------------

CREATE TABLE skills (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z][A-Za-z0-9_.@-]{0,63}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX skills_name_uq ON skills (lower(name));

CREATE TABLE sla_policies (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL CHECK (name ~ '^[A-Za-z][A-Za-z0-9_.@-]{0,63}$'),
    -- seconds of business time; NULL = that timer is not used
    first_response_s integer CHECK (first_response_s BETWEEN 1 AND 31536000),
    next_response_s  integer CHECK (next_response_s BETWEEN 1 AND 31536000),
    resolution_s     integer CHECK (resolution_s BETWEEN 1 AND 31536000),
    warn_pct         integer NOT NULL DEFAULT 80 CHECK (warn_pct BETWEEN 1 AND 99),
    -- IANA zone name, validated against pg_timezone_names by 0002_admin.sql
    timezone         text NOT NULL DEFAULT 'UTC',
    -- NULL = 24x7; else {"mon":["09:00-17:00", ...], ...}: keys mon..sun,
    -- intervals "HH:MM-HH:MM" (end may be 24:00), sorted, not overlapping.
    -- A day that is missing or [] is closed.
    hours            jsonb CHECK (hours IS NULL OR jsonb_typeof(hours) = 'object'),
    holidays         date[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sla_policies_name_uq ON sla_policies (lower(name));
CREATE TRIGGER sla_policies_touch BEFORE UPDATE ON sla_policies FOR EACH ROW EXECUTE FUNCTION cd_touch();

CREATE TABLE queues (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (name ~ '^[A-Za-z][A-Za-z0-9_.@-]{0,63}$'),
    priority        integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    sla_policy_id   bigint REFERENCES sla_policies (id),
    -- service level threshold: answered within this many seconds counts as "in SLA"
    service_level_s integer NOT NULL DEFAULT 20 CHECK (service_level_s BETWEEN 1 AND 86400),
    -- tier-overflow steps [{"after_s":60,"tier":2}, ...], sorted by after_s
    overflow        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(overflow) = 'array'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX queues_name_uq ON queues (lower(name));
CREATE INDEX queues_sla_policy_idx ON queues (sla_policy_id) WHERE sla_policy_id IS NOT NULL;
CREATE TRIGGER queues_touch BEFORE UPDATE ON queues FOR EACH ROW EXECUTE FUNCTION cd_touch();

CREATE TABLE queue_skills (
    queue_id  bigint NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    skill_id  bigint NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
    min_level smallint NOT NULL CHECK (min_level BETWEEN 1 AND 5),
    PRIMARY KEY (queue_id, skill_id)
);
CREATE INDEX queue_skills_skill_idx ON queue_skills (skill_id);

-- ---------------------------------------------------------------------------
-- Agents
-- ---------------------------------------------------------------------------

-- Deleting an agent is a soft delete (deleted_at): conversations, messages,
-- offers and logs keep pointing at the row.  Only live agents hold their
-- login, so a deleted agent's login can be given to someone new.
-- Readers that want live agents filter on deleted_at IS NULL.
CREATE TABLE agents (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login          text NOT NULL CHECK (login ~ '^[A-Za-z][A-Za-z0-9_.@-]{0,63}$'),
    name           text NOT NULL CHECK (name <> '' AND length(name) <= 200),
    password_hash  text NOT NULL,       -- Argon2id encoded string, made by the daemon
    role           text NOT NULL DEFAULT 'agent' CHECK (role IN ('agent', 'supervisor', 'admin')),
    tier           integer NOT NULL DEFAULT 1 CHECK (tier BETWEEN 1 AND 100),
    capacity_chat  integer NOT NULL DEFAULT 3 CHECK (capacity_chat BETWEEN 0 AND 1000),
    capacity_email integer NOT NULL DEFAULT 5 CHECK (capacity_email BETWEEN 0 AND 1000),
    capacity_voice integer NOT NULL DEFAULT 1 CHECK (capacity_voice BETWEEN 0 AND 1000),
    extension      text CHECK (extension IS NULL OR extension ~ '^[^[:space:][:cntrl:]]{1,64}$'),
    -- presence as last chosen by the agent; busy / wrap-up are derived in memory
    status         text NOT NULL DEFAULT 'offline' CHECK (status IN ('offline', 'available', 'away')),
    status_at      timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);
CREATE UNIQUE INDEX agents_login_uq ON agents (lower(login)) WHERE deleted_at IS NULL;
CREATE TRIGGER agents_touch BEFORE UPDATE ON agents FOR EACH ROW EXECUTE FUNCTION cd_touch();

CREATE TABLE agent_skills (
    agent_id bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    skill_id bigint NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
    level    smallint NOT NULL CHECK (level BETWEEN 1 AND 5),
    PRIMARY KEY (agent_id, skill_id)
);
CREATE INDEX agent_skills_skill_idx ON agent_skills (skill_id);

-- Presence history (occupancy and idle-time KPIs).  busy and wrap_up are
-- accepted so that derived states can be logged too.
CREATE TABLE agent_status_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    status   text NOT NULL CHECK (status IN ('offline', 'available', 'away', 'busy', 'wrap_up')),
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_status_log_agent_at_idx ON agent_status_log (agent_id, at);
CREATE INDEX agent_status_log_at_idx ON agent_status_log (at);

-- ---------------------------------------------------------------------------
-- Inboxes: addresses that feed a queue
-- ---------------------------------------------------------------------------

-- address is an e-mail address ("support@example.com") or a channel address
-- "channel:value" ("sms:+15550100", "whatsapp:+15550100", "voice:+15550199").
-- Always stored trimmed and lower-cased, so lookups are
--     WHERE address = lower(btrim($1)).
CREATE TABLE inboxes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address    text NOT NULL,
    -- the channel the address belongs to, derived from its form
    channel    text NOT NULL GENERATED ALWAYS AS (
                   CASE WHEN address ~ '^[a-z]+:' THEN split_part(address, ':', 1) ELSE 'email' END
               ) STORED,
    queue_id   bigint NOT NULL REFERENCES queues (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inboxes_address_uq UNIQUE (address),
    CONSTRAINT inboxes_address_normalised CHECK (address = lower(btrim(address))),
    CONSTRAINT inboxes_address_form CHECK (
        address ~ '^(chat|voice|sms|whatsapp|social|web|api):[^[:space:][:cntrl:]]+$'
        OR address ~ '^[^@:[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+$'),
    CONSTRAINT inboxes_address_length CHECK (length(address) <= 320)
);
CREATE INDEX inboxes_queue_idx ON inboxes (queue_id);
CREATE TRIGGER inboxes_touch BEFORE UPDATE ON inboxes FOR EACH ROW EXECUTE FUNCTION cd_touch();

-- ---------------------------------------------------------------------------
-- Conversations
-- ---------------------------------------------------------------------------

CREATE TABLE conversations (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id         bigint NOT NULL REFERENCES customers (id),
    -- channel of origin
    channel             text NOT NULL CHECK (channel IN
                            ('chat', 'email', 'voice', 'sms', 'whatsapp', 'social', 'web', 'api')),
    status              text NOT NULL DEFAULT 'queued' CHECK (status IN
                            ('queued', 'offered', 'assigned', 'pending', 'resolved', 'closed', 'abandoned')),
    -- nullable so that a contact is never refused (and lost) because no
    -- queue exists yet; the router only routes conversations with a queue.
    queue_id            bigint REFERENCES queues (id),
    -- required agent tier; escalation raises it (and priority)
    tier                integer NOT NULL DEFAULT 1 CHECK (tier >= 1),
    priority            integer NOT NULL DEFAULT 0,
    agent_id            bigint REFERENCES agents (id),
    subject             text,
    inbox_id            bigint REFERENCES inboxes (id),
    -- channel-specific reference of the whole conversation, e.g. a call_id
    external_ref        text,
    -- SLA: the policy in force and the current due times (NULL = no timer)
    sla_policy_id       bigint REFERENCES sla_policies (id),
    first_response_due  timestamptz,
    next_response_due   timestamptz,
    resolution_due      timestamptz,
    -- while waiting on the customer (status pending) the clocks stop:
    -- sla_paused_at is when, sla_paused_total_s the time stopped so far
    sla_paused_at       timestamptz,
    sla_paused_total_s  integer NOT NULL DEFAULT 0 CHECK (sla_paused_total_s >= 0),
    -- when it (re-)entered its queue: waiting time, tier overflow, ordering
    enqueued_at         timestamptz,
    -- first assignment to an agent (speed of answer)
    assigned_at         timestamptz,
    first_response_at   timestamptz,
    last_message_at     timestamptz,
    resolved_at         timestamptz,
    closed_at           timestamptz,
    disposition         text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversations_assigned_has_agent CHECK (status <> 'assigned' OR agent_id IS NOT NULL)
);
CREATE INDEX conversations_status_queue_idx ON conversations (status, queue_id);
-- (customer_id, id): "the customer's open / last conversation" reads newest first
CREATE INDEX conversations_customer_idx ON conversations (customer_id, id);
CREATE INDEX conversations_agent_idx ON conversations (agent_id, status) WHERE agent_id IS NOT NULL;
CREATE INDEX conversations_queue_idx ON conversations (queue_id);
CREATE INDEX conversations_inbox_idx ON conversations (inbox_id) WHERE inbox_id IS NOT NULL;
CREATE INDEX conversations_sla_policy_idx ON conversations (sla_policy_id) WHERE sla_policy_id IS NOT NULL;
CREATE INDEX conversations_external_ref_idx ON conversations (channel, external_ref) WHERE external_ref IS NOT NULL;
CREATE INDEX conversations_created_idx ON conversations (created_at);   -- reports by period
CREATE TRIGGER conversations_touch BEFORE UPDATE ON conversations FOR EACH ROW EXECUTE FUNCTION cd_touch();

-- ---------------------------------------------------------------------------
-- Messages
-- ---------------------------------------------------------------------------

CREATE TABLE messages (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id    bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- the channel this message travelled on (usually the conversation's)
    channel            text NOT NULL CHECK (channel IN
                           ('chat', 'email', 'voice', 'sms', 'whatsapp', 'social', 'web', 'api')),
    direction          text NOT NULL CHECK (direction IN ('in', 'out', 'internal')),
    author_kind        text NOT NULL CHECK (author_kind IN ('customer', 'agent', 'system')),
    author_agent_id    bigint REFERENCES agents (id),
    author_customer_id bigint REFERENCES customers (id),
    body               text NOT NULL DEFAULT '',
    -- the channel's own id of the message (POST /v1/events external_id, an
    -- SMS provider id, ...).  NOT the e-mail Message-ID: see email_message_ids.
    external_id        text,
    -- the sender's retry key from the client protocol
    client_msg_id      text CHECK (client_msg_id IS NULL OR length(client_msg_id) BETWEEN 1 AND 200),
    metadata           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_agent_author CHECK ((author_kind = 'agent') = (author_agent_id IS NOT NULL)),
    CONSTRAINT messages_customer_author CHECK ((author_kind = 'customer') = (author_customer_id IS NOT NULL)),
    -- customers only write inbound messages; inbound messages are the customer's
    CONSTRAINT messages_direction_author CHECK ((direction = 'in') = (author_kind = 'customer'))
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, id);
-- POST /v1/events: the same (channel, external_id) is stored once.
CREATE UNIQUE INDEX messages_external_uq ON messages (channel, external_id) WHERE external_id IS NOT NULL;
-- client_msg_id is unique per sender.  One partial index per author kind
-- (the author id column differs).  A retry is detected with
--   INSERT ... ON CONFLICT (author_customer_id, client_msg_id)
--       WHERE author_kind = 'customer' AND client_msg_id IS NOT NULL DO NOTHING RETURNING id
-- (no row back = a retry: SELECT the existing row with the same key and
-- answer with its ids), and likewise for agents with author_agent_id.
-- A plain "ON CONFLICT DO NOTHING" (no target) covers all three indexes.
CREATE UNIQUE INDEX messages_customer_client_msg_uq ON messages (author_customer_id, client_msg_id)
    WHERE author_kind = 'customer' AND client_msg_id IS NOT NULL;
CREATE UNIQUE INDEX messages_agent_client_msg_uq ON messages (author_agent_id, client_msg_id)
    WHERE author_kind = 'agent' AND client_msg_id IS NOT NULL;

-- Retry keys of client-protocol write frames that do not create a message
-- (close, resolve, transfer, survey, ...): the reply is kept so that a
-- repeated frame gets the same "ok".  Prune by created_at.
CREATE TABLE client_requests (
    sender_kind   text NOT NULL CHECK (sender_kind IN ('customer', 'agent')),
    sender_id     bigint NOT NULL,
    client_msg_id text NOT NULL CHECK (length(client_msg_id) BETWEEN 1 AND 200),
    frame_type    text NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender_kind, sender_id, client_msg_id)
);
CREATE INDEX client_requests_created_idx ON client_requests (created_at);

-- E-mail Message-IDs, kept apart from messages.external_id because their
-- uniqueness is per inbox ("the same Message-ID to the same inbox twice is
-- stored once"; the same mail sent to two inboxes is two conversations).
-- Both inbound Message-IDs and the ones the daemon generates for agent
-- replies are recorded, so that In-Reply-To / References of a customer's
-- answer find the conversation.  message_id is stored without the angle
-- brackets, otherwise as received (Message-IDs are case-sensitive).
CREATE TABLE email_message_ids (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inbox_id        bigint NOT NULL REFERENCES inboxes (id),
    message_id      text NOT NULL CHECK (message_id <> '' AND length(message_id) <= 998),
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_row_id  bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT email_message_ids_inbox_msgid_uq UNIQUE (inbox_id, message_id)
);
-- threading looks a Message-ID up across inboxes too (a reply may be sent to
-- another of the site's addresses)
CREATE INDEX email_message_ids_msgid_idx ON email_message_ids (message_id);
CREATE INDEX email_message_ids_conversation_idx ON email_message_ids (conversation_id);
CREATE INDEX email_message_ids_message_idx ON email_message_ids (message_row_id);

CREATE TABLE attachments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    name         text,
    content_type text NOT NULL DEFAULT 'application/octet-stream',
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    -- NULL leaves room for moving contents to external storage later
    bytes        bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attachments_size_matches CHECK (bytes IS NULL OR octet_length(bytes) = size)
);
CREATE INDEX attachments_message_idx ON attachments (message_id);

-- The timeline: enqueued, offered, accepted, rejected, offer_timeout,
-- assigned, transferred, escalated, sla_warning, sla_breach, resolved,
-- closed, survey, merged, email_sent, email_failed, ...  kind is free text
-- on purpose (new kinds need no migration).
CREATE TABLE conversation_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    at              timestamptz NOT NULL DEFAULT now(),
    data            jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX conversation_events_conversation_idx ON conversation_events (conversation_id, id);
CREATE INDEX conversation_events_kind_at_idx ON conversation_events (kind, at);   -- KPIs by period

-- ---------------------------------------------------------------------------
-- Routing: offers
-- ---------------------------------------------------------------------------

CREATE TABLE offers (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    agent_id        bigint NOT NULL REFERENCES agents (id),
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN
                        ('pending', 'accepted', 'rejected', 'expired', 'revoked')),
    reason          text,                 -- reject reason / revoke reason
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    decided_at      timestamptz,
    CONSTRAINT offers_decided CHECK ((state = 'pending') = (decided_at IS NULL)),
    CONSTRAINT offers_expiry CHECK (expires_at >= created_at)
);
-- at most one offer in flight per conversation
CREATE UNIQUE INDEX offers_one_pending_uq ON offers (conversation_id) WHERE state = 'pending';
-- reject cooldown: "was this agent offered / did it reject this conversation?"
CREATE INDEX offers_conversation_agent_idx ON offers (conversation_id, agent_id);
CREATE INDEX offers_agent_idx ON offers (agent_id, created_at);

-- ---------------------------------------------------------------------------
-- Surveys
-- ---------------------------------------------------------------------------

CREATE TABLE surveys (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    customer_id     bigint NOT NULL REFERENCES customers (id),
    csat            smallint CHECK (csat BETWEEN 1 AND 5),
    nps             smallint CHECK (nps BETWEEN 0 AND 10),
    ces             smallint CHECK (ces BETWEEN 1 AND 7),
    comment         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT surveys_some_score CHECK (csat IS NOT NULL OR nps IS NOT NULL OR ces IS NOT NULL),
    -- one survey per conversation, so KPIs count each contact once
    CONSTRAINT surveys_conversation_uq UNIQUE (conversation_id)
);
CREATE INDEX surveys_created_idx ON surveys (created_at);

-- ---------------------------------------------------------------------------
-- Voice
-- ---------------------------------------------------------------------------

CREATE TABLE calls (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id         text NOT NULL CHECK (call_id <> '' AND length(call_id) <= 200),
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- the call's current state; it never moves backwards (SPEC section 2)
    state           text NOT NULL CHECK (state IN
                        ('offered', 'queued', 'answered', 'held', 'transferred', 'ended', 'abandoned', 'voicemail')),
    from_number     text,
    to_number       text,
    agent_id        bigint REFERENCES agents (id),
    recording_url   text,
    last_event_at   timestamptz NOT NULL,
    answered_at     timestamptz,
    ended_at        timestamptz,
    talk_s          integer CHECK (talk_s >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT calls_call_id_uq UNIQUE (call_id)
);
CREATE INDEX calls_conversation_idx ON calls (conversation_id);
CREATE TRIGGER calls_touch BEFORE UPDATE ON calls FOR EACH ROW EXECUTE FUNCTION cd_touch();

-- Every CTI event as received.  The partial unique indexes below implement
-- the dedupe rules of SPEC section 2; insert with a plain
--     INSERT ... ON CONFLICT DO NOTHING RETURNING id
-- (no conflict target: any of the three matching means "seen before").
CREATE TABLE phone_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id     text NOT NULL CHECK (call_id <> '' AND length(call_id) <= 200),
    event       text NOT NULL CHECK (event IN ('offered', 'queued', 'answered', 'held', 'resumed',
                                               'transferred', 'ended', 'abandoned', 'voicemail')),
    event_id    text CHECK (event_id IS NULL OR length(event_id) BETWEEN 1 AND 200),
    at          timestamptz NOT NULL,             -- the event's own time (defaults to receipt)
    received_at timestamptz NOT NULL DEFAULT now(),
    data        jsonb NOT NULL DEFAULT '{}'
);
-- 1. the same event_id (per call: ids from different PBXs may collide)
CREATE UNIQUE INDEX phone_events_event_id_uq ON phone_events (call_id, event_id)
    WHERE event_id IS NOT NULL;
-- 2. without an event_id, once-per-call events are unique per (call, event)
CREATE UNIQUE INDEX phone_events_once_uq ON phone_events (call_id, event)
    WHERE event_id IS NULL
      AND event IN ('offered', 'queued', 'answered', 'ended', 'abandoned', 'voicemail');
-- 3. ... and the repeatable ones per (call, event, at)
CREATE UNIQUE INDEX phone_events_repeat_uq ON phone_events (call_id, event, at)
    WHERE event_id IS NULL
      AND event IN ('held', 'resumed', 'transferred');
-- replaying a call's events in `at` order
CREATE INDEX phone_events_call_at_idx ON phone_events (call_id, at, id);

-- ---------------------------------------------------------------------------
-- HTTP API: tokens and idempotency
-- ---------------------------------------------------------------------------

-- Only the lower-case hex SHA-256 of a token is stored.  Deleting a token
-- revokes it (revoked_at); a revoked token's name can be reused.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (name ~ '^[A-Za-z][A-Za-z0-9_.@-]{0,63}$'),
    token_hash   text NOT NULL CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    scopes       text[] NOT NULL CHECK (
                     cardinality(scopes) >= 1
                     AND scopes <@ ARRAY['events:write', 'conversations:read', 'conversations:write',
                                         'reports:read', 'admin']::text[]),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_tokens_token_hash_uq UNIQUE (token_hash)
);
CREATE UNIQUE INDEX api_tokens_name_uq ON api_tokens (lower(name)) WHERE revoked_at IS NULL;

-- Idempotency-Key of POSTs, per token.  response_status NULL = the first
-- request is still being processed (a concurrent repeat gets 409).
-- request_hash lets the daemon refuse the same key with a different body.
-- Prune by created_at (e.g. after 24 h).
CREATE TABLE idempotency_keys (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_id        bigint NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    method          text NOT NULL,
    path            text NOT NULL,
    request_hash    text,
    response_status integer CHECK (response_status BETWEEN 100 AND 599),
    response_body   text,              -- kept verbatim so the repeat is byte-identical
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_token_key_uq UNIQUE (token_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- ---------------------------------------------------------------------------
-- Outbound work and the event stream
-- ---------------------------------------------------------------------------

-- Durable queue of outbound e-mails (SMTP relay) and webhook POSTs,
-- written in the same transaction as the change that caused them.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('email', 'webhook')),
    conversation_id bigint REFERENCES conversations (id) ON DELETE CASCADE,
    message_id      bigint REFERENCES messages (id) ON DELETE CASCADE,
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_conversation_idx ON outbox (conversation_id) WHERE conversation_id IS NOT NULL;
CREATE TRIGGER outbox_touch BEFORE UPDATE ON outbox FOR EACH ROW EXECUTE FUNCTION cd_touch();

-- Sequence of events for GET /v1/stream (SSE): id is the SSE event id, so a
-- client reconnecting with Last-Event-ID resumes with id > that.  Ids are
-- ordered by allocation, not by commit: readers should not hand out an id
-- until older in-flight transactions are done (e.g. read up to the id seen
-- in a NOTIFY, or lag a little behind now()).  Prune by `at`.
CREATE TABLE events_log (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    data jsonb NOT NULL DEFAULT '{}',
    at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_log_at_idx ON events_log (at);
