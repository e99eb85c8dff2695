-- Privileges: renew and release need the token and the holder's role;
-- force_release is for administrators; other roles' tokens and client
-- addresses are hidden, as pg_stat_activity hides their details.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS lockext;
RESET client_min_messages;
CREATE ROLE regress_lockext_alice;
CREATE ROLE regress_lockext_bob;
CREATE ROLE regress_lockext_admin;
GRANT regress_lockext_alice TO regress_lockext_admin;
\pset null '(null)'

SET ROLE regress_lockext_alice;
SELECT lockext.acquire('acct:1', '1 minute') AS alice \gset
SELECT token = :alice AS own_token_visible FROM lockext.holders WHERE name = 'acct:1';
RESET ROLE;

SET ROLE regress_lockext_bob;
-- Bob sees that the lock is held, but not the token.
SELECT name, mode, token FROM lockext.holders WHERE name = 'acct:1';
-- Knowing (guessing) the token is not enough.
SELECT lockext.release('acct:1', :alice);
SELECT lockext.renew('acct:1', :alice);
-- A wrong token is simply "not held", whoever asks.
SELECT lockext.release('acct:1', :alice + 1) AS wrong_token;
-- force_release is not granted to PUBLIC.
SELECT lockext.force_release('acct:1');
RESET ROLE;

-- A member of the holder's role may renew and release it.
SET ROLE regress_lockext_admin;
SELECT token = :alice AS member_sees_token FROM lockext.holders WHERE name = 'acct:1';
SELECT lockext.renew('acct:1', :alice) IS NOT NULL AS member_renewed;
RESET ROLE;

-- An administrator may force a release, token or not.
GRANT EXECUTE ON FUNCTION lockext.force_release(text) TO regress_lockext_bob;
SET ROLE regress_lockext_bob;
SELECT lockext.force_release('acct:1') AS forced;
SELECT lockext.force_release('acct:1') AS nothing_left;
RESET ROLE;
SELECT lockext.release('acct:1', :alice) AS token_dead_after_force;
REVOKE EXECUTE ON FUNCTION lockext.force_release(text) FROM regress_lockext_bob;

-- pg_read_all_stats members see every token, as in pg_stat_activity.
SET ROLE regress_lockext_alice;
SELECT lockext.acquire('acct:2', '1 minute') AS alice2 \gset
RESET ROLE;
GRANT pg_read_all_stats TO regress_lockext_bob;
SET ROLE regress_lockext_bob;
SELECT token = :alice2 AS stats_reader_sees_token FROM lockext.holders WHERE name = 'acct:2';
RESET ROLE;
SELECT lockext.release('acct:2', :alice2);

DROP ROLE regress_lockext_admin;
DROP ROLE regress_lockext_alice;
DROP ROLE regress_lockext_bob;
