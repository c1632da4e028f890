-- 0013_events_batch.sql -- POST /v1/events group commit without a subtransaction per item.
--
-- cd_api_events_batch (0011) ran every item in its own subtransaction (BEGIN ... EXCEPTION),
-- so that a bad item answered its own error without failing the others.  A subtransaction
-- that writes takes its own xid; at 100 items a call that was about half of the call's
-- cost, and past 64 subtransactions every snapshot in the database overflows its subxid
-- cache.  Now the whole batch is tried once inside ONE block; only when an item raises is
-- the batch redone (the first attempt rolled back) item by item, each in its own
-- subtransaction as before.  Same answers either way, in one call and one commit.

-- cd_api_events_batch(p) -> [{ok:true, result} | {ok:false, sqlstate, message, field}, ...]
-- Group commit of POST /v1/events without an Idempotency-Key: many requests'
-- bodies (each with default_queue) in one transaction, one answer per item in
-- order.  A bad item answers its error and never fails the others.
CREATE OR REPLACE FUNCTION cd_api_events_batch(p jsonb) RETURNS jsonb
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
            v_out := v_out || jsonb_build_object('ok', true, 'result', cd_api_event(e));
        END LOOP;
        RETURN to_jsonb(v_out);
    EXCEPTION WHEN OTHERS THEN
        v_out := '{}';   -- everything the first attempt wrote is rolled back
    END;
    FOR e IN SELECT value FROM jsonb_array_elements(p) LOOP
        BEGIN
            v_out := v_out || jsonb_build_object('ok', true, 'result', cd_api_event(e));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_col = COLUMN_NAME;
            v_out := v_out || jsonb_build_object('ok', false, 'sqlstate', SQLSTATE, 'message', SQLERRM,
                                                 'field', nullif(v_col, ''));
        END;
    END LOOP;
    RETURN to_jsonb(v_out);
END
$$;
