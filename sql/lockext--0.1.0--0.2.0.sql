-- lockext 0.1.0 -> 0.2.0: a running job is a lease in the lock table.
--
-- A job's row now holds only what must survive anything (the job, its
-- attempts so far, and whether it may run now: 'ready', or from run_at on:
-- 'delayed'); that it runs is a lease in shared memory, named after its key
-- (src/queue_ops.cpp has the protocol). So dequeue writes nothing durable,
-- enqueue and complete take no key locks, and per-key order comes from the
-- key's lease and the id order of its jobs instead of a 'waiting' state.
--
-- Jobs that were 'waiting' become ready (their order is their ids'). Jobs
-- that were 'running' lose their 0.1.0 lease, whose token the new engine
-- cannot check: they become ready and are delivered again with the next
-- attempt (their attempt count already counts the lost delivery). Stop the
-- workers before updating, or they will see their tokens refused.
\echo Use "ALTER EXTENSION lockext UPDATE TO '0.2.0'" to load this file. \quit

-- The functions of the old engine (and its internal helpers, which were
-- callable by PUBLIC and skipped the public functions' checks).
DROP FUNCTION @extschema@._bury(text, @extschema@.jobs[], text);
DROP FUNCTION @extschema@._dequeue_expired(text, int, interval, text);
DROP FUNCTION @extschema@._promote_delayed(text);
DROP FUNCTION @extschema@._free_keys(text, text[]);
DROP FUNCTION @extschema@._job_id(text, text);
DROP FUNCTION @extschema@._check_interval(interval, text, boolean);
DROP FUNCTION @extschema@.fail(text, bigint, bigint, text, interval);
DROP FUNCTION @extschema@.extend(text, bigint, bigint, interval);
DROP FUNCTION @extschema@.requeue(text, bigint, bigint);
DROP FUNCTION @extschema@.redrive(text, bigint[]);
DROP FUNCTION @extschema@.enqueue_batch(text, jsonb[], text[]);
DROP FUNCTION @extschema@._insert_jobs(text, jsonb[], text[], timestamptz[], int[], int[]);
DROP VIEW @extschema@.queue_stats;

-- Rows: two states, no lease columns.
UPDATE @extschema@.jobs
   SET state = CASE WHEN run_at > now() THEN 'delayed' ELSE 'ready' END
 WHERE state IN ('waiting', 'running');
ALTER TABLE @extschema@.jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE @extschema@.jobs ADD CONSTRAINT jobs_state_check CHECK (state IN ('ready', 'delayed'));
DROP INDEX @extschema@.jobs_lease_expires_at_idx;
ALTER TABLE @extschema@.jobs DROP COLUMN token, DROP COLUMN lease_expires_at, DROP COLUMN worker;

-- Tokens come from the lock table (durable across crashes) now.
ALTER EXTENSION lockext DROP SEQUENCE @extschema@.job_token_seq;
DROP SEQUENCE @extschema@.job_token_seq;

-- create_queue checked its arguments through _check, which goes.
CREATE OR REPLACE FUNCTION @extschema@.create_queue(queue text, partitions int DEFAULT 8)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    parent text;
BEGIN
    IF queue IS NULL THEN
        RAISE EXCEPTION 'queue name must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF partitions IS NULL THEN
        RAISE EXCEPTION 'partitions must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF queue !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'invalid queue name "%": use 1 to 40 lowercase letters, digits and _, starting with a letter', queue
            USING ERRCODE = '22023';
    END IF;
    IF partitions < 1 OR partitions > 1024 THEN
        RAISE EXCEPTION 'partitions must be between 1 and 1024, not %', partitions USING ERRCODE = '22023';
    END IF;
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
        -- Jobs are inserted, then deleted (a retry updates one): vacuum
        -- after a fixed number of dead rows, whatever the table's size.
        EXECUTE format($f$
            CREATE TABLE %s PARTITION OF %s FOR VALUES WITH (MODULUS %s, REMAINDER %s)
            WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0,
                  autovacuum_vacuum_threshold = 2000, autovacuum_vacuum_cost_delay = 0,
                  autovacuum_vacuum_insert_scale_factor = 0,
                  autovacuum_vacuum_insert_threshold = 10000)$f$,
            -- '$' cannot occur in a queue name, so no two queues' tables collide.
            format('@extschema@.%I', 'queue_' || queue || '$' || i), parent, partitions, i);
    END LOOP;
END $$;
ALTER FUNCTION @extschema@.create_queue(text, int) SET search_path = pg_catalog, pg_temp;
DROP FUNCTION @extschema@._check(boolean, text);

-- Enqueue many jobs in order; keys[i] goes with payloads[i]. Returns the ids.
CREATE FUNCTION @extschema@.enqueue_batch(queue text, payloads jsonb[], keys text[] DEFAULT NULL)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'lockext_enqueue_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;

-- A worker's one call per round: complete the jobs it holds (ids[i] with
-- tokens[i]; empty arrays for none), then dequeue the next ones, in one
-- transaction and one round trip.
CREATE FUNCTION @extschema@.complete_and_dequeue(queue text, ids bigint[], tokens bigint[],
                                                 batch int DEFAULT 1,
                                                 lease interval DEFAULT '30 seconds',
                                                 worker text DEFAULT NULL)
RETURNS TABLE(id bigint, key text, payload jsonb, attempt int, token bigint,
              enqueued_at timestamptz, lease_expires_at timestamptz)
AS 'MODULE_PATHNAME', 'lockext_complete_and_dequeue'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

-- Report a failed attempt: 'retry' (after retry_in, or backoff) or 'dead'
-- (after max_attempts); NULL when that token no longer holds the job.
CREATE FUNCTION @extschema@.fail(queue text, id bigint, token bigint, error text,
                                 retry_in interval DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'lockext_fail'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Heartbeat: extend a running job's lease; NULL when the token is stale.
CREATE FUNCTION @extschema@.extend(queue text, id bigint, token bigint, lease interval)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'lockext_extend'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Give a leased job back unfinished, as a worker that shuts down does: it
-- is ready again at once, still its key's head, and the attempt it was
-- leased for does not count. False when that token no longer holds it.
CREATE FUNCTION @extschema@.requeue(queue text, id bigint, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lockext_requeue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Move dead jobs (all, or those in `ids`) back to the queue as new jobs at
-- the back of their key's line. Returns how many moved.
CREATE FUNCTION @extschema@.redrive(queue text, ids bigint[] DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'lockext_redrive'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- drop_queue's helper: only for who may drop queues (the extension's owner).
REVOKE ALL ON FUNCTION @extschema@._purge_dead_jobs(text) FROM PUBLIC;

-- The ids of a queue's running jobs: its live job leases in the lock table.
CREATE FUNCTION @extschema@._running_jobs(queue text)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'lockext_running_jobs'
LANGUAGE C VOLATILE PARALLEL RESTRICTED ROWS 100;

-- One row per queue: jobs by state, and the age of the oldest ready job.
-- 'ready' counts jobs that may run now and are not running, including
-- those waiting behind an earlier job of their key.
CREATE VIEW @extschema@.queue_stats AS
SELECT q.queue,
       count(j.id) FILTER (WHERE (j.state = 'ready' OR j.run_at <= now()) AND NOT j.running) AS ready,
       count(j.id) FILTER (WHERE j.state = 'delayed' AND j.run_at > now() AND j.attempt = 0) AS scheduled,
       count(j.id) FILTER (WHERE j.running) AS running,
       count(j.id) FILTER (WHERE j.state = 'delayed' AND j.run_at > now() AND j.attempt > 0) AS retrying,
       (SELECT count(*) FROM @extschema@.dead_jobs d WHERE d.queue = q.queue) AS dead,
       now() - min(j.enqueued_at) FILTER (WHERE (j.state = 'ready' OR j.run_at <= now()) AND NOT j.running)
           AS oldest_ready_age
  FROM @extschema@.queues q
  LEFT JOIN LATERAL (
      SELECT x.id, x.state, x.run_at, x.attempt, x.enqueued_at,
             x.id = ANY (r.ids) AS running
        FROM @extschema@.jobs x,
             (SELECT ARRAY(SELECT @extschema@._running_jobs(q.queue)) AS ids) r
       WHERE x.queue = q.queue) j ON true
 GROUP BY q.queue;
GRANT SELECT ON @extschema@.queue_stats TO PUBLIC;

-- Plans of the C entry points are prepared with these settings pinned
-- (search_path, no sequential or bitmap scans): see src/queue_ops.cpp.
COMMENT ON TABLE @extschema@.jobs IS
    'Live jobs of every queue; a running job is a lease in the lock table (lockext.holders, names lockext.q/<queue>/...)';
