-- 0004_sla_clock.sql -- SLA business-time arithmetic: when is a timer due,
-- and how much business time has elapsed between two instants.
--
--   cd_sla_due(tz, hours, holidays, start, budget_s [, pauses])     -> timestamptz
--   cd_sla_elapsed(tz, hours, holidays, start, end [, pauses])      -> double precision (seconds)
--   cd_sla_policy_due(policy, start, budget_s [, pauses])           -> timestamptz
--
-- Pure functions of their arguments (plus the time zone database, hence
-- STABLE): they read no table except cd_sla_policy_due, which reads one
-- sla_policies row.  They keep no state, so a due time can always be
-- recomputed exactly from (start, budget, calendar, every pause), e.g. after
-- the policy was edited.
--
-- Counted time
--   An instant counts when it lies inside a business window and inside no
--   pause.  tz, hours and holidays are the columns of sla_policies (0001):
--     * hours NULL = 24x7: every instant is business time and the time zone
--       is not even consulted (only pauses matter; no loop over days);
--     * otherwise {"mon":["09:00-13:00","14:00-18:00"], ...}: each interval
--       "HH:MM-HH:MM" (end may be "24:00") of a local date d is the span of
--       instants from (d + HH:MM) to (d + HH:MM) read in the zone tz.  The
--       window is wall-clock time, so DST is right by construction: a
--       09:00-17:00 window is 8 real hours on both sides of a change and
--       still opens at 09:00 local; a 00:00-24:00 window is 23 real hours on
--       the spring-forward day and 25 on the fall-back day.
--       Hours must be as 0002's cd_j_hours stores them (sorted, not
--       overlapping); a day that is missing or [] is closed;
--     * holidays: local dates (in tz) that are closed all day.
--   Local times at DST edges:
--     * a time that does not exist (inside a spring-forward gap, e.g. 02:30
--       on 2026-03-29 in Europe/Madrid) is the instant of the jump: the first
--       instant at which the wall clock shows that time or later (03:00 CEST).
--       A window lying entirely in the gap is empty that day.  (A bare
--       `AT TIME ZONE` would read 02:30 with the offset before the jump, i.e.
--       03:30 CEST: a "02:30-05:00" window would lose half an hour and
--       windows could overlap or invert.)
--     * a time that exists twice (inside a fall-back overlap, e.g. 02:30 on
--       2026-10-25 in Europe/Madrid) is read as PostgreSQL reads it: the
--       later occurrence (standard time, 02:30 CET).
--     With those two rules the local -> instant mapping never goes backwards,
--     so windows never overlap and no instant is counted twice.
--   Pauses (tstzrange[]): the intervals during which the clock is stopped
--   (the conversation waits on the customer).  They may overlap, touch, come
--   in any order; NULL elements, empty ranges and ranges ending before start
--   are ignored; the inclusivity of bounds is ignored (a pause is
--   [lower, upper)); an unbounded lower bound means "since ever"; an
--   unbounded (or 'infinity') upper bound means "paused until now and still
--   paused": nothing counts from its lower bound on.
--
-- cd_sla_due: the earliest instant D >= start such that the counted time in
--   [start, D) equals budget_s.
--     * start outside business hours (or inside a pause): the clock starts at
--       the next window opening (or the end of the pause).
--     * budget 0 (or negative: read as 0): the first counted instant >= start,
--       i.e. start itself when it is counted, else the next opening / pause
--       end.  So cd_sla_elapsed(start, due) = budget holds for 0 too.
--     * a budget that ends exactly at the close of a window is due at that
--       close (Fri 16:30 + 30 min on 09-17 hours -> Fri 17:00, not Mon 09:00).
--     * the budget is taken to the microsecond; the result is exact to the
--       microsecond (no rounding to whole seconds):
--       cd_sla_elapsed(start, cd_sla_due(start, b)) = b rounded to 1 us.
--     * NULL ("never due"): the budget is not used up before an open-ended
--       pause begins; or the calendar has no window at all (hours {} or all
--       days []); or the walk goes through 800 local days in a row without
--       counting a microsecond (e.g. a holiday list covering years: the
--       guard against walking forever; the days inside a pause are jumped
--       over, not walked, so a long but finite pause still gives a due
--       time); or budget / start is NULL, NaN, infinite, or the budget is
--       >= 1e12 s; or tz is NULL while hours is not.
--   Cost: 24x7 is O(number of pauses).  With hours it walks the days the
--   budget spans (plus the closed days in between; a multi-day pause is
--   jumped over in one step): a 1-hour budget touches one to four days.
--
-- cd_sla_elapsed: the counted seconds in [start, end); 0 when end <= start;
--   NULL when start or end is NULL or infinite (or tz is NULL while hours is
--   not).  Exact to the microsecond.  An open-ended pause stops the count at
--   its lower bound.
--
-- An unknown time zone raises 22023 as AT TIME ZONE does (but only when the
-- zone is needed: never for 24x7); sla_policies.timezone is validated on
-- write by 0002.

-- The instant at which the wall clock of zone P_TZ shows P_LOCAL (see "Local
-- times at DST edges" above: a nonexistent time is the instant of the jump, an
-- ambiguous one its later occurrence).
CREATE FUNCTION cd_sla_local_instant(p_local timestamp, p_tz text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    v  timestamptz := p_local AT TIME ZONE p_tz;
    lo timestamptz;
    hi timestamptz;
    m  timestamptz;
BEGIN
    IF (v AT TIME ZONE p_tz) = p_local THEN
        RETURN v;                  -- exists (once, or twice: PostgreSQL took the later)
    END IF;
    -- In a spring-forward gap.  PostgreSQL read P_LOCAL with the offset in
    -- force before the jump, so V lies after the jump J by (P_LOCAL - gap
    -- start), and the wall clock at V shows P_LOCAL + gap length.  Before J
    -- the clock shows less than P_LOCAL, from J on more: bisect (v - gap, v]
    -- down to the microsecond (~32 steps, on the rare window edges that fall
    -- in a gap only).
    hi := v;
    lo := v - ((v AT TIME ZONE p_tz) - p_local);
    WHILE hi - lo > interval '1 microsecond' LOOP
        m := lo + (hi - lo) / 2;
        IF (m AT TIME ZONE p_tz) >= p_local THEN hi := m; ELSE lo := m; END IF;
    END LOOP;
    RETURN hi;
END
$$;

-- The walk behind cd_sla_due and cd_sla_elapsed.  Two modes:
--   P_BUDGET_US not NULL: due mode, P_END ignored; DUE = the instant the
--     budget (microseconds) is used up, NULL = never;
--   P_BUDGET_US NULL: elapsed mode; COUNTED_US = counted microseconds in
--     [P_START, P_END).
-- It visits the counted segments in time order: business windows (or one
-- endless segment for 24x7) from V_POS on, minus the merged pauses, with a
-- pause cursor K that only moves forward.
CREATE FUNCTION cd_sla_walk(p_tz text, p_hours jsonb, p_holidays date[], p_start timestamptz,
                            p_budget_us bigint, p_end timestamptz, p_pauses tstzrange[],
                            OUT due timestamptz, OUT counted_us bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c_days     constant text[] := '{mon,tue,wed,thu,fri,sat,sun}';
    c_never    constant integer := 800;          -- days without counted time before giving up
    v_due_mode boolean := p_budget_us IS NOT NULL;
    v_rem      bigint := greatest(p_budget_us, 0);   -- due mode: microseconds still to count
    v_stop     timestamptz;                        -- elapsed mode: p_end; due mode: infinity
    v_pos      timestamptz := p_start;             -- everything before it has been accounted for
    -- pauses, merged and sorted; upper 'infinity' = still paused
    v_pl       timestamptz[];
    v_pu       timestamptz[];
    v_np       integer := 0;
    k          integer := 1;
    -- windows: v_ws[i] .. v_we[i] (offsets from local midnight), for ISO day
    -- j (1 = mon) i in v_from[j] .. v_to[j]
    v_24x7     boolean := p_hours IS NULL;
    v_ws       interval[] := '{}';
    v_we       interval[] := '{}';
    v_from     integer[] := '{1,1,1,1,1,1,1}';
    v_to       integer[] := '{0,0,0,0,0,0,0}';
    v_n        integer := 0;
    v_list     jsonb;
    s          text;
    v_hol      boolean := coalesce(cardinality(p_holidays), 0) > 0;
    -- the day being walked
    v_d        date;
    v_end_d    date;
    v_d0       timestamptz;                        -- its local midnight
    v_d1       timestamptz;                        -- the next local midnight
    v_next_d   date;
    v_next_d0  timestamptz;
    v_t        timestamp;
    v_lin      boolean;                            -- 24-hour day: instant = midnight + offset
    v_jump     boolean := false;                   -- v_pos moved to the end of a pause
    v_idle     integer := 0;                       -- days visited since time was last counted
    i          integer := 1;
    v_i_end    integer := 0;
    j          integer;
    -- the segment being consumed
    a          timestamptz;
    b          timestamptz;
    c          timestamptz;
    v_len      bigint;
BEGIN
    counted_us := 0;
    IF p_start IS NULL OR NOT isfinite(p_start) OR (v_due_mode IS FALSE AND (p_end IS NULL OR NOT isfinite(p_end)))
       OR (NOT v_24x7 AND p_tz IS NULL) THEN
        counted_us := NULL;
        RETURN;
    END IF;
    IF v_due_mode THEN
        v_stop := 'infinity';
    ELSE
        IF p_end <= p_start THEN RETURN; END IF;
        v_stop := p_end;
    END IF;

    IF coalesce(cardinality(p_pauses), 0) > 0 THEN
        -- range_agg merges overlapping and touching ranges and drops NULLs and
        -- empties; the multirange unnests in order.
        SELECT coalesce(array_agg(coalesce(lower(m), '-infinity') ORDER BY lower(m) NULLS FIRST), '{}'),
               coalesce(array_agg(coalesce(upper(m), 'infinity') ORDER BY lower(m) NULLS FIRST), '{}')
          INTO v_pl, v_pu
          FROM unnest((SELECT range_agg(r) FROM unnest(p_pauses) AS r)) AS m
         WHERE upper_inf(m) OR upper(m) > p_start;
        v_np := cardinality(v_pl);
    END IF;

    IF NOT v_24x7 THEN
        FOR j IN 1 .. 7 LOOP
            v_from[j] := v_n + 1;
            v_list := p_hours -> c_days[j];
            IF jsonb_typeof(v_list) = 'array' THEN
                FOR x IN 0 .. jsonb_array_length(v_list) - 1 LOOP
                    s := v_list ->> x;
                    v_n := v_n + 1;
                    v_ws[v_n] := substr(s, 1, 5)::interval;    -- "09:00" -> 09:00:00, "24:00" -> 24:00:00
                    v_we[v_n] := substr(s, 7, 5)::interval;
                END LOOP;
            END IF;
            v_to[j] := v_n;
        END LOOP;
        IF v_n = 0 THEN
            RETURN;                                -- never open: due NULL, elapsed 0
        END IF;
        -- The walk starts the day before the start's local date (the loop
        -- steps first): with a fall-back transition at midnight, that day's
        -- 24:00 can lie after an instant of the start's date.
        v_d := (p_start AT TIME ZONE p_tz)::date - 2;
        IF NOT v_due_mode THEN
            v_end_d := (p_end AT TIME ZONE p_tz)::date;
        END IF;
    END IF;

    LOOP
        -- 1. The next business segment [a, b) that ends after v_pos.
        IF v_24x7 THEN
            a := v_pos;
            b := 'infinity';
        ELSE
            WHILE i > v_i_end LOOP                 -- on to the next open day
                v_d := v_d + 1;
                -- in a pause: go to its end, and past a pause, go straight to
                -- the day of v_pos (a pause of weeks costs one step)
                WHILE k <= v_np AND v_pu[k] <= v_pos LOOP k := k + 1; END LOOP;
                IF k <= v_np AND v_pl[k] <= v_pos THEN
                    IF v_pu[k] = 'infinity' THEN RETURN; END IF;   -- paused for good
                    v_pos := v_pu[k];
                    v_jump := true;
                END IF;
                IF v_jump THEN
                    v_d := greatest(v_d, (v_pos AT TIME ZONE p_tz)::date - 1);
                    v_jump := false;
                END IF;
                IF NOT v_due_mode AND (v_pos >= v_stop OR v_d > v_end_d + 1) THEN
                    RETURN;
                END IF;
                v_idle := v_idle + 1;
                IF v_due_mode AND v_idle > c_never THEN
                    RETURN;                        -- e.g. holidays for years: never due
                END IF;
                j := ((v_d - date '2001-01-01') % 7 + 7) % 7 + 1;   -- 2001-01-01 was a Monday
                IF v_from[j] > v_to[j] OR (v_hol AND v_d = ANY (p_holidays)) THEN
                    CONTINUE;                      -- closed all day
                END IF;
                -- local midnights of v_d and v_d + 1 (a plain AT TIME ZONE
                -- unless midnight falls in a gap)
                IF v_d = v_next_d THEN
                    v_d0 := v_next_d0;
                ELSE
                    v_t := v_d::timestamp;
                    v_d0 := v_t AT TIME ZONE p_tz;
                    IF (v_d0 AT TIME ZONE p_tz) <> v_t THEN v_d0 := cd_sla_local_instant(v_t, p_tz); END IF;
                END IF;
                v_t := (v_d + 1)::timestamp;
                v_d1 := v_t AT TIME ZONE p_tz;
                IF (v_d1 AT TIME ZONE p_tz) <> v_t THEN v_d1 := cd_sla_local_instant(v_t, p_tz); END IF;
                v_next_d := v_d + 1;
                v_next_d0 := v_d1;
                IF v_d1 <= v_pos THEN
                    CONTINUE;                      -- the whole day is behind us
                END IF;
                -- No DST change that day (the usual case): offsets from
                -- midnight are real durations.  Otherwise every edge is read
                -- on the wall clock.
                v_lin := v_d1 - v_d0 = interval '24 hours';
                i := v_from[j];
                v_i_end := v_to[j];
            END LOOP;
            IF v_lin THEN
                a := v_d0 + v_ws[i];
                b := v_d0 + v_we[i];
            ELSE
                a := cd_sla_local_instant(v_d + v_ws[i], p_tz);
                b := cd_sla_local_instant(v_d + v_we[i], p_tz);
            END IF;
            i := i + 1;
            IF b <= v_pos THEN
                CONTINUE;
            END IF;
            a := greatest(a, v_pos);
        END IF;

        -- 2. Consume [a, b) minus the pauses.
        WHILE a < b LOOP
            WHILE k <= v_np AND v_pu[k] <= a LOOP k := k + 1; END LOOP;
            IF k <= v_np AND v_pl[k] <= a THEN
                IF v_pu[k] = 'infinity' THEN RETURN; END IF;       -- paused for good
                a := v_pu[k];                      -- may lie past b: v_pos := a below
                v_jump := true;
                CONTINUE;
            END IF;
            -- [a, c) is counted
            c := b;
            IF k <= v_np AND v_pl[k] < c THEN c := v_pl[k]; END IF;
            IF v_due_mode THEN
                IF c = 'infinity' THEN
                    due := a + v_rem * interval '1 microsecond';
                    RETURN;
                END IF;
                v_len := (extract(epoch FROM c - a) * 1000000)::bigint;
                IF v_rem <= v_len THEN
                    due := a + v_rem * interval '1 microsecond';
                    RETURN;
                END IF;
                v_rem := v_rem - v_len;
                v_idle := 0;
            ELSE
                IF a >= v_stop THEN RETURN; END IF;
                IF c >= v_stop THEN
                    counted_us := counted_us + (extract(epoch FROM v_stop - a) * 1000000)::bigint;
                    RETURN;
                END IF;
                counted_us := counted_us + (extract(epoch FROM c - a) * 1000000)::bigint;
            END IF;
            a := c;
        END LOOP;
        v_pos := a;                                -- b, or the end of a pause reaching past b
    END LOOP;
END
$$;

CREATE FUNCTION cd_sla_due(p_tz text, p_hours jsonb, p_holidays date[], p_start timestamptz,
                           p_budget_s double precision, p_pauses tstzrange[] DEFAULT '{}')
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    -- NaN, +-Infinity and NULL fail the test, and so does a budget whose
    -- microseconds would not fit a bigint (>= 1e12 s is 31,000 years anyway)
    SELECT CASE WHEN p_budget_s < 1e12 THEN
                (cd_sla_walk(p_tz, p_hours, p_holidays, p_start,
                             round(greatest(p_budget_s, 0) * 1e6)::bigint, NULL, p_pauses)).due
           END
$$;

CREATE FUNCTION cd_sla_elapsed(p_tz text, p_hours jsonb, p_holidays date[], p_start timestamptz,
                               p_end timestamptz, p_pauses tstzrange[] DEFAULT '{}')
RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT (cd_sla_walk(p_tz, p_hours, p_holidays, p_start, NULL, p_end, p_pauses)).counted_us / 1e6::double precision
$$;

-- cd_sla_due with the calendar of sla_policies row P_POLICY (NULL when there
-- is no such policy).
CREATE FUNCTION cd_sla_policy_due(p_policy bigint, p_start timestamptz, p_budget_s double precision,
                                  p_pauses tstzrange[] DEFAULT '{}')
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT cd_sla_due(p.timezone, p.hours, p.holidays, p_start, p_budget_s, p_pauses)
      FROM sla_policies p
     WHERE p.id = p_policy
$$;
