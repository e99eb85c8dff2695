-- Stress-test schema: fenced resources that record, instead of raising, every
-- violation of mutual exclusion or of fencing-token order they observe.
-- Loaded by scripts/run_stress.sh after CREATE EXTENSION lockext; the pgbench
-- scripts (test/stress/*.pgbench) drive it, stress_checks() judges the run.
--
-- Families of resources (column family):
--   exclusive  1..4    exclusive locks: leases (TTL 10 s, released; or with a
--                      2 ms wait that often times out), transaction-scope and
--                      session-scope locks (released by COMMIT / backend
--                      exit): strict
--   rw         11..12  shared readers + exclusive writers on one name: strict
--   sem        31      semaphore, max_holders 3: at most 3 inside at once
--   lapse      21..22  exclusive leases with a 5 ms TTL, often left to expire:
--                      anomalies are violations only when both leases
--                      involved are still live (otherwise the fence is doing
--                      its job and the event goes to fence_rejections)

-- One row per protected resource; the row lock serialises its checks.
CREATE TABLE fenced (
    resource    int PRIMARY KEY,
    family      text NOT NULL,
    lock_name   text NOT NULL UNIQUE,
    is_strict   boolean NOT NULL,    -- every anomaly is a violation
    capacity    int,                    -- max holders inside (semaphore)
    last_token  bigint NOT NULL DEFAULT 0,  -- highest token the fence accepted
    occupant    bigint,                 -- token of the exclusive holder inside
    inside      int NOT NULL DEFAULT 0, -- shared holders (readers/semaphore) inside
    max_inside  int NOT NULL DEFAULT 0, -- most shared holders seen inside at once
    entries     bigint NOT NULL DEFAULT 0,  -- accepted exclusive entries
    shared_entries bigint NOT NULL DEFAULT 0
);

INSERT INTO fenced (resource, family, lock_name, is_strict, capacity)
SELECT r, 'exclusive', 'stress:' || r, true, NULL::int FROM generate_series(1, 4) r
UNION ALL
SELECT r, 'rw', 'rw:' || r, true, NULL FROM generate_series(11, 12) r
UNION ALL
SELECT r, 'lapse', 'lapse:' || r, false, NULL FROM generate_series(21, 22) r
UNION ALL
SELECT 31, 'sem', 'sem:31', true, 3;

-- Every exclusive entry attempt, in the order the fence saw them.
CREATE TABLE log (
    seq         bigserial PRIMARY KEY,
    resource    int NOT NULL,
    token       bigint NOT NULL,
    accepted    boolean NOT NULL,
    entered_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    left_at     timestamptz
);
CREATE INDEX log_resource_token ON log (resource, token);

-- What must never happen.
CREATE TABLE violations (
    id       bigserial PRIMARY KEY,
    kind     text NOT NULL,
    resource int,
    token    bigint,
    detail   text,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The fence turning away a holder whose lease had lapsed (lapse family only).
CREATE TABLE fence_rejections (
    id       bigserial PRIMARY KEY,
    kind     text NOT NULL,
    resource int,
    token    bigint,
    detail   text
);

-- Acquires that returned NULL although they waited 20 s.
CREATE TABLE timeouts (
    id       bigserial PRIMARY KEY,
    resource int,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Whether `token` is a live holder of lock `name` right now.
CREATE FUNCTION lease_live(p_name text, p_token bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT EXISTS (SELECT 1 FROM lockext.holders h
                   WHERE h.name = p_name AND h.token = p_token)
$$;

-- Record an anomaly: a violation, or (non-strict resource, a lease already
-- lapsed) a fence rejection.
CREATE FUNCTION note_anomaly(f fenced, p_kind text, p_token bigint, p_detail text,
                             p_is_violation boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_is_violation THEN
        INSERT INTO violations (kind, resource, token, detail)
        VALUES (p_kind, f.resource, p_token, p_detail);
    ELSE
        INSERT INTO fence_rejections (kind, resource, token, detail)
        VALUES (p_kind, f.resource, p_token, p_detail);
    END IF;
END $$;

-- Exclusive entry through the fence: returns whether the fence accepted it.
CREATE FUNCTION cs_enter(p_resource int, p_token bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    f fenced;
BEGIN
    SELECT * INTO STRICT f FROM fenced WHERE resource = p_resource FOR UPDATE;
    IF p_token <= f.last_token THEN
        -- A lower token than one already accepted: the fence rejects it.
        -- A violation unless this holder's lease has lapsed meanwhile.
        PERFORM note_anomaly(f, 'token_regression', p_token,
            format('token %s <= last accepted %s', p_token, f.last_token),
            f.is_strict OR lease_live(f.lock_name, p_token));
        INSERT INTO log (resource, token, accepted) VALUES (p_resource, p_token, false);
        RETURN false;
    END IF;
    IF coalesce(f.occupant, 0) <> 0 THEN
        -- Someone else is inside: a violation unless that one's lease lapsed.
        PERFORM note_anomaly(f, 'overlap', p_token,
            format('token %s entered while %s was inside', p_token, f.occupant),
            f.is_strict OR lease_live(f.lock_name, f.occupant));
    END IF;
    IF f.inside <> 0 THEN
        PERFORM note_anomaly(f, 'exclusive_with_shared', p_token,
            format('token %s entered while %s shared holders were inside', p_token, f.inside),
            true);
    END IF;
    UPDATE fenced SET last_token = p_token, occupant = p_token, entries = entries + 1
    WHERE resource = p_resource;
    INSERT INTO log (resource, token, accepted) VALUES (p_resource, p_token, true);
    RETURN true;
END $$;

-- Exclusive exit: returns whether `p_token` was the occupant.
CREATE FUNCTION cs_exit(p_resource int, p_token bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    f fenced;
BEGIN
    SELECT * INTO STRICT f FROM fenced WHERE resource = p_resource FOR UPDATE;
    IF f.occupant IS DISTINCT FROM p_token THEN
        -- Not ours any more: a violation unless our lease lapsed and a newer
        -- holder took over (or the fence turned us away on entry).
        PERFORM note_anomaly(f, 'exit_mismatch', p_token,
            format('token %s left but the occupant is %s', p_token, f.occupant),
            f.is_strict OR lease_live(f.lock_name, p_token));
        RETURN false;
    END IF;
    UPDATE fenced SET occupant = NULL WHERE resource = p_resource;
    UPDATE log SET left_at = clock_timestamp()
    WHERE resource = p_resource AND token = p_token AND accepted;
    RETURN true;
END $$;

-- Shared entry (reader, or semaphore holder): no exclusive holder may be
-- inside, and no more than `capacity` shared holders.
CREATE FUNCTION shared_enter(p_resource int, p_token bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    f fenced;
BEGIN
    SELECT * INTO STRICT f FROM fenced WHERE resource = p_resource FOR UPDATE;
    IF coalesce(f.occupant, 0) <> 0 THEN
        PERFORM note_anomaly(f, 'shared_with_exclusive', p_token,
            format('shared token %s entered while %s was inside', p_token, f.occupant), true);
    END IF;
    IF f.capacity IS NOT NULL AND f.inside + 1 > f.capacity THEN
        PERFORM note_anomaly(f, 'over_capacity', p_token,
            format('token %s made %s holders inside, capacity %s',
                   p_token, f.inside + 1, f.capacity), true);
    END IF;
    UPDATE fenced SET inside = inside + 1, max_inside = greatest(max_inside, inside + 1),
                      shared_entries = shared_entries + 1
    WHERE resource = p_resource;
END $$;

-- Shared exit.
CREATE FUNCTION shared_exit(p_resource int, p_token bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    f fenced;
BEGIN
    SELECT * INTO STRICT f FROM fenced WHERE resource = p_resource FOR UPDATE;
    IF f.inside <= 0 THEN
        PERFORM note_anomaly(f, 'shared_underflow', p_token,
            format('token %s left with %s shared holders inside', p_token, f.inside), true);
    END IF;
    UPDATE fenced SET inside = inside - 1 WHERE resource = p_resource;
END $$;

-- An acquire that waited its full 20 s and got nothing.
CREATE FUNCTION note_timeout(p_resource int) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO timeouts (resource) VALUES (p_resource)
$$;

-- The verdict on a finished run: one row per check, ok must be true for all.
CREATE FUNCTION stress_checks(p_min_sections bigint)
RETURNS TABLE (check_name text, value bigint, ok boolean)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    s record;
BEGIN
    -- No recorded violation of any kind.
    SELECT count(*) INTO n FROM violations;
    check_name := 'violations'; value := n; ok := n = 0; RETURN NEXT;

    -- Enough completed critical sections on strict exclusive resources.
    SELECT count(*) INTO n FROM log l JOIN fenced f USING (resource)
    WHERE f.is_strict AND l.accepted AND l.left_at IS NOT NULL;
    check_name := 'completed_sections'; value := n; ok := n >= p_min_sections; RETURN NEXT;

    -- Per strict resource, every entry attempt's token above the one before
    -- it (in fence order); on any resource, every accepted one.
    SELECT count(*) INTO n FROM (
        SELECT l.accepted, f.is_strict,
               l.token <= lag(l.token) OVER (PARTITION BY l.resource ORDER BY l.seq) AS down
        FROM log l JOIN fenced f USING (resource)
        WHERE f.is_strict OR l.accepted) x
    WHERE down;
    check_name := 'token_order_breaks'; value := n; ok := n = 0; RETURN NEXT;

    -- On strict resources, each section ended before the next one began.
    SELECT count(*) INTO n FROM (
        SELECT l.entered_at,
               lag(l.left_at) OVER (PARTITION BY l.resource ORDER BY l.seq) AS prev_left,
               lag(l.seq) OVER (PARTITION BY l.resource ORDER BY l.seq) AS prev_seq
        FROM log l JOIN fenced f USING (resource)
        WHERE f.is_strict AND l.accepted) x
    WHERE prev_seq IS NOT NULL AND (prev_left IS NULL OR prev_left > entered_at);
    check_name := 'interval_overlaps'; value := n; ok := n = 0; RETURN NEXT;

    -- Strict sections all exited; nobody left inside any resource.
    SELECT count(*) INTO n FROM log l JOIN fenced f USING (resource)
    WHERE f.is_strict AND l.accepted AND l.left_at IS NULL;
    check_name := 'unfinished_sections'; value := n; ok := n = 0; RETURN NEXT;
    SELECT count(*) INTO n FROM fenced WHERE coalesce(occupant, 0) <> 0 OR inside <> 0;
    check_name := 'resources_still_occupied'; value := n; ok := n = 0; RETURN NEXT;

    -- No acquire gave up after waiting 20 s.
    SELECT count(*) INTO n FROM timeouts;
    check_name := 'acquire_timeouts'; value := n; ok := n = 0; RETURN NEXT;

    -- The shared families were exercised.
    SELECT coalesce(sum(shared_entries), 0) INTO n FROM fenced WHERE family = 'rw';
    check_name := 'reader_sections'; value := n; ok := n > 0; RETURN NEXT;
    SELECT coalesce(sum(shared_entries), 0) INTO n FROM fenced WHERE family = 'sem';
    check_name := 'semaphore_sections'; value := n; ok := n > 0; RETURN NEXT;
    SELECT max(max_inside) INTO n FROM fenced WHERE family = 'sem';
    check_name := 'semaphore_max_inside'; value := n; ok := n BETWEEN 1 AND 3; RETURN NEXT;
    SELECT max(max_inside) INTO n FROM fenced WHERE family = 'rw';
    check_name := 'readers_max_inside'; value := n; ok := n >= 1; RETURN NEXT;
    SELECT coalesce(sum(entries), 0) INTO n FROM fenced WHERE family = 'lapse';
    check_name := 'lapse_sections'; value := n; ok := n > 0; RETURN NEXT;
    SELECT count(*) INTO n FROM fence_rejections;
    check_name := 'lapse_fence_rejections'; value := n; ok := true; RETURN NEXT;
    SELECT timed_out INTO n FROM lockext.stats;
    check_name := 'info_lockext_timed_out'; value := n; ok := true; RETURN NEXT;

    -- The lock service is empty again, and its counters add up.
    SELECT count(*) INTO n FROM lockext.holders;
    check_name := 'holders_left'; value := n; ok := n = 0; RETURN NEXT;
    SELECT count(*) INTO n FROM lockext.waiters;
    check_name := 'waiters_left'; value := n; ok := n = 0; RETURN NEXT;
    SELECT * INTO s FROM lockext.stats;
    check_name := 'slots_used'; value := s.slots_used; ok := s.slots_used = 0; RETURN NEXT;
    check_name := 'stats_acquired_minus_released_expired';
    value := s.acquired - s.released - s.expired;
    ok := value = s.slots_used; RETURN NEXT;
    check_name := 'stats_acquired'; value := s.acquired; ok := s.acquired > 0; RETURN NEXT;
END $$;
