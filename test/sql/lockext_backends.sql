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
        EXECUTE sql INTO ok;
        IF ok THEN RETURN true; END IF;
        PERFORM pg_sleep(0.005);
    END LOOP;
    RETURN false;
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
