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
LANGUAGE C VOLATILE PARALLEL UNSAFE;
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
-- All queues share one jobs table, list-partitioned by queue; each queue's
-- partition is hash-partitioned by key (create_queue makes them). Keeping
-- one table lets every function use static SQL, so PL/pgSQL caches one
-- generic plan per statement and partition pruning happens at run time:
-- no planning per call.
--
-- Per-key order. Of the jobs of one key, only the earliest is 'ready',
-- 'delayed' (its run_at, or its retry, has not come) or 'running'; the
-- others are 'waiting'. Enqueue makes a keyed job 'waiting' when the key
-- has live jobs; finishing a key's head (complete, or death) promotes the
-- key's next job. Both run under the key lock, a transaction-scope lock on
-- (queue, key) in PostgreSQL's lock manager, and read the key's jobs with
-- the latest snapshot, so they serialise per key at every isolation level
-- (src/queue_ops.cpp has the protocol). Dequeue then needs no per-key
-- check: it makes due 'delayed' jobs 'ready', and takes 'ready' jobs with
-- FOR UPDATE SKIP LOCKED, so it never waits on another worker's rows, and a
-- stuck key (running, or retrying with backoff) costs the other keys
-- nothing.
--
-- Completed jobs are deleted (no archive: the hot tables hold only live
-- jobs); dead jobs move to dead_jobs and stop blocking their key.
---------------------------------------------------------------------------

-- The registry of queues.
CREATE TABLE @extschema@.queues (
    queue       text PRIMARY KEY,
    partitions  int NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Live jobs of every queue (completed ones are deleted).
CREATE TABLE @extschema@.jobs (
    queue            text NOT NULL,
    id               bigint NOT NULL,
    key              text,
    payload          jsonb NOT NULL,
    state            text NOT NULL CHECK (state IN ('ready', 'delayed', 'waiting', 'running')),
    priority         int NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempt          int NOT NULL DEFAULT 0,
    max_attempts     int NOT NULL,
    token            bigint,
    lease_expires_at timestamptz,
    worker           text,
    enqueued_at      timestamptz NOT NULL DEFAULT now(),
    last_error       text
) PARTITION BY LIST (queue);
CREATE INDEX ON @extschema@.jobs (id);
CREATE INDEX ON @extschema@.jobs (priority DESC, id) WHERE state = 'ready';
CREATE INDEX ON @extschema@.jobs (key, id) WHERE key IS NOT NULL;
CREATE INDEX ON @extschema@.jobs (lease_expires_at) WHERE state = 'running';
-- Jobs that may not run yet stay out of the ready index, so any number of
-- keys in retry backoff cost dequeue nothing.
CREATE INDEX ON @extschema@.jobs (run_at) WHERE state = 'delayed';

-- Jobs that ran out of attempts, with their last error.
CREATE TABLE @extschema@.dead_jobs (
    queue        text NOT NULL,
    id           bigint NOT NULL,
    key          text,
    payload      jsonb NOT NULL,
    priority     int NOT NULL,
    attempt      int NOT NULL,
    max_attempts int NOT NULL,
    last_error   text,
    enqueued_at  timestamptz NOT NULL,
    died_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, id)
);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.queues', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.dead_jobs', '');
GRANT SELECT ON @extschema@.queues TO PUBLIC;

-- Tokens for job leases: a sequence is never rolled back, so tokens only rise.
CREATE SEQUENCE @extschema@.job_token_seq;
-- Job ids, unique across queues.
CREATE SEQUENCE @extschema@.job_id_seq;
-- A dump must carry both sequences: restarting them would reorder keys and
-- repeat tokens.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.job_token_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.job_id_seq', '');

-- Raise 42704 unless `queue` exists (22004 if NULL).
CREATE FUNCTION @extschema@._require_queue(queue text)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF queue IS NULL THEN
        RAISE EXCEPTION 'queue name must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM @extschema@.queues q WHERE q.queue = _require_queue.queue) THEN
        RAISE EXCEPTION 'queue "%" does not exist', queue USING ERRCODE = '42704',
            HINT = 'Create it with lockext.create_queue().';
    END IF;
END $$;

-- Raise 22023 with `message` unless `ok`.
CREATE FUNCTION @extschema@._check(ok boolean, message text)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION '%', message USING ERRCODE = '22023';
    END IF;
END $$;

-- Raise 22023 unless `span` is positive (zero too if zero_ok) and under 1000
-- years, so now() + span cannot overflow; dequeue's check, in C.
CREATE FUNCTION @extschema@._check_interval(span interval, what text, zero_ok boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'lockext_check_interval'
LANGUAGE C IMMUTABLE;

-- Create a queue: a partition of jobs with `partitions` hash partitions by key.
CREATE FUNCTION @extschema@.create_queue(queue text, partitions int DEFAULT 8)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    parent text;
BEGIN
    IF queue IS NULL THEN
        RAISE EXCEPTION 'queue name must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM @extschema@._check(queue ~ '^[a-z][a-z0-9_]{0,39}$',
        format('invalid queue name "%s": use 1 to 40 lowercase letters, digits and _, starting with a letter', queue));
    PERFORM @extschema@._check(partitions >= 1 AND partitions <= 1024,
        format('partitions must be between 1 and 1024, not %s', coalesce(partitions::text, 'NULL')));
    IF EXISTS (SELECT 1 FROM @extschema@.queues q WHERE q.queue = create_queue.queue) THEN
        RAISE EXCEPTION 'queue "%" already exists', queue USING ERRCODE = '42710';
    END IF;
    BEGIN
        INSERT INTO @extschema@.queues VALUES (queue, partitions);
    EXCEPTION WHEN unique_violation THEN
        -- Created by a concurrent create_queue since the check above.
        RAISE EXCEPTION 'queue "%" already exists', queue USING ERRCODE = '42710';
    END;
    parent := format('@extschema@.%I', 'queue_' || queue);
    EXECUTE format('CREATE TABLE %s PARTITION OF @extschema@.jobs FOR VALUES IN (%L) PARTITION BY HASH (key)',
                   parent, queue);
    FOR i IN 0 .. partitions - 1 LOOP
        -- Jobs are updated a few times, then deleted: leave room for HOT
        -- updates, and vacuum after a fixed number of dead rows.
        EXECUTE format($f$
            CREATE TABLE %s PARTITION OF %s FOR VALUES WITH (MODULUS %s, REMAINDER %s)
            WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,
                  autovacuum_vacuum_threshold = 2000, autovacuum_vacuum_cost_delay = 0,
                  autovacuum_vacuum_insert_scale_factor = 0,
                  autovacuum_vacuum_insert_threshold = 10000)$f$,
            -- '$' cannot occur in a queue name, so no two queues' tables collide.
            format('@extschema@.%I', 'queue_' || queue || '$' || i), parent, partitions, i);
    END LOOP;
END $$;

-- Drop a queue and all its jobs, dead ones included.
CREATE FUNCTION @extschema@.drop_queue(queue text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM @extschema@._require_queue(queue);
    BEGIN
        EXECUTE format('DROP TABLE @extschema@.%I', 'queue_' || queue);
    EXCEPTION WHEN undefined_table THEN
        -- Dropped by a concurrent drop_queue since the check above.
        RAISE EXCEPTION 'queue "%" does not exist', queue USING ERRCODE = '42704';
    END;
    PERFORM @extschema@._purge_dead_jobs(queue);
    DELETE FROM @extschema@.queues q WHERE q.queue = drop_queue.queue;
END $$;

-- Delete the dead jobs of a queue that no longer exists, with the latest
-- snapshot (drop_queue at REPEATABLE READ would miss some). In C.
CREATE FUNCTION @extschema@._purge_dead_jobs(queue text)
RETURNS void
AS 'MODULE_PATHNAME', 'lockext_purge_dead_jobs'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- The LISTEN channel on which enqueue announces new jobs of a queue.
CREATE FUNCTION @extschema@.queue_channel(queue text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'lockext_queue_' || queue $$;

-- Jobs of these keys have left the jobs table: lock the keys and make each
-- key's earliest job ready if it waits (workers are notified). In C.
CREATE FUNCTION @extschema@._free_keys(queue text, keys text[])
RETURNS void
AS 'MODULE_PATHNAME', 'lockext_free_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Insert jobs in array order (ids rise in that order); each key's first
-- job is ready only if the key had none. Returns the ids. In C
-- (src/queue_ops.cpp): the keys are locked first, then read.
CREATE FUNCTION @extschema@._insert_jobs(p_queue text, p_payloads jsonb[], p_keys text[],
                                         p_run_ats timestamptz[], p_priorities int[],
                                         p_max_attempts int[])
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'lockext_insert_jobs'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;

-- Enqueue one job; returns its id. Workers are notified after commit. (The same rules
-- as _insert_jobs, in C: this is the hot path; see src/queue_ops.cpp.)
CREATE FUNCTION @extschema@.enqueue(queue text, payload jsonb, key text DEFAULT NULL,
                                    run_at timestamptz DEFAULT now(), priority int DEFAULT 0,
                                    max_attempts int DEFAULT 5)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockext_enqueue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- A new job id for `key` in `queue`: nextval(job_id_seq) * 1024 plus the
-- remainder of the key's hash partition, so the id names its partition.
CREATE FUNCTION @extschema@._job_id(queue text, key text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockext_job_id'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Enqueue many jobs in order; keys[i] goes with payloads[i]. Returns the ids.
CREATE FUNCTION @extschema@.enqueue_batch(queue text, payloads jsonb[], keys text[] DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
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
    RETURN QUERY SELECT i.id FROM @extschema@._insert_jobs(queue, payloads, keys, NULL, NULL, NULL) AS i(id);
END $$;

-- Move deleted jobs to dead_jobs and free their keys.
CREATE FUNCTION @extschema@._bury(p_queue text, p_jobs @extschema@.jobs[], p_error text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO @extschema@.dead_jobs (queue, id, key, payload, priority, attempt, max_attempts,
                                       last_error, enqueued_at)
    SELECT p_queue, g.id, g.key, g.payload, g.priority, g.attempt, g.max_attempts,
           coalesce(p_error, g.last_error, 'lease expired'), g.enqueued_at
      FROM unnest(p_jobs) AS g;
    PERFORM @extschema@._free_keys(p_queue, ARRAY(SELECT g.key FROM unnest(p_jobs) AS g));
END $$;

-- Delayed jobs whose time has come become ready (dequeue's rare path).
CREATE FUNCTION @extschema@._promote_delayed(q text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE @extschema@.jobs j SET state = 'ready'
     WHERE j.queue = q AND j.id = ANY (ARRAY(
            SELECT d.id FROM @extschema@.jobs d
             WHERE d.queue = q AND d.state = 'delayed' AND d.run_at <= now()
             ORDER BY d.run_at LIMIT 1000 FOR UPDATE SKIP LOCKED))
       AND j.state = (SELECT 'delayed'::text);
END $$;

-- Jobs whose lease ran out (dequeue's rare path): those out of attempts die,
-- up to n others are leased again and returned.
CREATE FUNCTION @extschema@._dequeue_expired(q text, n int, l interval, w text)
RETURNS TABLE(id bigint, key text, payload jsonb, attempt int, token bigint,
              enqueued_at timestamptz, lease_expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    dead @extschema@.jobs[];
BEGIN
    WITH gone AS (
        DELETE FROM @extschema@.jobs j WHERE j.queue = q AND j.id IN (
            SELECT e.id FROM @extschema@.jobs e
             WHERE e.queue = q AND e.state = 'running' AND e.lease_expires_at <= now()
               AND e.attempt >= e.max_attempts
             -- A bounded number per call: burying locks each job's key, and
             -- thousands of keys in one transaction would exhaust the
             -- server's lock table. The rest die on the next calls.
             ORDER BY e.lease_expires_at LIMIT 100
             FOR UPDATE SKIP LOCKED)
        RETURNING j.*)
    SELECT array_agg(g) INTO dead FROM gone g;
    IF dead IS NOT NULL THEN
        PERFORM @extschema@._bury(q, dead, 'lease expired');
    END IF;
    -- The others are handed out again: each is still its key's head.
    RETURN QUERY
        WITH expired AS (
            SELECT e.id FROM @extschema@.jobs e
             WHERE e.queue = q AND e.state = 'running' AND e.lease_expires_at <= now()
               AND e.attempt < e.max_attempts  -- a skipped last attempt dies next time
             ORDER BY e.lease_expires_at
             LIMIT n FOR UPDATE SKIP LOCKED)
        UPDATE @extschema@.jobs j
           SET attempt = j.attempt + 1, token = nextval('@extschema@.job_token_seq'::regclass),
               lease_expires_at = clock_timestamp() + l, worker = w
         WHERE j.queue = q AND j.id = ANY (ARRAY(SELECT x.id FROM expired x))
        RETURNING j.id, j.key, j.payload, j.attempt, j.token, j.enqueued_at, j.lease_expires_at;
END $$;

-- Take up to `batch` jobs that are free to run, leased for `lease`: expired
-- leases first (re-delivered with attempt + 1), then ready jobs by priority
-- and id, FOR UPDATE SKIP LOCKED. In C (src/queue_ops.cpp): the hot path.
CREATE FUNCTION @extschema@.dequeue(queue text, batch int DEFAULT 1,
                                    lease interval DEFAULT '30 seconds', worker text DEFAULT NULL)
RETURNS TABLE(id bigint, key text, payload jsonb, attempt int, token bigint,
              enqueued_at timestamptz, lease_expires_at timestamptz)
AS 'MODULE_PATHNAME', 'lockext_dequeue'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

-- Finish many jobs; ids[i] goes with tokens[i]. Returns how many were held.
-- Rows are locked in (partition, id) order, so overlapping batches cannot
-- deadlock. In C (src/queue_ops.cpp).
CREATE FUNCTION @extschema@.complete(queue text, ids bigint[], tokens bigint[])
RETURNS integer
AS 'MODULE_PATHNAME', 'lockext_complete_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Finish a job; false when that token no longer holds it. The key's next
-- job becomes ready. In C (src/queue_ops.cpp): the hot path.
CREATE FUNCTION @extschema@.complete(queue text, id bigint, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lockext_complete'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Delay before retry `attempt`: exponential from 1 s, capped at 1 h, with
-- jitter (between half and all of it) so failed jobs do not retry in step.
CREATE FUNCTION @extschema@.backoff(attempt int)
RETURNS interval LANGUAGE sql VOLATILE AS $$
    -- The exponent stops at 12 (2^12 s is past the cap): power() of a
    -- larger attempt count would overflow float8.
    SELECT make_interval(secs => least(power(2, least(greatest(attempt, 1) - 1, 12)), 3600) * (0.5 + random() / 2))
$$;

-- Report a failed attempt: 'retry' (after retry_in, or backoff) or 'dead'
-- (after max_attempts); NULL when that token no longer holds the job.
CREATE FUNCTION @extschema@.fail(queue text, id bigint, token bigint, error text,
                                 retry_in interval DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q text := fail.queue;
    gone @extschema@.jobs;
BEGIN
    PERFORM @extschema@._require_queue(q);
    PERFORM @extschema@._check_interval(coalesce(fail.retry_in, interval '0'), 'retry_in', true);
    DELETE FROM @extschema@.jobs j
     WHERE j.queue = q AND j.id = fail.id AND j.token = fail.token
       AND j.state = (SELECT 'running'::text) AND j.attempt >= j.max_attempts
    RETURNING j.* INTO gone;
    IF FOUND THEN
        PERFORM @extschema@._bury(q, ARRAY[gone], fail.error);
        RETURN 'dead';
    END IF;
    -- A retried job stays its key's head, so the jobs behind it keep waiting;
    -- dequeue makes it ready once its run_at has come.
    UPDATE @extschema@.jobs j
       SET state = 'delayed', token = NULL, lease_expires_at = NULL, worker = NULL,
           last_error = fail.error,
           run_at = now() + coalesce(fail.retry_in, @extschema@.backoff(j.attempt))
     WHERE j.queue = q AND j.id = fail.id AND j.token = fail.token
       AND j.state = (SELECT 'running'::text);
    RETURN CASE WHEN FOUND THEN 'retry' END;
END $$;

-- Heartbeat: extend a running job's lease; NULL when the token is stale.
CREATE FUNCTION @extschema@.extend(queue text, id bigint, token bigint, lease interval)
RETURNS timestamptz LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    expires timestamptz;
BEGIN
    PERFORM @extschema@._require_queue(extend.queue);
    PERFORM @extschema@._check_interval(extend.lease, 'lease', false);
    UPDATE @extschema@.jobs j SET lease_expires_at = clock_timestamp() + extend.lease
     WHERE j.queue = extend.queue AND j.id = extend.id AND j.token = extend.token
       AND j.state = (SELECT 'running'::text)
    RETURNING j.lease_expires_at INTO expires;
    RETURN expires;
END $$;

-- Move dead jobs (all, or those in `ids`) back to the queue as new jobs at
-- the back of their key's line. Returns how many moved.
CREATE FUNCTION @extschema@.redrive(queue text, ids bigint[] DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q text := redrive.queue;
    g record;
BEGIN
    PERFORM @extschema@._require_queue(q);
    WITH gone AS (
        DELETE FROM @extschema@.dead_jobs d
         WHERE d.queue = q AND (redrive.ids IS NULL OR d.id = ANY (redrive.ids))
        RETURNING d.*)
    SELECT array_agg(x.payload ORDER BY x.id) AS payloads, array_agg(x.key ORDER BY x.id) AS keys,
           array_agg(x.priority ORDER BY x.id) AS priorities,
           array_agg(x.max_attempts ORDER BY x.id) AS max_attempts
      INTO g FROM gone x;
    IF g.payloads IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM @extschema@._insert_jobs(q, g.payloads, g.keys, NULL, g.priorities, g.max_attempts);
    RETURN cardinality(g.payloads);
END $$;

-- Give a leased job back unfinished, as a worker that shuts down does: it
-- is ready again at once, still its key's head, and the attempt it was
-- leased for does not count. False when that token no longer holds it.
CREATE FUNCTION @extschema@.requeue(queue text, id bigint, token bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q text := requeue.queue;
BEGIN
    PERFORM @extschema@._require_queue(q);
    UPDATE @extschema@.jobs j
       SET state = 'ready', attempt = j.attempt - 1, token = NULL, lease_expires_at = NULL,
           worker = NULL, run_at = least(j.run_at, now())
     WHERE j.queue = q AND j.id = requeue.id AND j.token = requeue.token
       AND j.state = (SELECT 'running'::text);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Rare (a worker's shutdown), so a plain NOTIFY: its commit-time
    -- serialisation costs nothing here.
    PERFORM pg_notify(@extschema@.queue_channel(q), '');
    RETURN true;
END $$;

-- Plans: one generic plan per statement, cached for the session, with
-- partition pruning by queue at execution, so no call pays for planning.
-- Queue tables churn faster than statistics follow (an empty table at the
-- first call looks tiny forever), so the plans are told to use the indexes:
-- every statement here is a point or range lookup on one of them. Lookups
-- by id test the state against a sub-select, which no partial index's
-- predicate matches: with such statistics the planner otherwise reads the
-- whole lease index, dead entries and all, for one id (see src/queue_ops.cpp).
ALTER FUNCTION @extschema@._promote_delayed(text)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@._dequeue_expired(text, int, interval, text)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@._bury(text, @extschema@.jobs[], text)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.fail(text, bigint, bigint, text, interval)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.extend(text, bigint, bigint, interval)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.redrive(text, bigint[])
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.requeue(text, bigint, bigint)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    SET search_path = pg_catalog, pg_temp;

-- The rest: only a fixed search_path, so no caller's schema can shadow a
-- built-in these functions call.
ALTER FUNCTION @extschema@._require_queue(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@._check(boolean, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.create_queue(text, int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.drop_queue(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.enqueue_batch(text, jsonb[], text[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.backoff(int) SET search_path = pg_catalog, pg_temp;

-- One row per queue: jobs by state, and the age of the oldest ready job.
-- 'ready' counts jobs that may run now, including those waiting behind an
-- earlier job of their key.
CREATE VIEW @extschema@.queue_stats AS
SELECT q.queue,
       count(j.id) FILTER (WHERE j.state <> 'running' AND j.run_at <= now()) AS ready,
       count(j.id) FILTER (WHERE j.state <> 'running' AND j.run_at > now() AND j.attempt = 0) AS scheduled,
       count(j.id) FILTER (WHERE j.state = 'running') AS running,
       count(j.id) FILTER (WHERE j.state <> 'running' AND j.run_at > now() AND j.attempt > 0) AS retrying,
       (SELECT count(*) FROM @extschema@.dead_jobs d WHERE d.queue = q.queue) AS dead,
       now() - min(j.enqueued_at) FILTER (WHERE j.state <> 'running' AND j.run_at <= now()) AS oldest_ready_age
  FROM @extschema@.queues q LEFT JOIN @extschema@.jobs j ON j.queue = q.queue
 GROUP BY q.queue;
GRANT SELECT ON @extschema@.queue_stats TO PUBLIC;
