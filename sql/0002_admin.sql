-- 0002_admin.sql -- the administration API (GET/POST/PUT/DELETE /v1/<kind>)
-- and API-token lookup, as plpgsql functions.
--
-- The daemon only checks that a body is a JSON object and calls:
--   cd_admin_list(kind, after, lim)     -> {"items":[...], "next":"<id>"|null}
--   cd_admin_get(kind, key)             -> object
--   cd_admin_create(kind, body)         -> object (with its id)
--   cd_admin_update(kind, key, body)    -> object
--   cd_admin_delete(kind, key)          -> {"deleted":true, "id":N}
--   cd_token_lookup(token_hash)         -> {"id","name","scopes"} | NULL
--   cd_admin_resolve(kind, key)         -> id | NULL   (helper: "name or id" anywhere)
-- kind is the URL segment: skills, sla-policies, queues, agents, inboxes, api-tokens.
-- key is a numeric id, or the name (login for agents, address for inboxes).
--
-- Every field is validated here.  Errors (mapped to HTTP by the daemon):
--   22023 invalid_parameter_value  MESSAGE '<field>: <what is wrong>', COLUMN '<field>'
--   P0002 no_data_found            '<kind> "<key>" not found', or an unknown kind
--   23505 unique_violation         '<kind> "<name>" already exists', COLUMN name|login|address
--   23503 foreign_key_violation    '<kind> "<name>" is used by ...'   (delete of something in use)
--
-- Semantics
--   * PUT is a partial replace: every field present in the body replaces the
--     stored value; fields absent from the body keep their current values.
--     Fields that are maps or lists (queue/agent "skills", "overflow",
--     "scopes", "hours", "holidays") are replaced as a whole, never merged;
--     agent "capacity" is the exception: it is a record of three numbers, so
--     the channels it names change and the others keep their values.
--   * Read-only fields that GET shows (id; agents' status; api-tokens'
--     created_at and last_used_at) are ignored when present in a body, so a
--     GET response can be PUT back as it is.  Any other unknown field is
--     invalid.  A JSON null is accepted only where null is a meaningful
--     value (sla timers, hours, a queue's sla_policy, an agent's extension).
--   * Names and logins: 1..64 chars, ^[A-Za-z][A-Za-z0-9_.@-]*$, unique
--     case-insensitively (see 0001); lookups by name ignore case.
--   * Deletes: skills, sla-policies, queues, inboxes are deleted (refused
--     with 23503 while something points at them; a skill is simply removed
--     from the queues and agents that had it).  Agents are soft-deleted
--     (their login becomes free; pending offers to them are revoked; conversations
--     they held go back to their queue).
--     API tokens are revoked (revoked_at), which frees their name.  Deleted
--     agents and revoked tokens are invisible to the whole API.
--   * Every successful create/update/delete sends
--         NOTIFY contactd_admin, '{"kind":"queues","id":5,"op":"update"}'
--     (delivered at commit), so every node can reload what changed.

-- ---------------------------------------------------------------------------
-- Error helpers
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_invalid(p_field text, p_msg text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = p_field || ': ' || p_msg, COLUMN = p_field;
END
$$;

-- ---------------------------------------------------------------------------
-- Kinds
-- ---------------------------------------------------------------------------

-- What the functions need to know about a kind: the singular label used in
-- messages, the table, the name column and the condition that makes a row
-- visible to the API (deleted agents and revoked tokens are not).
CREATE FUNCTION cd_admin_meta(p_kind text,
                              OUT label text, OUT tbl text, OUT key_col text, OUT live text)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    CASE p_kind
    WHEN 'skills'       THEN label := 'skill';      tbl := 'skills';       key_col := 'name';    live := 'true';
    WHEN 'sla-policies' THEN label := 'sla-policy'; tbl := 'sla_policies'; key_col := 'name';    live := 'true';
    WHEN 'queues'       THEN label := 'queue';      tbl := 'queues';       key_col := 'name';    live := 'true';
    WHEN 'agents'       THEN label := 'agent';      tbl := 'agents';       key_col := 'login';   live := 'deleted_at IS NULL';
    WHEN 'inboxes'      THEN label := 'inbox';      tbl := 'inboxes';      key_col := 'address'; live := 'true';
    WHEN 'api-tokens'   THEN label := 'api-token';  tbl := 'api_tokens';   key_col := 'name';    live := 'revoked_at IS NULL';
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = format('unknown kind "%s"', coalesce(p_kind, ''));
    END CASE;
END
$$;

CREATE FUNCTION cd_admin_not_found(p_kind text, p_key text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'P0002',
        MESSAGE = format('%s "%s" not found', (cd_admin_meta(p_kind)).label, coalesce(p_key, ''));
END
$$;

-- id of the live object named by KEY (a numeric id, or its name / login /
-- address, case-insensitive), or NULL.  Usable by the daemon wherever the
-- API accepts "a name or an id" (e.g. transfer to a queue or an agent).
CREATE FUNCTION cd_admin_resolve(p_kind text, p_key text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m    record := cd_admin_meta(p_kind);
    v_id bigint;
BEGIN
    IF p_key IS NULL OR p_key = '' THEN
        RETURN NULL;
    END IF;
    IF p_key ~ '^[0-9]+$' THEN
        -- names never are all digits, so this is an id
        IF length(ltrim(p_key, '0')) > 18 THEN
            RETURN NULL;                       -- beyond bigint: cannot exist
        END IF;
        EXECUTE format('SELECT id FROM %I WHERE id = $1 AND %s', m.tbl, m.live)
            INTO v_id USING p_key::bigint;
    ELSIF p_kind = 'inboxes' THEN
        -- addresses are stored trimmed and lower-cased (plain unique index)
        SELECT id INTO v_id FROM inboxes WHERE address = lower(btrim(p_key));
    ELSE
        -- matches the unique indexes on lower(name) / lower(login)
        EXECUTE format('SELECT id FROM %I WHERE lower(%I) = lower($1) AND %s', m.tbl, m.key_col, m.live)
            INTO v_id USING p_key;
    END IF;
    RETURN v_id;
END
$$;

-- ---------------------------------------------------------------------------
-- JSON value checks.  Each takes the JSON value of one field (never SQL
-- NULL: callers test `body ? 'field'` first) and the field name for errors.
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_check_body(p_body jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_body IS NULL OR jsonb_typeof(p_body) <> 'object' THEN
        PERFORM cd_invalid('body', 'must be a JSON object');
    END IF;
END
$$;

-- Refuses the first (alphabetically) field that is neither ALLOWED nor IGNORED.
CREATE FUNCTION cd_check_fields(p_body jsonb, p_allowed text[], p_ignored text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_bad text;
BEGIN
    SELECT k INTO v_bad
      FROM jsonb_object_keys(p_body) AS k
     WHERE NOT (k = ANY (p_allowed) OR k = ANY (p_ignored))
     ORDER BY k
     LIMIT 1;
    IF FOUND THEN
        PERFORM cd_invalid(left(v_bad, 64), 'unknown field');
    END IF;
END
$$;

CREATE FUNCTION cd_require(p_body jsonb, p_fields text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY p_fields LOOP
        IF NOT p_body ? f THEN
            PERFORM cd_invalid(f, 'is required');
        END IF;
    END LOOP;
END
$$;

-- A JSON integer (a number with no fractional part; "2" the string is not)
-- within LO..HI.  A JSON null gives NULL when P_NULLABLE, else is invalid.
-- P_WHAT names a sub-field in the message ("overflow: tier must be ...").
CREATE FUNCTION cd_j_int(p_v jsonb, p_field text, p_lo bigint, p_hi bigint,
                         p_nullable boolean DEFAULT false, p_what text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_pre text := coalesce(p_what || ' ', '');
    n     numeric;
BEGIN
    IF p_nullable AND jsonb_typeof(p_v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_v) = 'number' THEN
        n := p_v::numeric;
    END IF;
    IF n IS NULL OR n <> trunc(n) THEN
        PERFORM cd_invalid(p_field, v_pre || 'must be an integer' || CASE WHEN p_nullable THEN ' or null' ELSE '' END);
    END IF;
    IF n < p_lo OR n > p_hi THEN
        PERFORM cd_invalid(p_field, format('%smust be between %s and %s', v_pre, p_lo, p_hi));
    END IF;
    RETURN n::bigint;
END
$$;

-- A JSON string (or NULL for a JSON null when P_NULLABLE).
CREATE FUNCTION cd_j_text(p_v jsonb, p_field text, p_nullable boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_nullable AND jsonb_typeof(p_v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_v) IS DISTINCT FROM 'string' THEN
        PERFORM cd_invalid(p_field, 'must be a string' || CASE WHEN p_nullable THEN ' or null' ELSE '' END);
    END IF;
    RETURN p_v #>> '{}';
END
$$;

-- A name or login (see the rule at the top).
CREATE FUNCTION cd_j_name(p_v jsonb, p_field text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s text := cd_j_text(p_v, p_field);
BEGIN
    IF s !~ '^[A-Za-z][A-Za-z0-9_.@-]{0,63}$' THEN
        PERFORM cd_invalid(p_field,
            'must be 1 to 64 characters: a letter, then letters, digits, "_", ".", "@" or "-"');
    END IF;
    RETURN s;
END
$$;

-- A reference to another object: its name (string) or id (integer, or a
-- string of digits).  JSON null gives NULL when P_NULLABLE.
CREATE FUNCTION cd_j_ref(p_kind text, p_v jsonb, p_field text, p_nullable boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_key text;
    v_id  bigint;
BEGIN
    IF p_nullable AND jsonb_typeof(p_v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_v) = 'string' THEN
        v_key := p_v #>> '{}';
    ELSIF jsonb_typeof(p_v) = 'number' AND p_v::numeric = trunc(p_v::numeric) THEN
        v_key := trunc(p_v::numeric)::text;
    ELSE
        PERFORM cd_invalid(p_field, 'must be a name or an id' || CASE WHEN p_nullable THEN ' or null' ELSE '' END);
    END IF;
    v_id := cd_admin_resolve(p_kind, v_key);
    IF v_id IS NULL THEN
        PERFORM cd_invalid(p_field, format('unknown %s "%s"', (cd_admin_meta(p_kind)).label, v_key));
    END IF;
    RETURN v_id;
END
$$;

-- {"<skill name or id>": level 1..5, ...} -> {"<skill id>": level, ...}
CREATE FUNCTION cd_j_skill_levels(p_v jsonb, p_field text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    k     text;
    v     jsonb;
    v_id  bigint;
    v_res jsonb := '{}';
BEGIN
    IF jsonb_typeof(p_v) IS DISTINCT FROM 'object' THEN
        PERFORM cd_invalid(p_field, 'must be an object of skill names to levels, e.g. {"billing":2}');
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(p_v) LOOP
        v_id := cd_admin_resolve('skills', k);
        IF v_id IS NULL THEN
            PERFORM cd_invalid(p_field, format('unknown skill "%s"', k));
        END IF;
        IF v_res ? v_id::text THEN
            PERFORM cd_invalid(p_field, format('skill "%s" is given twice', k));
        END IF;
        v_res := v_res || jsonb_build_object(v_id::text,
                     cd_j_int(v, p_field, 1, 5, false, format('level of "%s"', k)));
    END LOOP;
    RETURN v_res;
END
$$;

CREATE FUNCTION cd_store_skill_levels(p_table text, p_owner_col text, p_level_col text,
                                      p_owner bigint, p_levels jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM %I WHERE %I = $1', p_table, p_owner_col) USING p_owner;
    EXECUTE format('INSERT INTO %I (%I, skill_id, %I)
                    SELECT $1, key::bigint, value::smallint FROM jsonb_each_text($2)',
                   p_table, p_owner_col, p_level_col)
        USING p_owner, p_levels;
END
$$;

-- Timestamps are shown as UTC ISO 8601 with milliseconds, like SPEC's "at".
CREATE FUNCTION cd_ts(p_t timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(p_t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- Builds a 23505 with the API's wording when the violated constraint is the
-- object's name index; anything else is re-raised by the caller.
CREATE FUNCTION cd_raise_duplicate(p_kind text, p_field text, p_value text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '23505', COLUMN = p_field,
        MESSAGE = format('%s "%s" already exists', (cd_admin_meta(p_kind)).label, p_value);
END
$$;

-- "<label> "<name>" is used by <what>" as a 23503.
CREATE FUNCTION cd_raise_in_use(p_kind text, p_name text, p_what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '23503',
        MESSAGE = format('%s "%s" is used by %s', (cd_admin_meta(p_kind)).label, p_name, p_what);
END
$$;

-- '"a", "b", "c" and 4 more' from a list of names (first five shown)
CREATE FUNCTION cd_name_list(p_names text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(format('"%s"', n), ', ' ORDER BY o)
           || CASE WHEN cardinality(p_names) > 5
                   THEN format(' and %s more', cardinality(p_names) - 5) ELSE '' END
      FROM unnest(p_names[1:5]) WITH ORDINALITY AS u(n, o)
$$;

CREATE FUNCTION cd_plural(p_n bigint, p_word text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_n || ' ' || p_word || CASE WHEN p_n = 1 THEN '' ELSE 's' END
$$;

-- ---------------------------------------------------------------------------
-- skills: {id, name}
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_skill_obj(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', s.id, 'name', s.name) FROM skills s WHERE s.id = p_id
$$;

CREATE FUNCTION cd_skill_write(p_id bigint, p_body jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    r     skills%ROWTYPE;
    v_con text;
BEGIN
    PERFORM cd_check_fields(p_body, ARRAY['name'], ARRAY['id']);
    IF p_id IS NULL THEN
        PERFORM cd_require(p_body, ARRAY['name']);
    ELSE
        SELECT * INTO r FROM skills WHERE id = p_id FOR UPDATE;
        IF NOT FOUND THEN PERFORM cd_admin_not_found('skills', p_id::text); END IF;
    END IF;
    IF p_body ? 'name' THEN r.name := cd_j_name(p_body -> 'name', 'name'); END IF;
    BEGIN
        IF p_id IS NULL THEN
            INSERT INTO skills (name) VALUES (r.name) RETURNING id INTO r.id;
        ELSE
            UPDATE skills SET name = r.name WHERE id = p_id;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_con = CONSTRAINT_NAME;
        IF v_con = 'skills_name_uq' THEN PERFORM cd_raise_duplicate('skills', 'name', r.name); END IF;
        RAISE;
    END;
    RETURN r.id;
END
$$;

-- ---------------------------------------------------------------------------
-- sla-policies: {id, name, first_response_s, next_response_s, resolution_s,
--                warn_pct, timezone, hours, holidays}
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_sla_policy_obj(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', p.id, 'name', p.name,
               'first_response_s', p.first_response_s,
               'next_response_s', p.next_response_s,
               'resolution_s', p.resolution_s,
               'warn_pct', p.warn_pct,
               'timezone', p.timezone,
               'hours', p.hours,
               -- to_jsonb(date) is ISO "YYYY-MM-DD" whatever DateStyle says
               'holidays', coalesce((SELECT jsonb_agg(to_jsonb(d) ORDER BY d) FROM unnest(p.holidays) AS d),
                                    '[]'::jsonb))
      FROM sla_policies p WHERE p.id = p_id
$$;

-- The canonical spelling of an IANA zone name (matched case-insensitively).
CREATE FUNCTION cd_j_timezone(p_v jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s    text := cd_j_text(p_v, 'timezone');
    v_tz text;
BEGIN
    SELECT name INTO v_tz FROM pg_timezone_names
     WHERE lower(name) = lower(s)
     ORDER BY name = s DESC, name
     LIMIT 1;
    IF v_tz IS NULL THEN
        PERFORM cd_invalid('timezone', format('unknown time zone "%s" (use an IANA name such as "Europe/Madrid")', s));
    END IF;
    RETURN v_tz;
END
$$;

-- null (24x7) or {"mon":["09:00-12:00","13:00-17:00"], ...}.  Intervals are
-- "HH:MM-HH:MM" with start < end (end may be "24:00"); each day's list is
-- stored sorted and must not overlap; at least one interval overall (an
-- always-closed calendar would stop every SLA clock forever).
CREATE FUNCTION cd_j_hours(p_v jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_day   text;
    v_list  jsonb;
    v_iv    jsonb;
    s       text;
    v_ivs   text[];
    v_prev  text;
    v_total int := 0;
    v_res   jsonb := '{}';
BEGIN
    IF jsonb_typeof(p_v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_v) <> 'object' THEN
        PERFORM cd_invalid('hours', 'must be null (24x7) or an object such as {"mon":["09:00-17:00"]}');
    END IF;
    FOR v_day, v_list IN SELECT * FROM jsonb_each(p_v) LOOP
        IF v_day NOT IN ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun') THEN
            PERFORM cd_invalid('hours', format('unknown day "%s" (use mon, tue, wed, thu, fri, sat, sun)', v_day));
        END IF;
        IF jsonb_typeof(v_list) <> 'array' THEN
            PERFORM cd_invalid('hours', format('%s must be an array of "HH:MM-HH:MM" intervals', v_day));
        END IF;
        v_ivs := '{}';
        FOR v_iv IN SELECT value FROM jsonb_array_elements(v_list) LOOP
            s := CASE WHEN jsonb_typeof(v_iv) = 'string' THEN v_iv #>> '{}' END;
            IF s IS NULL OR s !~ '^([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$' THEN
                PERFORM cd_invalid('hours', format('%s: %s is not an interval "HH:MM-HH:MM"', v_day, v_iv::text));
            END IF;
            -- fixed-width "HH:MM", so text comparison is time comparison
            IF substr(s, 1, 5) >= substr(s, 7, 5) THEN
                PERFORM cd_invalid('hours', format('%s: interval "%s" must end after it starts', v_day, s));
            END IF;
            v_ivs := v_ivs || s;
        END LOOP;
        v_ivs := ARRAY(SELECT x FROM unnest(v_ivs) AS x ORDER BY x);
        v_prev := NULL;
        FOREACH s IN ARRAY v_ivs LOOP
            IF v_prev IS NOT NULL AND substr(s, 1, 5) < substr(v_prev, 7, 5) THEN
                PERFORM cd_invalid('hours', format('%s: intervals "%s" and "%s" overlap', v_day, v_prev, s));
            END IF;
            v_prev := s;
        END LOOP;
        v_total := v_total + cardinality(v_ivs);
        v_res := v_res || jsonb_build_object(v_day, to_jsonb(v_ivs));
    END LOOP;
    IF v_total = 0 THEN
        PERFORM cd_invalid('hours', 'must contain at least one interval (use null for 24x7)');
    END IF;
    RETURN v_res;
END
$$;

-- ["2026-12-25", ...] -> date[] (sorted, duplicates dropped)
CREATE FUNCTION cd_j_holidays(p_v jsonb) RETURNS date[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_e   jsonb;
    s     text;
    v_d   date;
    v_res date[] := '{}';
BEGIN
    IF jsonb_typeof(p_v) <> 'array' THEN
        PERFORM cd_invalid('holidays', 'must be an array of "YYYY-MM-DD" dates');
    END IF;
    FOR v_e IN SELECT value FROM jsonb_array_elements(p_v) LOOP
        s := CASE WHEN jsonb_typeof(v_e) = 'string' THEN v_e #>> '{}' END;
        v_d := NULL;
        IF s ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
            BEGIN
                v_d := s::date;                  -- ISO input is read the same under any DateStyle
            EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
                v_d := NULL;                     -- e.g. 2026-02-30
            END;
        END IF;
        IF v_d IS NULL THEN
            PERFORM cd_invalid('holidays', format('%s is not a date "YYYY-MM-DD"', v_e::text));
        END IF;
        v_res := v_res || v_d;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT d FROM unnest(v_res) AS d ORDER BY d);
END
$$;

CREATE FUNCTION cd_sla_policy_write(p_id bigint, p_body jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    r     sla_policies%ROWTYPE;
    v_con text;
BEGIN
    PERFORM cd_check_fields(p_body,
        ARRAY['name', 'first_response_s', 'next_response_s', 'resolution_s',
              'warn_pct', 'timezone', 'hours', 'holidays'],
        ARRAY['id']);
    IF p_id IS NULL THEN
        PERFORM cd_require(p_body, ARRAY['name']);
        r.warn_pct := 80;
        r.timezone := 'UTC';
        r.holidays := '{}';
    ELSE
        SELECT * INTO r FROM sla_policies WHERE id = p_id FOR UPDATE;
        IF NOT FOUND THEN PERFORM cd_admin_not_found('sla-policies', p_id::text); END IF;
    END IF;
    IF p_body ? 'name' THEN r.name := cd_j_name(p_body -> 'name', 'name'); END IF;
    IF p_body ? 'first_response_s' THEN
        r.first_response_s := cd_j_int(p_body -> 'first_response_s', 'first_response_s', 1, 31536000, true);
    END IF;
    IF p_body ? 'next_response_s' THEN
        r.next_response_s := cd_j_int(p_body -> 'next_response_s', 'next_response_s', 1, 31536000, true);
    END IF;
    IF p_body ? 'resolution_s' THEN
        r.resolution_s := cd_j_int(p_body -> 'resolution_s', 'resolution_s', 1, 31536000, true);
    END IF;
    IF p_body ? 'warn_pct' THEN r.warn_pct := cd_j_int(p_body -> 'warn_pct', 'warn_pct', 1, 99); END IF;
    IF p_body ? 'timezone' THEN r.timezone := cd_j_timezone(p_body -> 'timezone'); END IF;
    IF p_body ? 'hours' THEN r.hours := cd_j_hours(p_body -> 'hours'); END IF;
    IF p_body ? 'holidays' THEN r.holidays := cd_j_holidays(p_body -> 'holidays'); END IF;
    BEGIN
        IF p_id IS NULL THEN
            INSERT INTO sla_policies (name, first_response_s, next_response_s, resolution_s,
                                      warn_pct, timezone, hours, holidays)
            VALUES (r.name, r.first_response_s, r.next_response_s, r.resolution_s,
                    r.warn_pct, r.timezone, r.hours, r.holidays)
            RETURNING id INTO r.id;
        ELSE
            UPDATE sla_policies
               SET name = r.name, first_response_s = r.first_response_s,
                   next_response_s = r.next_response_s, resolution_s = r.resolution_s,
                   warn_pct = r.warn_pct, timezone = r.timezone, hours = r.hours, holidays = r.holidays
             WHERE id = p_id;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_con = CONSTRAINT_NAME;
        IF v_con = 'sla_policies_name_uq' THEN PERFORM cd_raise_duplicate('sla-policies', 'name', r.name); END IF;
        RAISE;
    END;
    RETURN r.id;
END
$$;

-- ---------------------------------------------------------------------------
-- queues: {id, name, skills:{"billing":2}, priority, sla_policy (name|null),
--          service_level_s, overflow:[{"after_s":60,"tier":2}]}
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_queue_obj(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', q.id, 'name', q.name,
               'skills', coalesce((SELECT jsonb_object_agg(s.name, qs.min_level)
                                     FROM queue_skills qs JOIN skills s ON s.id = qs.skill_id
                                    WHERE qs.queue_id = q.id), '{}'::jsonb),
               'priority', q.priority,
               'sla_policy', (SELECT p.name FROM sla_policies p WHERE p.id = q.sla_policy_id),
               'service_level_s', q.service_level_s,
               'overflow', q.overflow)
      FROM queues q WHERE q.id = p_id
$$;

-- [{"after_s": 0.., "tier": 1..100}, ...] -> the same, sorted by after_s.
-- Two steps may not share an after_s, and the tier may not drop as the
-- waiting time grows (the reachable tier only widens, SPEC section 5).
CREATE FUNCTION cd_j_overflow(p_v jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_step  jsonb;
    v_after bigint[] := '{}';
    v_tier  bigint[] := '{}';
    v_res   jsonb;
    r       record;
    v_pa    bigint;
    v_pt    bigint;
BEGIN
    IF jsonb_typeof(p_v) IS DISTINCT FROM 'array' THEN
        PERFORM cd_invalid('overflow', 'must be an array of steps such as [{"after_s":60,"tier":2}]');
    END IF;
    IF jsonb_array_length(p_v) > 100 THEN
        PERFORM cd_invalid('overflow', 'must have at most 100 steps');
    END IF;
    FOR v_step IN SELECT value FROM jsonb_array_elements(p_v) LOOP
        IF jsonb_typeof(v_step) <> 'object' OR NOT (v_step ? 'after_s' AND v_step ? 'tier')
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(v_step) k WHERE k NOT IN ('after_s', 'tier')) THEN
            PERFORM cd_invalid('overflow', 'each step must be an object {"after_s":…,"tier":…}');
        END IF;
        v_after := v_after || cd_j_int(v_step -> 'after_s', 'overflow', 0, 31536000, false, 'after_s');
        v_tier := v_tier || cd_j_int(v_step -> 'tier', 'overflow', 1, 100, false, 'tier');
    END LOOP;
    FOR r IN SELECT a, t FROM unnest(v_after, v_tier) AS u(a, t) ORDER BY a, t LOOP
        IF r.a = v_pa THEN
            PERFORM cd_invalid('overflow', format('two steps have after_s %s', r.a));
        END IF;
        IF r.t < v_pt THEN
            PERFORM cd_invalid('overflow', format('tier %s after %s s is lower than tier %s after %s s',
                                                   r.t, r.a, v_pt, v_pa));
        END IF;
        v_pa := r.a;
        v_pt := r.t;
    END LOOP;
    SELECT coalesce(jsonb_agg(jsonb_build_object('after_s', a, 'tier', t) ORDER BY a), '[]'::jsonb)
      INTO v_res FROM unnest(v_after, v_tier) AS u(a, t);
    RETURN v_res;
END
$$;

CREATE FUNCTION cd_queue_write(p_id bigint, p_body jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    r        queues%ROWTYPE;
    v_skills jsonb;                         -- NULL = keep the current skills
    v_con    text;
BEGIN
    PERFORM cd_check_fields(p_body,
        ARRAY['name', 'skills', 'priority', 'sla_policy', 'service_level_s', 'overflow'],
        ARRAY['id']);
    IF p_id IS NULL THEN
        PERFORM cd_require(p_body, ARRAY['name']);
        r.priority := 0;
        r.service_level_s := 20;
        r.overflow := '[]';
        v_skills := '{}';
    ELSE
        SELECT * INTO r FROM queues WHERE id = p_id FOR UPDATE;
        IF NOT FOUND THEN PERFORM cd_admin_not_found('queues', p_id::text); END IF;
    END IF;
    IF p_body ? 'name' THEN r.name := cd_j_name(p_body -> 'name', 'name'); END IF;
    IF p_body ? 'skills' THEN v_skills := cd_j_skill_levels(p_body -> 'skills', 'skills'); END IF;
    IF p_body ? 'priority' THEN r.priority := cd_j_int(p_body -> 'priority', 'priority', -1000, 1000); END IF;
    IF p_body ? 'sla_policy' THEN
        r.sla_policy_id := cd_j_ref('sla-policies', p_body -> 'sla_policy', 'sla_policy', true);
    END IF;
    IF p_body ? 'service_level_s' THEN
        r.service_level_s := cd_j_int(p_body -> 'service_level_s', 'service_level_s', 1, 86400);
    END IF;
    IF p_body ? 'overflow' THEN r.overflow := cd_j_overflow(p_body -> 'overflow'); END IF;
    BEGIN
        IF p_id IS NULL THEN
            INSERT INTO queues (name, priority, sla_policy_id, service_level_s, overflow)
            VALUES (r.name, r.priority, r.sla_policy_id, r.service_level_s, r.overflow)
            RETURNING id INTO r.id;
        ELSE
            UPDATE queues
               SET name = r.name, priority = r.priority, sla_policy_id = r.sla_policy_id,
                   service_level_s = r.service_level_s, overflow = r.overflow
             WHERE id = p_id;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_con = CONSTRAINT_NAME;
        IF v_con = 'queues_name_uq' THEN PERFORM cd_raise_duplicate('queues', 'name', r.name); END IF;
        RAISE;
    END;
    IF v_skills IS NOT NULL THEN
        PERFORM cd_store_skill_levels('queue_skills', 'queue_id', 'min_level', r.id, v_skills);
    END IF;
    RETURN r.id;
END
$$;

-- ---------------------------------------------------------------------------
-- agents: {id, login, name, role, tier, skills:{"billing":3},
--          capacity:{"chat":3,"email":5,"voice":1}, extension, status}
-- The password hash is never shown.  Bodies carry password_hash (Argon2id,
-- made by the daemon from "password"); status is presence, set by the agent.
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_agent_obj(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', a.id, 'login', a.login, 'name', a.name, 'role', a.role, 'tier', a.tier,
               'skills', coalesce((SELECT jsonb_object_agg(s.name, ak.level)
                                     FROM agent_skills ak JOIN skills s ON s.id = ak.skill_id
                                    WHERE ak.agent_id = a.id), '{}'::jsonb),
               'capacity', jsonb_build_object('chat', a.capacity_chat, 'email', a.capacity_email,
                                              'voice', a.capacity_voice),
               'extension', a.extension,
               'status', a.status)
      FROM agents a WHERE a.id = p_id AND a.deleted_at IS NULL
$$;

CREATE FUNCTION cd_agent_write(p_id bigint, p_body jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    r        agents%ROWTYPE;
    v_skills jsonb;                         -- NULL = keep the current skills
    v_con    text;
    k        text;
    v        jsonb;
BEGIN
    PERFORM cd_check_fields(p_body,
        ARRAY['login', 'name', 'password_hash', 'role', 'tier', 'skills', 'capacity', 'extension'],
        ARRAY['id', 'status']);
    IF p_id IS NULL THEN
        -- the client sends "password"; the daemon replaces it by password_hash
        IF NOT p_body ? 'password_hash' THEN
            PERFORM cd_invalid('password', 'is required');
        END IF;
        PERFORM cd_require(p_body, ARRAY['login']);
        r.role := 'agent';
        r.tier := 1;
        r.capacity_chat := 3;
        r.capacity_email := 5;
        r.capacity_voice := 1;
        v_skills := '{}';
    ELSE
        SELECT * INTO r FROM agents WHERE id = p_id AND deleted_at IS NULL FOR UPDATE;
        IF NOT FOUND THEN PERFORM cd_admin_not_found('agents', p_id::text); END IF;
    END IF;
    IF p_body ? 'login' THEN r.login := cd_j_name(p_body -> 'login', 'login'); END IF;
    IF p_body ? 'name' THEN
        r.name := btrim(cd_j_text(p_body -> 'name', 'name'));
        IF r.name = '' OR length(r.name) > 200 OR r.name ~ '[[:cntrl:]]' THEN
            PERFORM cd_invalid('name', 'must be 1 to 200 characters, without control characters');
        END IF;
    ELSIF p_id IS NULL THEN
        r.name := r.login;                  -- a display name defaults to the login
    END IF;
    IF p_body ? 'password_hash' THEN
        r.password_hash := cd_j_text(p_body -> 'password_hash', 'password_hash');
        -- a guard against ever storing a plain password by mistake
        IF r.password_hash !~ '^\$argon2id\$' THEN
            PERFORM cd_invalid('password_hash', 'must be an Argon2id hash');
        END IF;
    END IF;
    IF p_body ? 'role' THEN
        r.role := cd_j_text(p_body -> 'role', 'role');
        IF r.role NOT IN ('agent', 'supervisor', 'admin') THEN
            PERFORM cd_invalid('role', 'must be one of agent, supervisor, admin');
        END IF;
    END IF;
    IF p_body ? 'tier' THEN r.tier := cd_j_int(p_body -> 'tier', 'tier', 1, 100); END IF;
    IF p_body ? 'skills' THEN v_skills := cd_j_skill_levels(p_body -> 'skills', 'skills'); END IF;
    IF p_body ? 'capacity' THEN
        IF jsonb_typeof(p_body -> 'capacity') <> 'object' THEN
            PERFORM cd_invalid('capacity', 'must be an object such as {"chat":3,"email":5,"voice":1}');
        END IF;
        FOR k, v IN SELECT * FROM jsonb_each(p_body -> 'capacity') LOOP
            CASE k
            WHEN 'chat'  THEN r.capacity_chat  := cd_j_int(v, 'capacity', 0, 1000, false, 'chat');
            WHEN 'email' THEN r.capacity_email := cd_j_int(v, 'capacity', 0, 1000, false, 'email');
            WHEN 'voice' THEN r.capacity_voice := cd_j_int(v, 'capacity', 0, 1000, false, 'voice');
            ELSE
                PERFORM cd_invalid('capacity', format('unknown channel "%s" (use chat, email, voice)', k));
            END CASE;
        END LOOP;
    END IF;
    IF p_body ? 'extension' THEN
        r.extension := cd_j_text(p_body -> 'extension', 'extension', true);
        IF r.extension !~ '^[^[:space:][:cntrl:]]{1,64}$' THEN
            PERFORM cd_invalid('extension', 'must be 1 to 64 characters without spaces, or null');
        END IF;
    END IF;
    BEGIN
        IF p_id IS NULL THEN
            INSERT INTO agents (login, name, password_hash, role, tier,
                                capacity_chat, capacity_email, capacity_voice, extension)
            VALUES (r.login, r.name, r.password_hash, r.role, r.tier,
                    r.capacity_chat, r.capacity_email, r.capacity_voice, r.extension)
            RETURNING id INTO r.id;
        ELSE
            UPDATE agents
               SET login = r.login, name = r.name, password_hash = r.password_hash, role = r.role,
                   tier = r.tier, capacity_chat = r.capacity_chat, capacity_email = r.capacity_email,
                   capacity_voice = r.capacity_voice, extension = r.extension
             WHERE id = p_id;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_con = CONSTRAINT_NAME;
        IF v_con = 'agents_login_uq' THEN PERFORM cd_raise_duplicate('agents', 'login', r.login); END IF;
        RAISE;
    END;
    IF v_skills IS NOT NULL THEN
        PERFORM cd_store_skill_levels('agent_skills', 'agent_id', 'level', r.id, v_skills);
    END IF;
    RETURN r.id;
END
$$;

-- ---------------------------------------------------------------------------
-- inboxes: {id, address, queue (name)}
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_inbox_obj(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', i.id, 'address', i.address,
                              'queue', (SELECT q.name FROM queues q WHERE q.id = i.queue_id))
      FROM inboxes i WHERE i.id = p_id
$$;

CREATE FUNCTION cd_inbox_write(p_id bigint, p_body jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    r     inboxes%ROWTYPE;
    v_con text;
BEGIN
    PERFORM cd_check_fields(p_body, ARRAY['address', 'queue'], ARRAY['id']);
    IF p_id IS NULL THEN
        PERFORM cd_require(p_body, ARRAY['address', 'queue']);
    ELSE
        SELECT * INTO r FROM inboxes WHERE id = p_id FOR UPDATE;
        IF NOT FOUND THEN PERFORM cd_admin_not_found('inboxes', p_id::text); END IF;
    END IF;
    IF p_body ? 'address' THEN
        r.address := lower(btrim(cd_j_text(p_body -> 'address', 'address')));
        -- same rule as the inboxes_address_form constraint of 0001
        IF length(r.address) > 320
           OR NOT (r.address ~ '^(chat|voice|sms|whatsapp|social|web|api):[^[:space:][:cntrl:]]+$'
                   OR r.address ~ '^[^@:[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+$') THEN
            PERFORM cd_invalid('address',
                'must be an e-mail address (name@domain) or a channel address such as "sms:+15550100"');
        END IF;
    END IF;
    IF p_body ? 'queue' THEN r.queue_id := cd_j_ref('queues', p_body -> 'queue', 'queue'); END IF;
    BEGIN
        IF p_id IS NULL THEN
            INSERT INTO inboxes (address, queue_id) VALUES (r.address, r.queue_id) RETURNING id INTO r.id;
        ELSE
            UPDATE inboxes SET address = r.address, queue_id = r.queue_id WHERE id = p_id;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_con = CONSTRAINT_NAME;
        IF v_con = 'inboxes_address_uq' THEN PERFORM cd_raise_duplicate('inboxes', 'address', r.address); END IF;
        RAISE;
    END;
    RETURN r.id;
END
$$;

-- ---------------------------------------------------------------------------
-- api-tokens: {id, name, scopes:[...], created_at, last_used_at}
-- The token itself is never stored; the daemon adds token_hash (lower-case
-- hex SHA-256) to the create body and shows the token once, in its reply.
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_api_token_obj(p_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', t.id, 'name', t.name, 'scopes', to_jsonb(t.scopes),
                              'created_at', cd_ts(t.created_at), 'last_used_at', cd_ts(t.last_used_at))
      FROM api_tokens t WHERE t.id = p_id AND t.revoked_at IS NULL
$$;

-- non-empty array of scope names -> text[] in the canonical order, no duplicates
CREATE FUNCTION cd_j_scopes(p_v jsonb) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_all text[] := ARRAY['events:write', 'conversations:read', 'conversations:write', 'reports:read', 'admin'];
    v_e   jsonb;
    s     text;
    v_got text[] := '{}';
BEGIN
    IF jsonb_typeof(p_v) IS DISTINCT FROM 'array' OR jsonb_array_length(p_v) = 0 THEN
        PERFORM cd_invalid('scopes', 'must be a non-empty array of scopes (' || array_to_string(v_all, ', ') || ')');
    END IF;
    FOR v_e IN SELECT value FROM jsonb_array_elements(p_v) LOOP
        s := CASE WHEN jsonb_typeof(v_e) = 'string' THEN v_e #>> '{}' END;
        IF s IS NULL OR NOT s = ANY (v_all) THEN
            PERFORM cd_invalid('scopes', format('unknown scope %s (use %s)', v_e::text, array_to_string(v_all, ', ')));
        END IF;
        v_got := v_got || s;
    END LOOP;
    RETURN ARRAY(SELECT a FROM unnest(v_all) WITH ORDINALITY AS u(a, o) WHERE a = ANY (v_got) ORDER BY o);
END
$$;

CREATE FUNCTION cd_api_token_write(p_id bigint, p_body jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    r     api_tokens%ROWTYPE;
    v_con text;
BEGIN
    PERFORM cd_check_fields(p_body, ARRAY['name', 'scopes', 'token_hash'],
                            ARRAY['id', 'created_at', 'last_used_at']);
    IF p_id IS NULL THEN
        PERFORM cd_require(p_body, ARRAY['name', 'scopes', 'token_hash']);
        r.token_hash := lower(cd_j_text(p_body -> 'token_hash', 'token_hash'));
        IF r.token_hash !~ '^[0-9a-f]{64}$' THEN
            PERFORM cd_invalid('token_hash', 'must be a hex SHA-256');
        END IF;
    ELSE
        SELECT * INTO r FROM api_tokens WHERE id = p_id AND revoked_at IS NULL FOR UPDATE;
        IF NOT FOUND THEN PERFORM cd_admin_not_found('api-tokens', p_id::text); END IF;
        IF p_body ? 'token_hash' THEN
            -- a new secret is a new token: create one and delete the old
            PERFORM cd_invalid('token_hash', 'cannot be changed');
        END IF;
    END IF;
    IF p_body ? 'name' THEN r.name := cd_j_name(p_body -> 'name', 'name'); END IF;
    IF p_body ? 'scopes' THEN r.scopes := cd_j_scopes(p_body -> 'scopes'); END IF;
    BEGIN
        IF p_id IS NULL THEN
            INSERT INTO api_tokens (name, token_hash, scopes) VALUES (r.name, r.token_hash, r.scopes)
            RETURNING id INTO r.id;
        ELSE
            UPDATE api_tokens SET name = r.name, scopes = r.scopes WHERE id = p_id;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_con = CONSTRAINT_NAME;
        IF v_con = 'api_tokens_name_uq' THEN PERFORM cd_raise_duplicate('api-tokens', 'name', r.name); END IF;
        RAISE;
    END;
    RETURN r.id;
END
$$;

-- ---------------------------------------------------------------------------
-- Dispatch: the functions the daemon calls
-- ---------------------------------------------------------------------------

CREATE FUNCTION cd_admin_obj(p_kind text, p_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    CASE p_kind
    WHEN 'skills'       THEN RETURN cd_skill_obj(p_id);
    WHEN 'sla-policies' THEN RETURN cd_sla_policy_obj(p_id);
    WHEN 'queues'       THEN RETURN cd_queue_obj(p_id);
    WHEN 'agents'       THEN RETURN cd_agent_obj(p_id);
    WHEN 'inboxes'      THEN RETURN cd_inbox_obj(p_id);
    WHEN 'api-tokens'   THEN RETURN cd_api_token_obj(p_id);
    ELSE PERFORM cd_admin_meta(p_kind);  -- raises P0002
    END CASE;
    RETURN NULL;
END
$$;

CREATE FUNCTION cd_admin_notify(p_kind text, p_id bigint, p_op text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('contactd_admin', jsonb_build_object('kind', p_kind, 'id', p_id, 'op', p_op)::text)
$$;

-- Page of live objects with id > after, by id.  after NULL or '' = from the
-- start.  lim is clamped to 1..500 (NULL = 100).  next is the id of the last
-- item when more rows follow, else null.
CREATE FUNCTION cd_admin_list(kind text, after text, lim int) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m       record := cd_admin_meta(kind);
    v_after bigint := 0;
    v_lim   int := greatest(1, least(coalesce(lim, 100), 500));
    v_ids   bigint[];
    v_next  text;
BEGIN
    IF after IS NOT NULL AND after <> '' THEN
        IF after !~ '^[0-9]+$' THEN
            PERFORM cd_invalid('after', 'must be the id of the last item of the previous page');
        END IF;
        v_after := least(after::numeric, 9223372036854775807)::bigint;
    END IF;
    -- one row more than asked tells whether there is a next page
    EXECUTE format('SELECT ARRAY(SELECT id FROM %I WHERE id > $1 AND %s ORDER BY id LIMIT $2)', m.tbl, m.live)
        INTO v_ids USING v_after, v_lim + 1;
    IF cardinality(v_ids) > v_lim THEN
        v_ids := v_ids[1:v_lim];
        v_next := v_ids[v_lim]::text;
    END IF;
    RETURN jsonb_build_object(
        'items', coalesce((SELECT jsonb_agg(cd_admin_obj(kind, u.i) ORDER BY u.o)
                             FROM unnest(v_ids) WITH ORDINALITY AS u(i, o)), '[]'::jsonb),
        'next', v_next);
END
$$;

CREATE FUNCTION cd_admin_get(kind text, key text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_id bigint := cd_admin_resolve(kind, key);
BEGIN
    IF v_id IS NULL THEN
        PERFORM cd_admin_not_found(kind, key);
    END IF;
    RETURN cd_admin_obj(kind, v_id);
END
$$;

CREATE FUNCTION cd_admin_create(kind text, body jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM cd_admin_meta(kind);
    PERFORM cd_check_body(body);
    CASE kind
    WHEN 'skills'       THEN v_id := cd_skill_write(NULL, body);
    WHEN 'sla-policies' THEN v_id := cd_sla_policy_write(NULL, body);
    WHEN 'queues'       THEN v_id := cd_queue_write(NULL, body);
    WHEN 'agents'       THEN v_id := cd_agent_write(NULL, body);
    WHEN 'inboxes'      THEN v_id := cd_inbox_write(NULL, body);
    WHEN 'api-tokens'   THEN v_id := cd_api_token_write(NULL, body);
    END CASE;
    PERFORM cd_admin_notify(kind, v_id, 'create');
    RETURN cd_admin_obj(kind, v_id);
END
$$;

-- PUT: fields present in BODY replace the stored values; absent fields keep
-- theirs (see the header of this file for maps and read-only fields).
CREATE FUNCTION cd_admin_update(kind text, key text, body jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint := cd_admin_resolve(kind, key);
BEGIN
    IF v_id IS NULL THEN
        PERFORM cd_admin_not_found(kind, key);
    END IF;
    PERFORM cd_check_body(body);
    CASE kind
    WHEN 'skills'       THEN PERFORM cd_skill_write(v_id, body);
    WHEN 'sla-policies' THEN PERFORM cd_sla_policy_write(v_id, body);
    WHEN 'queues'       THEN PERFORM cd_queue_write(v_id, body);
    WHEN 'agents'       THEN PERFORM cd_agent_write(v_id, body);
    WHEN 'inboxes'      THEN PERFORM cd_inbox_write(v_id, body);
    WHEN 'api-tokens'   THEN PERFORM cd_api_token_write(v_id, body);
    END CASE;
    PERFORM cd_admin_notify(kind, v_id, 'update');
    RETURN cd_admin_obj(kind, v_id);
END
$$;

CREATE FUNCTION cd_admin_delete(kind text, key text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_id    bigint := cd_admin_resolve(kind, key);
    v_name  text;
    v_n     bigint;
    v_names text[];
BEGIN
    IF v_id IS NULL THEN
        PERFORM cd_admin_not_found(kind, key);
    END IF;
    CASE kind
    WHEN 'skills' THEN
        -- queue_skills and agent_skills rows go with it (ON DELETE CASCADE)
        DELETE FROM skills WHERE id = v_id;

    WHEN 'sla-policies' THEN
        SELECT name INTO v_name FROM sla_policies WHERE id = v_id FOR UPDATE;
        v_names := ARRAY(SELECT name FROM queues WHERE sla_policy_id = v_id ORDER BY name);
        IF cardinality(v_names) > 0 THEN
            PERFORM cd_raise_in_use(kind, v_name,
                CASE WHEN cardinality(v_names) = 1 THEN 'queue ' ELSE 'queues ' END || cd_name_list(v_names));
        END IF;
        SELECT count(*) INTO v_n FROM conversations WHERE sla_policy_id = v_id;
        IF v_n > 0 THEN
            PERFORM cd_raise_in_use(kind, v_name, cd_plural(v_n, 'conversation'));
        END IF;
        DELETE FROM sla_policies WHERE id = v_id;

    WHEN 'queues' THEN
        SELECT name INTO v_name FROM queues WHERE id = v_id FOR UPDATE;
        v_names := ARRAY(SELECT address FROM inboxes WHERE queue_id = v_id ORDER BY address);
        IF cardinality(v_names) > 0 THEN
            PERFORM cd_raise_in_use(kind, v_name,
                CASE WHEN cardinality(v_names) = 1 THEN 'inbox ' ELSE 'inboxes ' END || cd_name_list(v_names));
        END IF;
        SELECT count(*) INTO v_n FROM conversations WHERE queue_id = v_id;
        IF v_n > 0 THEN
            PERFORM cd_raise_in_use(kind, v_name, cd_plural(v_n, 'conversation'));
        END IF;
        DELETE FROM queues WHERE id = v_id;

    WHEN 'agents' THEN
        -- soft delete: history keeps pointing at the row; the login is freed
        UPDATE agents SET deleted_at = now(), status = 'offline', status_at = now() WHERE id = v_id;
        DELETE FROM agent_skills WHERE agent_id = v_id;
        -- its pending offers are revoked and their conversations wait in
        -- their queue again (an `offered` conversation always has a pending
        -- offer).  Conversations are locked before offers, as everywhere.
        PERFORM 1 FROM conversations
          WHERE id IN (SELECT conversation_id FROM offers WHERE agent_id = v_id AND state = 'pending')
             OR (agent_id = v_id AND status IN ('assigned', 'pending'))
          ORDER BY id FOR NO KEY UPDATE;
        -- conversations it still held go back to their queue (the router re-queues them
        -- too, with their waiting time counted from now)
        WITH h AS (
            UPDATE conversations SET status = 'queued', agent_id = NULL, enqueued_at = now()
             WHERE agent_id = v_id AND status IN ('assigned', 'pending')
            RETURNING id
        )
        INSERT INTO conversation_events (conversation_id, kind, data)
        SELECT h.id, 'requeued', jsonb_build_object('agent', v_id, 'reason', 'agent deleted')
          FROM h;
        WITH r AS (
            UPDATE offers SET state = 'revoked', reason = 'cancelled', decided_at = now()
             WHERE agent_id = v_id AND state = 'pending'
            RETURNING id, conversation_id
        ), q AS (
            UPDATE conversations c SET status = 'queued'
              FROM r WHERE c.id = r.conversation_id AND c.status = 'offered'
        )
        INSERT INTO conversation_events (conversation_id, kind, data)
        SELECT r.conversation_id, 'revoked', jsonb_build_object('offer', r.id, 'agent', v_id, 'reason', 'cancelled')
          FROM r;

    WHEN 'inboxes' THEN
        SELECT address INTO v_name FROM inboxes WHERE id = v_id FOR UPDATE;
        SELECT count(*) INTO v_n FROM conversations WHERE inbox_id = v_id;
        IF v_n > 0 THEN
            PERFORM cd_raise_in_use(kind, v_name, cd_plural(v_n, 'conversation'));
        END IF;
        DELETE FROM inboxes WHERE id = v_id;

    WHEN 'api-tokens' THEN
        -- revoked, not deleted: idempotency keys and audit keep their token
        UPDATE api_tokens SET revoked_at = now() WHERE id = v_id;
    END CASE;
    PERFORM cd_admin_notify(kind, v_id, 'delete');
    RETURN jsonb_build_object('deleted', true, 'id', v_id);
END
$$;

-- ---------------------------------------------------------------------------
-- API token lookup (every authenticated HTTP request)
-- ---------------------------------------------------------------------------

-- {"id","name","scopes":[...]} for a live token, else NULL.  last_used_at is
-- written at most once a minute per token, and never waits for a lock: if a
-- concurrent request is already updating it, this one skips the write.
CREATE FUNCTION cd_token_lookup(token_hash text) RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t record;
BEGIN
    SELECT a.id, a.name, a.scopes, a.last_used_at INTO t
      FROM api_tokens a
     WHERE a.token_hash = lower($1) AND a.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute' THEN
        UPDATE api_tokens SET last_used_at = now()
         WHERE id = (SELECT a.id FROM api_tokens a
                      WHERE a.id = t.id
                        AND (a.last_used_at IS NULL OR a.last_used_at < now() - interval '1 minute')
                      FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN jsonb_build_object('id', t.id, 'name', t.name, 'scopes', to_jsonb(t.scopes));
END
$$;
