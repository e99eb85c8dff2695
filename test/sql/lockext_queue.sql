-- Job queues: the API, per-key order, leases and tokens, retries, dead
-- letters, and every bad input.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS lockext;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;
\pset null '(null)'
CREATE FUNCTION qtry(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Creating and dropping queues.
SELECT lockext.create_queue('orders', 4);
SELECT queue, partitions FROM lockext.queues;
SELECT count(*) AS partitions FROM pg_inherits WHERE inhparent = 'lockext.queue_orders'::regclass;
SELECT c.relname, c.reloptions FROM pg_class c
  JOIN pg_inherits i ON i.inhrelid = c.oid
 WHERE i.inhparent = 'lockext.queue_orders'::regclass ORDER BY c.relname LIMIT 1;
SELECT qtry($$SELECT lockext.create_queue('orders')$$);
-- Names that extend another queue's name do not collide with its tables.
SELECT lockext.create_queue('orders_1', 2);
SELECT lockext.drop_queue('orders_1');
SELECT qtry($$SELECT lockext.create_queue('bad', 0)$$);
SELECT qtry($$SELECT lockext.create_queue('bad', -3)$$);
SELECT qtry($$SELECT lockext.create_queue('Bad Name')$$);
SELECT qtry($$SELECT lockext.create_queue(NULL)$$);
SELECT qtry($$SELECT lockext.drop_queue('nosuch')$$);

-- Bad input to the job functions.
SELECT qtry($$SELECT lockext.enqueue('nosuch', '{}')$$);
SELECT qtry($$SELECT lockext.enqueue('orders', NULL)$$);
SELECT qtry($$SELECT lockext.enqueue('orders', '{}', max_attempts => 0)$$);
SELECT qtry($$SELECT lockext.enqueue_batch('orders', ARRAY['{}', '{}']::jsonb[], ARRAY['a'])$$);
SELECT qtry($$SELECT lockext.enqueue_batch('orders', ARRAY['{}', NULL]::jsonb[])$$);
SELECT qtry($$SELECT lockext.enqueue_batch('orders', NULL)$$);
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', 0)$$);
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', 1, '0 s')$$);
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', 1, '-1 s')$$);
SELECT qtry($$SELECT * FROM lockext.dequeue('nosuch')$$);
SELECT qtry($$SELECT lockext.complete('orders', ARRAY[1, 2]::bigint[], ARRAY[1]::bigint[])$$);
SELECT qtry($$SELECT lockext.extend('orders', 1, 1, '0 s')$$);
SELECT qtry($$SELECT lockext.fail('orders', 1, 1, 'x', '-1 s')$$);
-- Spans so long that now() plus them leaves timestamptz's range are capped.
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', 1, '100000000 years')$$);
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', 1, '1000 years')$$);
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', 1, NULL)$$);
-- Under the cap in total, but now() plus its months alone would overflow.
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', 1, '292300 years -2523000000 hours')$$);
SELECT qtry($$SELECT lockext.extend('orders', 1, 1, '100000000 years')$$);
SELECT qtry($$SELECT lockext.extend('orders', 1, 1, '292300 years -2523000000 hours')$$);
SELECT qtry($$SELECT lockext.extend('orders', 1, 1, NULL)$$);
SELECT qtry($$SELECT lockext.fail('orders', 1, 1, 'x', '100000000 years')$$);
SELECT qtry($$SELECT lockext.fail('orders', 1, 1, 'x', '-100000000 years')$$);
-- Bad input found by fuzzing the 0.1.0 queue. A run_at that is not finite
-- is 22008 (a keyed job that never runs would hold its key forever).
SELECT qtry($$SELECT lockext.enqueue('orders', '{}', 'k', run_at => 'infinity')$$);
SELECT qtry($$SELECT lockext.enqueue('orders', '{}', run_at => '-infinity')$$);
-- Array arguments have one dimension, else 2202E naming the argument.
SELECT qtry($$SELECT lockext.enqueue_batch('orders', '{{"{}", "{}"}, {"{}", "{}"}}'::jsonb[])$$);
SELECT qtry($$SELECT lockext.enqueue_batch('orders', ARRAY['{}'::jsonb, '{}'], ARRAY[['a'], ['b']])$$);
SELECT qtry($$SELECT lockext.complete('orders', ARRAY[[1, 2]]::bigint[], ARRAY[1, 2]::bigint[])$$);
SELECT qtry($$SELECT lockext.complete('orders', ARRAY[1, 2]::bigint[], ARRAY[[1, 2]]::bigint[])$$);
SELECT qtry($$SELECT lockext.redrive('orders', ARRAY[[1]]::bigint[])$$);
-- NULL where a value is required is 22004, whatever the argument.
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', NULL)$$);
SELECT qtry($$SELECT lockext.enqueue('orders', '{}', max_attempts => NULL)$$);
SELECT qtry($$SELECT lockext.create_queue('nullparts', NULL)$$);
SELECT qtry($$SELECT lockext.complete('orders', NULL, 1)$$);
SELECT qtry($$SELECT lockext.complete('orders', 1, NULL)$$);
SELECT qtry($$SELECT lockext.complete('orders', NULL::bigint[], ARRAY[1]::bigint[])$$);
SELECT qtry($$SELECT lockext.fail('orders', 1, NULL, 'x')$$);
SELECT qtry($$SELECT lockext.requeue('orders', NULL, 1)$$);
SELECT qtry($$SELECT lockext.extend('orders', 1, NULL, '1 min')$$);
-- Job leases live under lockext.q/ in the lock table: users cannot take them.
SELECT qtry($$SELECT lockext.acquire('lockext.q/orders/k/x')$$);
-- The internal helpers that skipped the public functions' checks are gone;
-- what is left of them is closed to PUBLIC or only checks.
SELECT count(*) AS old_helpers FROM pg_proc
 WHERE pronamespace = 'lockext'::regnamespace
   AND proname IN ('_bury', '_dequeue_expired', '_check_interval', '_free_keys', '_job_id',
                   '_insert_jobs', '_promote_delayed', '_check');
SELECT has_function_privilege('public', 'lockext._purge_dead_jobs(text)', 'execute') AS purge_public;
-- Nothing was lost by the failures above: the queue is still empty.
SELECT ready, scheduled, running, retrying, dead FROM lockext.queue_stats;
-- The transaction stays usable after a caught error.
BEGIN;
SELECT qtry($$SELECT lockext.enqueue('orders', NULL)$$);
SELECT lockext.enqueue('orders', '{"n": 0}') > 0 AS enqueued_in_same_tx;
ROLLBACK;
SELECT ready FROM lockext.queue_stats;

-- Per-key order: only the head of each key is handed out.
SELECT lockext.enqueue('orders', '{"n": 1}', 'k1') AS j1 \gset
SELECT lockext.enqueue('orders', '{"n": 2}', 'k1') AS j2 \gset
SELECT lockext.enqueue('orders', '{"n": 3}', 'k2') AS j3 \gset
SELECT lockext.enqueue('orders', '{"n": 4}') AS j4 \gset
-- A higher priority does not let a job overtake its own key...
SELECT lockext.enqueue('orders', '{"n": 5}', 'k1', priority => 10) AS j5 \gset
-- ...but does order it among free jobs.
SELECT lockext.enqueue('orders', '{"n": 6}', 'k3', priority => 5) AS j6 \gset
CREATE TEMP TABLE got AS SELECT * FROM lockext.dequeue('orders', 10, '1 minute', 'w1');
SELECT payload, key, attempt FROM got ORDER BY id;
SELECT (SELECT payload FROM lockext.dequeue('orders', 10) LIMIT 1) AS nothing_else_free;
SELECT ready, running FROM lockext.queue_stats;
-- Completing k1's head frees the next job of k1 (n=2), not the priority one.
SELECT lockext.complete('orders', id, token) FROM got WHERE key = 'k1';
CREATE TEMP TABLE got_k1 AS SELECT * FROM lockext.dequeue('orders', 10);
SELECT payload FROM got_k1;
SELECT lockext.complete('orders', ARRAY(SELECT id FROM got WHERE key IS DISTINCT FROM 'k1'),
                        ARRAY(SELECT token FROM got WHERE key IS DISTINCT FROM 'k1')) AS completed;
-- A completed job cannot be completed again, nor failed, nor extended.
SELECT lockext.complete('orders', id, token) AS again FROM got WHERE key = 'k2';
SELECT lockext.fail('orders', id, token, 'late') AS fail_after_complete FROM got WHERE key = 'k2';
SELECT lockext.extend('orders', id, token, '1 min') AS extend_after_complete FROM got WHERE key = 'k2';
DROP TABLE got;
-- Drain what is left, in key order: n=5 only after n=2 completed.
SELECT count(*) AS k1_blocked FROM lockext.dequeue('orders', 10);
SELECT lockext.complete('orders', id, token), payload FROM got_k1;
CREATE TEMP TABLE got AS SELECT * FROM lockext.dequeue('orders', 10);
SELECT lockext.complete('orders', id, token), payload FROM got;
DROP TABLE got; DROP TABLE got_k1;
SELECT ready, scheduled, running, retrying, dead FROM lockext.queue_stats;
SELECT count(*) AS rows_left FROM lockext.queue_orders;

-- Retries: a failed job goes back with backoff, keeps blocking its key,
-- and comes back with a new token and attempt + 1.
SELECT lockext.enqueue('orders', '{"n": 10}', 'r', max_attempts => 2) AS r1 \gset
SELECT lockext.enqueue('orders', '{"n": 11}', 'r') AS r2 \gset
CREATE TEMP TABLE got AS SELECT * FROM lockext.dequeue('orders', 10);
SELECT payload, attempt FROM got;
SELECT lockext.fail('orders', id, token, 'boom') FROM got;
SELECT lockext.fail('orders', id, token, 'boom') AS stale_fail FROM got;
SELECT retrying, ready FROM lockext.queue_stats;
SELECT run_at > now() AS backed_off, last_error FROM lockext.queue_orders WHERE id = :r1;
SELECT count(*) AS nothing_free_while_retrying FROM lockext.dequeue('orders', 10);
UPDATE lockext.queue_orders SET run_at = now() WHERE id = :r1;
CREATE TEMP TABLE got2 AS SELECT * FROM lockext.dequeue('orders', 10);
SELECT got2.payload, got2.attempt, got2.token > got.token AS new_token FROM got2, got;
-- Out of attempts: the job dies, and stops blocking its key.
SELECT lockext.fail('orders', id, token, 'boom again') FROM got2;
SELECT id = :r1 AS same_job, attempt, max_attempts, last_error FROM lockext.dead_jobs;
SELECT dead FROM lockext.queue_stats;
CREATE TEMP TABLE got3 AS SELECT * FROM lockext.dequeue('orders', 10);
SELECT payload FROM got3;
DROP TABLE got; DROP TABLE got2;
-- Redrive puts it back, at the back of its key's line.
SELECT lockext.redrive('orders') AS redriven;
SELECT dead, running FROM lockext.queue_stats;
SELECT count(*) AS blocked_behind_running FROM lockext.dequeue('orders', 10);
SELECT lockext.complete('orders', id, token) FROM got3;
DROP TABLE got3;
SELECT payload, attempt FROM lockext.dequeue('orders', 10);
SELECT lockext.redrive('orders', ARRAY[12345]::bigint[]) AS nothing_to_redrive;
DELETE FROM lockext.queue_orders;

-- Leases: an expired lease is handed out again with a new token and
-- attempt + 1; the stale token can no longer complete, fail or extend.
SELECT lockext.enqueue('orders', '{"n": 20}', 'l') AS l1 \gset
CREATE TEMP TABLE first AS SELECT * FROM lockext.dequeue('orders', 1, '200 ms');
SELECT lockext.extend('orders', id, token, '300 ms') > now() AS extended FROM first;
SELECT count(*) AS still_leased FROM lockext.dequeue('orders', 1);
SELECT pg_sleep(0.4);
CREATE TEMP TABLE second AS SELECT * FROM lockext.dequeue('orders', 1, '1 minute');
SELECT s.id = f.id AS same_job, s.attempt, s.token > f.token AS new_token FROM first f, second s;
SELECT lockext.complete('orders', id, token) AS stale_complete FROM first;
SELECT lockext.extend('orders', id, token, '1 min') AS stale_extend FROM first;
SELECT lockext.fail('orders', id, token, 'x') AS stale_fail FROM first;
SELECT lockext.complete('orders', id, token) AS live_complete FROM second;
DROP TABLE first; DROP TABLE second;
-- A job whose lease runs out on its last attempt goes dead.
SELECT lockext.enqueue('orders', '{"n": 30}', max_attempts => 1) AS e1 \gset
SELECT count(*) FROM lockext.dequeue('orders', 1, '100 ms');
SELECT pg_sleep(0.2);
SELECT count(*) AS redelivered FROM lockext.dequeue('orders', 1);
SELECT last_error, attempt FROM lockext.dead_jobs WHERE id = :e1;

-- Scheduled jobs wait for run_at.
SELECT lockext.enqueue('orders', '{"n": 40}', run_at => now() + interval '1 hour') AS s1 \gset
SELECT scheduled FROM lockext.queue_stats;
SELECT count(*) AS not_yet FROM lockext.dequeue('orders', 1);

-- enqueue_batch keeps order within a key and returns ids in order.
DELETE FROM lockext.queue_orders;
SELECT array_agg(id ORDER BY id) = array_agg(id) AS ids_in_order
  FROM lockext.enqueue_batch('orders', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[],
                             ARRAY['b', 'b', 'c']) AS id;
SELECT payload FROM lockext.dequeue('orders', 10) ORDER BY id;
-- In a batch, a key's job waits when the key already has live jobs or an
-- earlier job in the same batch; unkeyed jobs never wait. (Only the heads are
-- handed out; the rollback gives their leases back.)
DELETE FROM lockext.queue_orders;
SELECT lockext.enqueue('orders', '{"n": 0}', 'x') > 0 AS x_head;
CREATE TEMP TABLE batch_ids AS
SELECT id, n FROM lockext.enqueue_batch('orders',
    ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}', '{"n": 5}']::jsonb[],
    ARRAY['x', 'y', 'y', NULL, 'z']) WITH ORDINALITY AS b(id, n);
BEGIN;
SELECT payload->>'n' AS n, key FROM lockext.dequeue('orders', 10) ORDER BY id;
ROLLBACK;
SELECT payload->>'n' AS n, key, state FROM lockext.queue_orders ORDER BY id;
-- The ids returned are the ids stored, in payload order.
SELECT array_agg(b.id ORDER BY b.n) = array_agg(j.id ORDER BY b.n) AS returned_ids_are_stored
  FROM batch_ids b JOIN lockext.queue_orders j ON (j.payload->>'n')::int = b.n;
SELECT count(*) AS matched FROM batch_ids b JOIN lockext.queue_orders j USING (id);
DROP TABLE batch_ids;
DELETE FROM lockext.queue_orders;

-- enqueue notifies the queue's channel once the transaction commits (the
-- database's notifier worker sends it a moment later: poll for it).
SELECT dblink_connect('listener', format('host=%s port=%s dbname=%s user=%s',
    split_part(current_setting('unix_socket_directories'), ',', 1),
    current_setting('port'), current_database(), current_user));
SELECT dblink_exec('listener', 'LISTEN ' || lockext.queue_channel('orders'));
-- The channels heard on the first poll that hears any (10 s at most).
CREATE FUNCTION await_notify(conn text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1000 LOOP
        RETURN QUERY SELECT DISTINCT notify_name FROM dblink_get_notify(conn);
        IF FOUND THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
BEGIN;
SELECT lockext.enqueue('orders', '{"n": 50}') > 0 AS enqueued;
SELECT pg_sleep(0.1);
SELECT count(*) AS before_commit FROM dblink_get_notify('listener');
COMMIT;
SELECT * FROM await_notify('listener') AS notify_name;
SELECT dblink_disconnect('listener');

-- No head-of-line blocking: with one key stuck (its head running, or
-- retrying with backoff) and thousands of jobs queued behind it, the other
-- keys drain as fast as with no stuck key at all.
CREATE TABLE drains (label text, seconds float8);
-- Dequeue and complete `n` jobs, one transaction each as a worker would,
-- and record how long it took.
CREATE PROCEDURE drain(label text, n int) LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    j record;
BEGIN
    FOR i IN 1..n LOOP
        SELECT * INTO j FROM lockext.dequeue('orders', 1);
        IF j.id IS NULL OR j.key = 'stuck' THEN
            RAISE EXCEPTION 'drain %: got %', i, j;
        END IF;
        PERFORM lockext.complete('orders', j.id, j.token);
        COMMIT;
    END LOOP;
    INSERT INTO drains VALUES (label, extract(epoch FROM clock_timestamp() - t0));
END $$;
DELETE FROM lockext.queue_orders;
SELECT count(*) FROM lockext.enqueue_batch('orders',
    array_fill('{}'::jsonb, ARRAY[1500]), ARRAY(SELECT 'k' || (g % 300) FROM generate_series(1, 1500) g));
-- Same table state for every run: dead rows of the last run vacuumed.
VACUUM lockext.jobs;
CALL drain('baseline', 500);
CALL drain('baseline', 500);
CALL drain('baseline', 500);
-- A stuck key: its head is running (never completed), 5,000 jobs behind it.
SELECT count(*) FROM lockext.enqueue_batch('orders',
    array_fill('{}'::jsonb, ARRAY[5000]), array_fill('stuck'::text, ARRAY[5000]));
CREATE TEMP TABLE stuck AS SELECT * FROM lockext.dequeue('orders', 1, '1 hour');
SELECT count(*) AS stuck_head_taken FROM stuck;
SELECT count(*) FROM lockext.enqueue_batch('orders',
    array_fill('{}'::jsonb, ARRAY[1500]), ARRAY(SELECT 'k' || (g % 300) FROM generate_series(1, 1500) g));
VACUUM lockext.jobs;
CALL drain('running', 500);
CALL drain('running', 500);
CALL drain('running', 500);
-- The same key stuck retrying with backoff.
SELECT lockext.fail('orders', id, token, 'slow down', '1 hour') FROM stuck;
DROP TABLE stuck;
SELECT count(*) FROM lockext.enqueue_batch('orders',
    array_fill('{}'::jsonb, ARRAY[1500]), ARRAY(SELECT 'k' || (g % 300) FROM generate_series(1, 1500) g));
VACUUM lockext.jobs;
CALL drain('retrying', 500);
CALL drain('retrying', 500);
CALL drain('retrying', 500);
-- Each phase drains in three slices; the fastest slice of each is compared,
-- so that a moment of load on a shared machine does not decide the test.
WITH best AS (SELECT label, min(seconds) AS seconds FROM drains GROUP BY label)
SELECT r.seconds < 2 * b.seconds AS running_key_costs_others_nothing,
       t.seconds < 2 * b.seconds AS retrying_key_costs_others_nothing
  FROM best b, best r, best t
 WHERE b.label = 'baseline' AND r.label = 'running' AND t.label = 'retrying';
SELECT count(*) AS stuck_jobs_untouched FROM lockext.queue_orders WHERE key = 'stuck';
SELECT key, count(*) AS jobs FROM lockext.queue_orders GROUP BY key;
DELETE FROM lockext.queue_orders;
DROP TABLE drains;

-- Retrying forever: backoff stays capped however many attempts a job has
-- had (2^attempt overflowed float8 past 1024), and fail still retries.
SELECT lockext.backoff(1100) <= interval '1 hour' AS capped,
       lockext.backoff(2147483647) >= interval '30 minutes' AS still_long;
SELECT lockext.enqueue('orders', '{"n": "forever"}', max_attempts => 5000) AS fid \gset
UPDATE lockext.queue_orders SET attempt = 1100 WHERE id = :fid;
SELECT token AS ftok FROM lockext.dequeue('orders') \gset
SELECT lockext.fail('orders', :fid, :ftok, 'again') AS after_1101_attempts;
DELETE FROM lockext.queue_orders WHERE id = :fid;

-- Job ids never wrap into negative numbers: a sequence set past the
-- largest id is a clear 22003, and nothing is enqueued.
SELECT last_value AS idseq FROM lockext.job_id_seq \gset
SELECT setval('lockext.job_id_seq', 9007199254740991);
SELECT qtry($$SELECT lockext.enqueue('orders', '{}', 'k')$$);
SELECT qtry($$SELECT lockext.enqueue_batch('orders', ARRAY['{}'::jsonb])$$);
SELECT setval('lockext.job_id_seq', :idseq);
SELECT count(*) AS nothing_enqueued FROM lockext.queue_orders;

-- Too long a span on a held job changes nothing, and the transaction goes
-- on. A job's lease is a lock lease: at most lockext.max_ttl (a day here);
-- a retry may wait up to 1000 years.
BEGIN;
SELECT lockext.enqueue('orders', '{"n": 0}') > 0 AS enqueued FROM generate_series(1, 2);
CREATE TEMP TABLE held AS SELECT * FROM lockext.dequeue('orders', 1, '1 minute');
SELECT qtry(format($$SELECT lockext.extend('orders', %s, %s, '100000000 years')$$, id, token)) FROM held;
SELECT qtry(format($$SELECT lockext.fail('orders', %s, %s, 'x', '100000000 years')$$, id, token)) FROM held;
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', 1, '100000000 years')$$);
SELECT qtry(format($$SELECT lockext.extend('orders', %s, %s, '2 days')$$, id, token)) FROM held;
SELECT qtry($$SELECT * FROM lockext.dequeue('orders', 1, '2 days')$$);
-- The running job is a lease in the lock table, with the job's token and expiry.
SELECT h.token = held.token AS same_token, h.expires_at = held.lease_expires_at AS same_lease
  FROM lockext.holders h JOIN held ON h.name = 'lockext.q/orders/j/' || held.id;
SELECT ready, running FROM lockext.queue_stats;
SELECT lockext.extend('orders', id, token, '12 hours') > now() + interval '11 hours' AS extended
  FROM held;
SELECT lockext.fail('orders', id, token, 'x', '999 years') AS failed FROM held;
SELECT attempt, lease_expires_at > now() + interval '11 hours' AS leased
  FROM lockext.dequeue('orders', 1, '12 hours');
ROLLBACK;
SELECT count(*) AS rolled_back FROM lockext.queue_orders;

-- requeue: a leased job goes back ready, still its key's head, with its
-- attempt not counted; the old token is stale from then on.
SELECT lockext.create_queue('rq', 2);
SELECT lockext.enqueue('rq', '{"n": 1}', 'k') AS rq1 \gset
SELECT lockext.enqueue('rq', '{"n": 2}', 'k') AS rq2 \gset
SELECT id = :rq1 AS rq_head, attempt AS rq_attempt, token AS rq_token FROM lockext.dequeue('rq', 10) \gset
SELECT :'rq_head' AS head, :rq_attempt AS attempt;
SELECT lockext.requeue('rq', :rq1, :rq_token) AS requeued;
SELECT lockext.requeue('rq', :rq1, :rq_token) AS requeued_again;
SELECT lockext.complete('rq', :rq1, :rq_token) AS stale_complete;
SELECT lockext.extend('rq', :rq1, :rq_token, '1 minute') AS stale_extend;
SELECT id = :rq1 AS first, state, attempt FROM lockext.jobs
 WHERE queue = 'rq' ORDER BY id;
SELECT ready, running FROM lockext.queue_stats WHERE queue = 'rq';
SELECT id = :rq1 AS same_head, attempt, token > :rq_token AS newer_token
  FROM lockext.dequeue('rq', 10);
SELECT lockext.requeue('rq', 123, 456) AS unknown_job;
SELECT qtry($$SELECT lockext.requeue('no_such_queue', 1, 1)$$);
SELECT qtry($$SELECT lockext.requeue(NULL, 1, 1)$$);
SELECT lockext.drop_queue('rq');

-- complete_and_dequeue: a worker's one call per round finishes what it
-- holds, then takes the next jobs (here the key's next job is not free yet:
-- the completed head's lease goes at commit).
SELECT lockext.create_queue('cd', 1);
SELECT count(*) FROM lockext.enqueue_batch('cd', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[],
                                           ARRAY['a', 'a', 'b']);
CREATE TEMP TABLE cd1 AS SELECT * FROM lockext.complete_and_dequeue('cd', '{}', '{}', 10);
SELECT payload->>'n' AS n, attempt FROM cd1 ORDER BY id;
CREATE TEMP TABLE cd2 AS
SELECT * FROM lockext.complete_and_dequeue('cd', ARRAY(SELECT id FROM cd1), ARRAY(SELECT token FROM cd1), 10);
SELECT count(*) AS key_a_not_free_within_the_call FROM cd2;
SELECT payload->>'n' AS n FROM lockext.complete_and_dequeue('cd', '{}', '{}', 10);
SELECT ready, running FROM lockext.queue_stats WHERE queue = 'cd';
SELECT qtry($$SELECT * FROM lockext.complete_and_dequeue('cd', NULL, '{}')$$);
SELECT qtry($$SELECT * FROM lockext.complete_and_dequeue('cd', '{1}', '{}')$$);
SELECT qtry($$SELECT * FROM lockext.complete_and_dequeue('cd', '{}', '{}', 0)$$);
SELECT qtry($$SELECT * FROM lockext.complete_and_dequeue('cd', '{}', '{}', 1, NULL)$$);
SELECT qtry($$SELECT * FROM lockext.complete_and_dequeue('no_such_queue', '{}', '{}')$$);
DROP TABLE cd1; DROP TABLE cd2;
SELECT lockext.drop_queue('cd');

SELECT lockext.drop_queue('orders');
SELECT count(*) AS queues FROM lockext.queues;
SELECT to_regclass('lockext.queue_orders') AS gone;
