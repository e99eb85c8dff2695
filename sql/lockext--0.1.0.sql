-- lockext 0.1.0: named leases in shared memory.
\echo Use "CREATE EXTENSION lockext" to load this file. \quit

GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

-- Take a lock; returns its fencing token, or NULL when not obtained within wait.
CREATE FUNCTION @extschema@.acquire(
    name text,
    ttl interval DEFAULT '30 seconds',
    wait interval DEFAULT '0',
    mode text DEFAULT 'exclusive',
    scope text DEFAULT 'lease',
    max_holders int DEFAULT 1,
    owner text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockext_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Extend a held lease; returns the new expiry, or NULL when the token no longer holds it.
CREATE FUNCTION @extschema@.renew(name text, token bigint, ttl interval DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'lockext_renew'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Release a held lease; false when the token no longer holds it.
CREATE FUNCTION @extschema@.release(name text, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lockext_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Release every holder of a name, token or not. Administrators only.
CREATE FUNCTION @extschema@.force_release(name text)
RETURNS integer
AS 'MODULE_PATHNAME', 'lockext_force_release'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION @extschema@.force_release(text) FROM PUBLIC;

CREATE FUNCTION @extschema@._holders(
    OUT name text, OUT mode text, OUT token bigint, OUT owner text, OUT scope text,
    OUT pid integer, OUT application_name text, OUT client_addr inet,
    OUT acquired_at timestamptz, OUT renewed_at timestamptz, OUT expires_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'lockext_holders'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@._waiters(
    OUT name text, OUT mode text, OUT pid integer, OUT owner text,
    OUT waiting_since timestamptz, OUT "position" integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'lockext_waiters'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@._stats(
    OUT acquired bigint, OUT released bigint, OUT expired bigint, OUT renewed bigint,
    OUT timed_out bigint, OUT cancelled bigint, OUT contended bigint,
    OUT slots_used integer, OUT slots_total integer)
RETURNS record
AS 'MODULE_PATHNAME', 'lockext_stats'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- Live holders in this database; an expired lease never shows here.
CREATE VIEW @extschema@.holders AS SELECT * FROM @extschema@._holders();
-- Queued requests in this database, in queue order per name.
CREATE VIEW @extschema@.waiters AS
    SELECT * FROM @extschema@._waiters() ORDER BY name, "position";
-- Counters since server start (all databases) and slot usage.
CREATE VIEW @extschema@.stats AS SELECT * FROM @extschema@._stats();

GRANT SELECT ON @extschema@.holders, @extschema@.waiters, @extschema@.stats TO PUBLIC;

---------------------------------------------------------------------------
-- Partitioned job queues with per-key ordering.
--
-- Each queue is a table hash-partitioned by key, plus a dead-letter table.
-- A job is free to run when it is ready (run_at has come) and no other job
-- with its key is running or was enqueued before it and is still in the
-- table (waiting, retrying or running). Completed jobs are deleted; dead jobs
-- move to the dead-letter table and stop blocking their key. Workers take
-- jobs with FOR UPDATE SKIP LOCKED, so they never wait on each other's rows.
---------------------------------------------------------------------------

-- The registry of queues.
CREATE TABLE @extschema@.queues (
    queue       text PRIMARY KEY,
    partitions  int NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON @extschema@.queues TO PUBLIC;

-- Tokens for job leases: a sequence is never rolled back, so tokens only rise.
CREATE SEQUENCE @extschema@.job_token_seq;
-- Job ids: one sequence for all queues, so ids are unique across them.
CREATE SEQUENCE @extschema@.job_id_seq;
GRANT USAGE ON SEQUENCE @extschema@.job_token_seq, @extschema@.job_id_seq TO PUBLIC;

-- The jobs table of a queue, or an error with SQLSTATE 42704 if unknown.
CREATE FUNCTION @extschema@._queue_table(queue text, suffix text DEFAULT '')
RETURNS text LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF queue IS NULL THEN
        RAISE EXCEPTION 'queue name must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM @extschema@.queues q WHERE q.queue = _queue_table.queue) THEN
        RAISE EXCEPTION 'queue "%" does not exist', queue USING ERRCODE = '42704',
            HINT = 'Create it with lockext.create_queue().';
    END IF;
    RETURN format('@extschema@.%I', 'queue_' || queue || suffix);
END $$;

-- Raise 22023 unless `ok`.
CREATE FUNCTION @extschema@._check(ok boolean, message text)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION '%', message USING ERRCODE = '22023';
    END IF;
END $$;

-- Create a queue whose jobs table has `partitions` hash partitions by key.
CREATE FUNCTION @extschema@.create_queue(queue text, partitions int DEFAULT 8)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    jobs text;
BEGIN
    IF queue IS NULL THEN
        RAISE EXCEPTION 'queue name must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM @extschema@._check(queue ~ '^[a-z][a-z0-9_]{0,39}$',
        format('invalid queue name "%s": use 1 to 40 lowercase letters, digits and _, starting with a letter', queue));
    jobs := format('@extschema@.%I', 'queue_' || queue);
    PERFORM @extschema@._check(partitions >= 1 AND partitions <= 1024,
        format('partitions must be between 1 and 1024, not %s', coalesce(partitions::text, 'NULL')));
    IF EXISTS (SELECT 1 FROM @extschema@.queues q WHERE q.queue = create_queue.queue) THEN
        RAISE EXCEPTION 'queue "%" already exists', queue USING ERRCODE = '42710';
    END IF;
    INSERT INTO @extschema@.queues VALUES (queue, partitions);
    EXECUTE format($f$
        CREATE TABLE %s (
            id               bigint NOT NULL,
            key              text,
            payload          jsonb NOT NULL,
            state            text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'running')),
            priority         int NOT NULL DEFAULT 0,
            run_at           timestamptz NOT NULL DEFAULT now(),
            attempt          int NOT NULL DEFAULT 0,
            max_attempts     int NOT NULL,
            token            bigint,
            lease_expires_at timestamptz,
            worker           text,
            enqueued_at      timestamptz NOT NULL DEFAULT now(),
            last_error       text
        ) PARTITION BY HASH (key)$f$, jobs);
    FOR i IN 0 .. partitions - 1 LOOP
        -- Jobs are updated twice in their life and then deleted: leave room
        -- for HOT updates, and vacuum early rather than by table fraction.
        EXECUTE format($f$
            CREATE TABLE %s PARTITION OF %s FOR VALUES WITH (MODULUS %s, REMAINDER %s)
            WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,
                  autovacuum_vacuum_threshold = 2000, autovacuum_vacuum_cost_delay = 0,
                  autovacuum_vacuum_insert_scale_factor = 0,
                  autovacuum_vacuum_insert_threshold = 10000)$f$,
            format('@extschema@.%I', 'queue_' || queue || '_' || i), jobs, partitions, i);
    END LOOP;
    EXECUTE format('CREATE INDEX ON %s (id)', jobs);
    EXECUTE format('CREATE INDEX ON %s (priority DESC, id) WHERE state = ''ready''', jobs);
    EXECUTE format('CREATE INDEX ON %s (key, id) WHERE key IS NOT NULL', jobs);
    EXECUTE format('CREATE INDEX ON %s (lease_expires_at) WHERE state = ''running''', jobs);
    EXECUTE format($f$
        CREATE TABLE %s (
            id           bigint PRIMARY KEY,
            key          text,
            payload      jsonb NOT NULL,
            priority     int NOT NULL,
            attempt      int NOT NULL,
            max_attempts int NOT NULL,
            last_error   text,
            enqueued_at  timestamptz NOT NULL,
            died_at      timestamptz NOT NULL DEFAULT now()
        )$f$, format('@extschema@.%I', 'queue_' || queue || '_dead'));
END $$;

-- Drop a queue and all its jobs, dead ones included.
CREATE FUNCTION @extschema@.drop_queue(queue text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TABLE %s, %s', @extschema@._queue_table(queue),
                   @extschema@._queue_table(queue, '_dead'));
    DELETE FROM @extschema@.queues q WHERE q.queue = drop_queue.queue;
END $$;

-- The LISTEN channel on which enqueue announces new jobs of a queue.
CREATE FUNCTION @extschema@.queue_channel(queue text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'lockext_queue_' || queue $$;

-- Enqueue one job; returns its id. NOTIFY fires at commit.
CREATE FUNCTION @extschema@.enqueue(queue text, payload jsonb, key text DEFAULT NULL,
                                    run_at timestamptz DEFAULT now(), priority int DEFAULT 0,
                                    max_attempts int DEFAULT 5)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    jobs text := @extschema@._queue_table(queue);
    job_id bigint;
BEGIN
    IF payload IS NULL THEN
        RAISE EXCEPTION 'payload must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM @extschema@._check(max_attempts >= 1, 'max_attempts must be at least 1');
    EXECUTE format('INSERT INTO %s (id, key, payload, run_at, priority, max_attempts)
                    VALUES (nextval(''@extschema@.job_id_seq''), $1, $2, coalesce($3, now()), coalesce($4, 0), $5)
                    RETURNING id', jobs)
        INTO job_id USING key, payload, run_at, priority, max_attempts;
    PERFORM pg_notify(@extschema@.queue_channel(queue), '');
    RETURN job_id;
END $$;

-- Enqueue many jobs in order; keys[i] goes with payloads[i]. Returns the ids.
CREATE FUNCTION @extschema@.enqueue_batch(queue text, payloads jsonb[], keys text[] DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    jobs text := @extschema@._queue_table(queue);
BEGIN
    IF payloads IS NULL THEN
        RAISE EXCEPTION 'payloads must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM @extschema@._check(keys IS NULL OR cardinality(keys) = cardinality(payloads),
        format('keys has %s elements but payloads has %s', cardinality(keys), cardinality(payloads)));
    IF array_position(payloads, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'payload % must not be NULL', array_position(payloads, NULL)
            USING ERRCODE = '22004';
    END IF;
    RETURN QUERY EXECUTE format(
        'INSERT INTO %s (id, key, payload, max_attempts)
         SELECT nextval(''@extschema@.job_id_seq''), $2[i], $1[i], 5
           FROM generate_subscripts($1, 1) AS i ORDER BY i
         RETURNING id', jobs)
        USING payloads, keys;
    PERFORM pg_notify(@extschema@.queue_channel(queue), '');
END $$;

-- Take up to `batch` jobs that are free to run, leased for `lease`.
CREATE FUNCTION @extschema@.dequeue(queue text, batch int DEFAULT 1,
                                    lease interval DEFAULT '30 seconds', worker text DEFAULT NULL)
RETURNS TABLE(id bigint, key text, payload jsonb, attempt int, token bigint,
              enqueued_at timestamptz, lease_expires_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    jobs text := @extschema@._queue_table(queue);
    dead text := @extschema@._queue_table(queue, '_dead');
    taken int;
BEGIN
    PERFORM @extschema@._check(batch >= 1, 'batch must be at least 1');
    PERFORM @extschema@._check(lease > interval '0', 'lease must be positive');
    -- Jobs whose lease ran out: out of attempts, they die; otherwise they
    -- are handed out again (they are their key's head already).
    EXECUTE format($f$
        WITH gone AS (
            DELETE FROM %1$s j WHERE j.id IN (
                SELECT e.id FROM %1$s e
                 WHERE e.state = 'running' AND e.lease_expires_at <= now()
                   AND e.attempt >= e.max_attempts
                 FOR UPDATE SKIP LOCKED)
            RETURNING j.*)
        INSERT INTO %2$s (id, key, payload, priority, attempt, max_attempts, last_error, enqueued_at)
        SELECT g.id, g.key, g.payload, g.priority, g.attempt, g.max_attempts,
               coalesce(g.last_error, 'lease expired'), g.enqueued_at FROM gone g$f$, jobs, dead);
    RETURN QUERY EXECUTE format($f$
        WITH expired AS (
            SELECT e.id FROM %1$s e
             WHERE e.state = 'running' AND e.lease_expires_at <= now()
             ORDER BY e.lease_expires_at
             LIMIT $1 FOR UPDATE SKIP LOCKED)
        UPDATE %1$s j
           SET attempt = j.attempt + 1, token = nextval('@extschema@.job_token_seq'),
               lease_expires_at = clock_timestamp() + $2, worker = $3
          FROM expired x WHERE j.id = x.id
        RETURNING j.id, j.key, j.payload, j.attempt, j.token, j.enqueued_at, j.lease_expires_at$f$, jobs)
        USING batch, lease, worker;
    GET DIAGNOSTICS taken = ROW_COUNT;
    IF taken >= batch THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($f$
        WITH free AS (
            SELECT r.id FROM %1$s r
             WHERE r.state = 'ready' AND r.run_at <= now()
               AND (r.key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM %1$s b
                     WHERE b.key = r.key AND (b.id < r.id OR b.state = 'running')))
             ORDER BY r.priority DESC, r.id
             LIMIT $1 FOR UPDATE SKIP LOCKED)
        UPDATE %1$s j
           SET state = 'running', attempt = j.attempt + 1,
               token = nextval('@extschema@.job_token_seq'),
               lease_expires_at = clock_timestamp() + $2, worker = $3
          FROM free f WHERE j.id = f.id
        RETURNING j.id, j.key, j.payload, j.attempt, j.token, j.enqueued_at, j.lease_expires_at$f$, jobs)
        USING batch - taken, lease, worker;
END $$;

-- Finish a job; false when that token no longer holds it.
CREATE FUNCTION @extschema@.complete(queue text, id bigint, token bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    EXECUTE format('DELETE FROM %s WHERE id = $1 AND token = $2 AND state = ''running''',
                   @extschema@._queue_table(queue))
        USING id, token;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END $$;

-- Finish many jobs; ids[i] goes with tokens[i]. Returns how many were held.
CREATE FUNCTION @extschema@.complete(queue text, ids bigint[], tokens bigint[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    PERFORM @extschema@._check(cardinality(ids) = cardinality(tokens),
        format('ids has %s elements but tokens has %s', cardinality(ids), cardinality(tokens)));
    EXECUTE format('DELETE FROM %s j USING unnest($1, $2) AS d(id, token)
                     WHERE j.id = d.id AND j.token = d.token AND j.state = ''running''',
                   @extschema@._queue_table(queue))
        USING ids, tokens;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Delay before retry `attempt`: exponential from 1 s, capped at 1 h, with
-- jitter (between half and all of it) so failed jobs do not retry in step.
CREATE FUNCTION @extschema@.backoff(attempt int)
RETURNS interval LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => least(power(2, greatest(attempt, 1) - 1), 3600) * (0.5 + random() / 2))
$$;

-- Report a failed attempt: 'retry' (after retry_in, or backoff) or 'dead'
-- (after max_attempts); NULL when that token no longer holds the job.
CREATE FUNCTION @extschema@.fail(queue text, id bigint, token bigint, error text,
                                 retry_in interval DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    jobs text := @extschema@._queue_table(queue);
    dead text := @extschema@._queue_table(queue, '_dead');
    outcome text;
BEGIN
    PERFORM @extschema@._check(retry_in IS NULL OR retry_in >= interval '0',
                               'retry_in must not be negative');
    EXECUTE format($f$
        WITH gone AS (
            DELETE FROM %1$s j WHERE j.id = $1 AND j.token = $2 AND j.state = 'running'
               AND j.attempt >= j.max_attempts
            RETURNING j.*)
        INSERT INTO %2$s (id, key, payload, priority, attempt, max_attempts, last_error, enqueued_at)
        SELECT g.id, g.key, g.payload, g.priority, g.attempt, g.max_attempts, $3, g.enqueued_at
          FROM gone g RETURNING 'dead'$f$, jobs, dead)
        INTO outcome USING id, token, error;
    IF outcome IS NOT NULL THEN
        RETURN outcome;
    END IF;
    EXECUTE format($f$
        UPDATE %s j SET state = 'ready', token = NULL, lease_expires_at = NULL, worker = NULL,
                        last_error = $3,
                        run_at = now() + coalesce($4, @extschema@.backoff(j.attempt))
         WHERE j.id = $1 AND j.token = $2 AND j.state = 'running'
        RETURNING 'retry'$f$, jobs)
        INTO outcome USING id, token, error, retry_in;
    RETURN outcome;
END $$;

-- Heartbeat: extend a running job's lease; NULL when the token is stale.
CREATE FUNCTION @extschema@.extend(queue text, id bigint, token bigint, lease interval)
RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    expires timestamptz;
BEGIN
    PERFORM @extschema@._check(lease > interval '0', 'lease must be positive');
    EXECUTE format('UPDATE %s j SET lease_expires_at = clock_timestamp() + $3
                     WHERE j.id = $1 AND j.token = $2 AND j.state = ''running''
                    RETURNING j.lease_expires_at', @extschema@._queue_table(queue))
        INTO expires USING id, token, lease;
    RETURN expires;
END $$;

-- Move dead jobs (all, or those in `ids`) back to the queue as new jobs at
-- the back of their key's line. Returns how many moved.
CREATE FUNCTION @extschema@.redrive(queue text, ids bigint[] DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    EXECUTE format($f$
        WITH gone AS (
            DELETE FROM %2$s d WHERE $1 IS NULL OR d.id = ANY ($1) RETURNING d.*)
        INSERT INTO %1$s (id, key, payload, priority, max_attempts)
        SELECT nextval('@extschema@.job_id_seq'), g.key, g.payload, g.priority, g.max_attempts
          FROM gone g ORDER BY g.id$f$,
        @extschema@._queue_table(queue), @extschema@._queue_table(queue, '_dead'))
        USING ids;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify(@extschema@.queue_channel(queue), '');
    END IF;
    RETURN n;
END $$;

-- One row per queue: jobs by state, and the age of the oldest ready job.
CREATE FUNCTION @extschema@._queue_stats(
    OUT queue text, OUT ready bigint, OUT scheduled bigint, OUT running bigint,
    OUT retrying bigint, OUT dead bigint, OUT oldest_ready_age interval)
RETURNS SETOF record LANGUAGE plpgsql AS $$
DECLARE
    q record;
BEGIN
    FOR q IN SELECT r.queue FROM @extschema@.queues r ORDER BY r.queue LOOP
        queue := q.queue;
        EXECUTE format($f$
            SELECT count(*) FILTER (WHERE state = 'ready' AND run_at <= now()),
                   count(*) FILTER (WHERE state = 'ready' AND run_at > now() AND attempt = 0),
                   count(*) FILTER (WHERE state = 'running'),
                   count(*) FILTER (WHERE state = 'ready' AND run_at > now() AND attempt > 0),
                   (SELECT count(*) FROM %2$s),
                   now() - min(enqueued_at) FILTER (WHERE state = 'ready' AND run_at <= now())
              FROM %1$s$f$,
            format('@extschema@.%I', 'queue_' || q.queue),
            format('@extschema@.%I', 'queue_' || q.queue || '_dead'))
            INTO ready, scheduled, running, retrying, dead, oldest_ready_age;
        RETURN NEXT;
    END LOOP;
END $$;

CREATE VIEW @extschema@.queue_stats AS SELECT * FROM @extschema@._queue_stats();
GRANT SELECT ON @extschema@.queue_stats TO PUBLIC;
