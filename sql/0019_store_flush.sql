-- 0019_store_flush.sql -- what the daemon's store_flush writes.
--
-- An offer commits without waiting for its WAL flush.  What must not leave the daemon before
-- it is durable (events read for GET /v1/stream and the webhooks) waits for store_flush: one
-- durable commit that starts after them -- its flush covers every commit before it.  PostgreSQL
-- flushes at commit only for a transaction that wrote WAL (an xid alone is not enough: its
-- commit is then written like an asynchronous one), so the flush updates this one row.

CREATE TABLE store_flushes (
    id    integer PRIMARY KEY CHECK (id = 1),
    n     bigint NOT NULL DEFAULT 0,
    at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO store_flushes (id) VALUES (1);

-- cd_store_flush() -> true: one row updated, so that the caller's transaction ends with a
-- durable commit of its own (it must not turn synchronous_commit off).  Readers that find
-- nothing new do not call it, so an idle daemon writes nothing.
CREATE FUNCTION cd_store_flush() RETURNS boolean
LANGUAGE sql AS $$
    UPDATE store_flushes SET n = n + 1, at = now() WHERE id = 1 RETURNING true
$$;
