-- Backend exits: a terminated backend leaves no waiter behind and drops its
-- session locks; its leases live on until they expire or are released.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS lockext;
RESET client_min_messages;
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE FUNCTION here() RETURNS text LANGUAGE sql AS $$
    SELECT format('host=%s port=%s dbname=%s user=%s',
                  split_part(current_setting('unix_socket_directories'), ',', 1),
                  current_setting('port'), current_database(), current_user)
$$;
-- Wait (bounded) until `sql` returns true.
CREATE FUNCTION await(sql text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE ok boolean;
BEGIN
    FOR i IN 1..2000 LOOP
        -- pg_stat_activity is read once per transaction unless cleared.
        PERFORM pg_stat_clear_snapshot();
        EXECUTE sql INTO ok;
        IF ok THEN RETURN true; END IF;
        PERFORM pg_sleep(0.005);
    END LOOP;
    RETURN false;
END $$;

-- The token an async acquire on dblink `conn` returned (NULL if it
-- failed, with the error as a NOTICE); leaves the connection ready for reuse.
CREATE FUNCTION result_of(conn text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE tok bigint;
BEGIN
    SELECT token INTO tok FROM dblink_get_result(conn, false) AS t(token bigint);
    PERFORM * FROM dblink_get_result(conn, false) AS t(token bigint);
    RETURN tok;
END $$;

SELECT lockext.acquire('contended', '1 minute') AS mine \gset
SELECT dblink_connect('w', here());
SELECT pid AS wpid FROM dblink('w', 'SELECT pg_backend_pid()') AS t(pid int) \gset
-- The other backend takes a session lock and a lease, then waits on ours.
SELECT * FROM dblink('w', $$SELECT lockext.acquire('its-session', NULL, scope => 'session') IS NOT NULL$$) AS t(got boolean);
SELECT * FROM dblink('w', $$SELECT lockext.acquire('its-lease', '1 minute') IS NOT NULL$$) AS t(got boolean);
SELECT dblink_send_query('w', $$SELECT lockext.acquire('contended', '1 minute', '1 minute')$$);
SELECT await($$SELECT count(*) = 1 FROM lockext.waiters WHERE name = 'contended'$$) AS queued;
SELECT name, scope FROM lockext.holders WHERE pid = :wpid ORDER BY name;

SELECT pg_terminate_backend(:wpid);
SELECT await(format('SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)', :wpid)) AS gone;
SELECT count(*) AS waiters_left FROM lockext.waiters;
SELECT name, scope FROM lockext.holders WHERE pid = :wpid ORDER BY name;
SELECT dblink_disconnect('w');

-- Our lock was untouched; releasing it hands it to nobody.
SELECT lockext.release('contended', :mine) AS released;
SELECT lockext.force_release('its-lease') AS cleaned_up;

-- Waiters notice a lease handed to the waiter ahead of them expiring: W2
-- must get the lock about when W1's 1 s lease runs out, not at its deadline.
SELECT dblink_connect('w1', here());
SELECT dblink_connect('w2', here());
SELECT lockext.acquire('handed', NULL, scope => 'session') AS h \gset
SELECT dblink_send_query('w1', $$SELECT lockext.acquire('handed', '1 s', '30 s')$$);
SELECT await($$SELECT count(*) = 1 FROM lockext.waiters WHERE name = 'handed'$$) AS w1_queued;
SELECT dblink_send_query('w2', $$SELECT lockext.acquire('handed', '30 s', '15 s')$$);
SELECT await($$SELECT count(*) = 2 FROM lockext.waiters WHERE name = 'handed'$$) AS w2_queued;
SELECT clock_timestamp() AS released_at \gset
SELECT lockext.release('handed', :h);
SELECT result_of('w1') IS NOT NULL AS w1_granted;
SELECT result_of('w2') IS NOT NULL AS w2_granted,
       clock_timestamp() - :'released_at'::timestamptz < '5 s' AS at_w1_expiry;
SELECT lockext.force_release('handed');

-- A renewal that shortens a lease wakes the waiter for the new expiry.
SELECT lockext.acquire('shortened', '1 hour') AS s \gset
SELECT dblink_send_query('w1', $$SELECT lockext.acquire('shortened', '30 s', '20 s')$$);
SELECT await($$SELECT count(*) = 1 FROM lockext.waiters WHERE name = 'shortened'$$) AS queued;
SELECT clock_timestamp() AS renewed_at \gset
SELECT lockext.renew('shortened', :s, '300 ms') IS NOT NULL AS renewed;
SELECT result_of('w1') IS NOT NULL AS granted,
       clock_timestamp() - :'renewed_at'::timestamptz < '5 s' AS at_new_expiry;
SELECT lockext.force_release('shortened');

-- A waiter whose turn comes while the table is full fails at once with
-- 53400 instead of sleeping with nobody to wake it.
SELECT lockext.acquire('full', '10 minutes') AS f \gset
CREATE TABLE fill (n int, token bigint);
DO $$
BEGIN
    FOR i IN 1..100000 LOOP
        PERFORM lockext.acquire('fill:' || i, '10 minutes');
    END LOOP;
EXCEPTION WHEN configuration_limit_exceeded THEN
    NULL;
END $$;
SELECT slots_used = slots_total AS full FROM lockext.stats;
SELECT dblink_send_query('w1', $$SELECT lockext.acquire('full', '30 s', '20 s', 'shared')$$);
SELECT await($$SELECT count(*) = 1 FROM lockext.waiters WHERE name = 'full'$$) AS s1_queued;
SELECT dblink_send_query('w2', $$SELECT lockext.acquire('full', '30 s', '20 s', 'shared')$$);
SELECT await($$SELECT count(*) = 2 FROM lockext.waiters WHERE name = 'full'$$) AS s2_queued;
SELECT clock_timestamp() AS released_at \gset
SELECT lockext.release('full', :f);
SELECT result_of('w1') IS NOT NULL AS s1_took_the_freed_slot;
SELECT result_of('w2') IS NULL AS s2_failed;
SELECT clock_timestamp() - :'released_at'::timestamptz < '5 s' AS failed_at_once;
SELECT count(*) AS waiters_left FROM lockext.waiters;
SELECT sum(lockext.force_release(name)) > 0 AS freed FROM lockext.holders WHERE name LIKE 'fill:%' OR name = 'full';
DROP TABLE fill;
SELECT dblink_disconnect('w1');
SELECT dblink_disconnect('w2');
