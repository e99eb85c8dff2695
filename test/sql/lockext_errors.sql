-- Bad input: every case raises a clear error with a SQLSTATE, and the
-- session (and its transaction, where PostgreSQL allows) stays usable.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS lockext;
RESET client_min_messages;
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Names.
SELECT try($$SELECT lockext.acquire(NULL)$$);
SELECT try($$SELECT lockext.acquire('')$$);
SELECT try($$SELECT lockext.acquire(repeat('n', 129))$$);
SELECT try($$SELECT lockext.renew(NULL, 1)$$);
SELECT try($$SELECT lockext.release('', 1)$$);
SELECT try($$SELECT lockext.force_release(NULL)$$);

-- TTL.
SELECT try($$SELECT lockext.acquire('x', '0 s')$$);
SELECT try($$SELECT lockext.acquire('x', '-1 s')$$);
SELECT try($$SELECT lockext.acquire('x', '2 days')$$);
SELECT try($$SELECT lockext.acquire('x', '1000000 years')$$);
-- So negative that it overflows 64-bit microseconds: still negative.
SELECT try($$SELECT lockext.acquire('x', '-100000000 years')$$);
SELECT try($$SELECT lockext.acquire('x', NULL)$$);
SELECT try($$SELECT lockext.renew('x', 1, '0 s')$$);
SELECT try($$SELECT lockext.renew('x', 1, '2 days')$$);

-- Wait.
SELECT try($$SELECT lockext.acquire('x', wait => '-1 ms')$$);
SELECT try($$SELECT lockext.acquire('x', wait => '-100000000 years')$$);

-- Mode, scope, max_holders.
SELECT try($$SELECT lockext.acquire('x', mode => 'exclusve')$$);
SELECT try($$SELECT lockext.acquire('x', mode => NULL)$$);
SELECT try($$SELECT lockext.acquire('x', scope => 'forever')$$);
SELECT try($$SELECT lockext.acquire('x', scope => NULL)$$);
SELECT try($$SELECT lockext.acquire('x', mode => 'semaphore', max_holders => 0)$$);
SELECT try($$SELECT lockext.acquire('x', mode => 'semaphore', max_holders => -5)$$);
SELECT try($$SELECT lockext.acquire('x', max_holders => 2)$$);
SELECT try($$SELECT lockext.acquire('x', owner => repeat('o', 129))$$);

-- Modes that conflict on one name.
SELECT lockext.acquire('sem', mode => 'semaphore', max_holders => 3) AS sem \gset
SELECT try($$SELECT lockext.acquire('sem', mode => 'semaphore', max_holders => 4)$$);
SELECT try($$SELECT lockext.acquire('sem')$$);
SELECT try($$SELECT lockext.acquire('sem', mode => 'shared')$$);
SELECT lockext.release('sem', :sem);
SELECT lockext.acquire('rw', mode => 'shared') AS rw \gset
SELECT try($$SELECT lockext.acquire('rw', mode => 'semaphore', max_holders => 2)$$);
SELECT lockext.release('rw', :rw);
-- Once the name is free, any kind may use it.
SELECT lockext.acquire('sem') AS sem2 \gset
SELECT lockext.release('sem', :sem2);

-- Wrong tokens: renew gives NULL and release false, and change nothing.
SELECT lockext.acquire('held', '1 minute') AS held \gset
SELECT lockext.renew('held', :held + 1) IS NULL AS wrong_token_renew;
SELECT lockext.release('held', :held + 1) AS wrong_token_release;
SELECT lockext.renew('held', -1) IS NULL AS negative_token_renew;
SELECT lockext.release('nosuchlock', :held) AS wrong_name_release;
SELECT try($$SELECT lockext.release('held', NULL)$$);
SELECT try($$SELECT lockext.renew('held', NULL)$$);
SELECT count(*) AS still_held FROM lockext.holders WHERE name = 'held';
SELECT lockext.release('held', :held) AS right_token_release;

-- The transaction stays usable after a caught error, and aborts cleanly
-- after an uncaught one.
BEGIN;
SELECT try($$SELECT lockext.acquire('', '1 s')$$);
SELECT lockext.acquire('in-tx', scope => 'transaction') IS NOT NULL AS still_usable;
COMMIT;
BEGIN;
SELECT lockext.acquire('in-tx2', scope => 'transaction') IS NOT NULL AS got;
SELECT lockext.acquire('in-tx2', '0 s');
ROLLBACK;
SELECT count(*) AS nothing_left FROM lockext.holders WHERE name LIKE 'in-tx%';

-- A full table: a clear error, nothing else breaks, and space comes back.
SELECT slots_total - slots_used AS free FROM lockext.stats \gset
CREATE TABLE fill (n int, token bigint);
DO $$
BEGIN
    FOR i IN 1..100000 LOOP
        INSERT INTO fill VALUES (i, lockext.acquire('fill:' || i, '10 minutes'));
    END LOOP;
EXCEPTION WHEN configuration_limit_exceeded THEN
    RAISE NOTICE 'full: %', SQLERRM;
END $$;
SELECT try($$SELECT lockext.acquire('one-more')$$);
SELECT slots_used = slots_total AS full FROM lockext.stats;
-- The transaction above rolled back, but leases outlive transactions: count them.
SELECT count(*) = :free AS all_slots_taken FROM lockext.holders WHERE name LIKE 'fill:%';
SELECT sum(lockext.force_release(name)) = :free AS freed FROM lockext.holders WHERE name LIKE 'fill:%';
SELECT lockext.acquire('one-more') AS one \gset
SELECT lockext.release('one-more', :one) AS works_again;
DROP TABLE fill;
