-- Objects the queue benchmark (scripts/bench_queue.sh) needs: the extension
-- and a function that gives every run a fresh lockext queue and a fresh
-- plain SKIP LOCKED queue (the baseline).
CREATE EXTENSION IF NOT EXISTS lockext;

-- Drop and recreate lockext queue `q` (default 8 partitions, as create_queue
-- configures it) and the plain baseline table `plain_queue`.
CREATE OR REPLACE FUNCTION bench_queue_reset(q text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM lockext.queues r WHERE r.queue = q) THEN
        PERFORM lockext.drop_queue(q);
    END IF;
    PERFORM lockext.create_queue(q);
    DROP TABLE IF EXISTS plain_queue;
    -- The baseline: no ordering, no lease, no retries.
    CREATE TABLE plain_queue (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
END $$;

-- Jobs left in lockext queue `q` (any state) and its dead jobs, from the
-- public queue_stats view (so the benchmark does not depend on the tables).
CREATE OR REPLACE FUNCTION bench_queue_left(q text, OUT waiting bigint, OUT dead bigint)
LANGUAGE sql AS $$
    SELECT s.ready + s.scheduled + s.running + s.retrying, s.dead
      FROM lockext.queue_stats s WHERE s.queue = q
$$;

-- Drop and recreate pgmq queue `q` (pgmq.create: a plain logged table, not
-- partitioned). Does nothing when the pgmq extension is not installed in
-- this database (bench_queue.sh creates it only when PGMQ_SRC builds).
CREATE OR REPLACE FUNCTION bench_pgmq_reset(q text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgmq') THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = q) THEN
        PERFORM pgmq.drop_queue(q);
    END IF;
    PERFORM pgmq.create(q);
END $$;
