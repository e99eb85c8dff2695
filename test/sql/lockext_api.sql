-- The SQL API: grant, refuse, renew, release, modes, scopes, expiry, views.
CREATE EXTENSION lockext;
\pset null '(null)'

-- Exclusive: a token, then refusal while held.
SELECT lockext.acquire('job') AS t1 \gset
SELECT :t1 > 0 AS got_token;
SELECT lockext.acquire('job') IS NULL AS refused_while_held;
SELECT name, mode, scope, owner, token = :t1 AS token_matches, pid = pg_backend_pid() AS mine,
       application_name, expires_at - acquired_at AS ttl, renewed_at
  FROM lockext.holders;

-- Renew extends the lease and records when; NULL ttl keeps the granted one.
SELECT lockext.renew('job', :t1, '1 minute') - now() > '50 s' AS extended;
SELECT renewed_at IS NOT NULL AS renewed, expires_at - renewed_at AS ttl FROM lockext.holders WHERE name = 'job';
SELECT lockext.renew('job', :t1) - now() > '50 s' AS kept_ttl;

-- Release: true once, then false; a released token renews to NULL.
SELECT lockext.release('job', :t1) AS released;
SELECT lockext.release('job', :t1) AS released_again;
SELECT lockext.renew('job', :t1) AS renew_after_release;
SELECT count(*) AS holders FROM lockext.holders;

-- Fencing tokens only rise, across names and releases.
SELECT lockext.acquire('job') AS t2 \gset
SELECT lockext.acquire('other') AS t3 \gset
SELECT :t2 > :t1 AND :t3 > :t2 AS tokens_rise;
SELECT lockext.release('job', :t2) AND lockext.release('other', :t3) AS released_both;

-- Shared: many holders; exclusive is refused until all are gone.
SELECT lockext.acquire('cfg', mode => 'shared') AS s1 \gset
SELECT lockext.acquire('cfg', mode => 'shared') AS s2 \gset
SELECT :s2 > :s1 AS second_shared_granted;
SELECT lockext.acquire('cfg') IS NULL AS exclusive_refused;
SELECT mode, count(*) FROM lockext.holders WHERE name = 'cfg' GROUP BY mode;
SELECT lockext.release('cfg', :s1), lockext.release('cfg', :s2);
SELECT lockext.acquire('cfg') AS x1 \gset
SELECT lockext.acquire('cfg', mode => 'shared') IS NULL AS shared_refused_by_exclusive;
SELECT lockext.release('cfg', :x1);

-- Semaphore: at most max_holders at once.
SELECT lockext.acquire('pool', mode => 'semaphore', max_holders => 3) AS p1 \gset
SELECT lockext.acquire('pool', mode => 'semaphore', max_holders => 3) AS p2 \gset
SELECT lockext.acquire('pool', mode => 'semaphore', max_holders => 3) AS p3 \gset
SELECT lockext.acquire('pool', mode => 'semaphore', max_holders => 3) IS NULL AS fourth_refused;
SELECT count(*) AS holders FROM lockext.holders WHERE name = 'pool';
SELECT lockext.release('pool', :p2);
SELECT lockext.acquire('pool', mode => 'semaphore', max_holders => 3) AS p4 \gset
SELECT :p4 > :p3 AS slot_reused;
SELECT lockext.release('pool', :p1), lockext.release('pool', :p3), lockext.release('pool', :p4);

-- Expiry: an expired lease never shows, never blocks, and its token is dead.
SELECT lockext.acquire('short', '200 ms') AS e1 \gset
SELECT lockext.acquire('short') IS NULL AS refused_before_expiry;
SELECT pg_sleep(0.3);
SELECT count(*) AS visible_after_expiry FROM lockext.holders WHERE name = 'short';
SELECT lockext.acquire('short') AS e2 \gset
SELECT :e2 > :e1 AS taken_over_with_higher_token;
SELECT lockext.renew('short', :e1) AS stale_renew, lockext.release('short', :e1) AS stale_release;
SELECT lockext.release('short', :e2) AS live_release;

-- A wait ends when the holder's lease expires, well before the wait runs out.
SELECT lockext.acquire('w', '300 ms') AS w1 \gset
SELECT clock_timestamp() AS before \gset
SELECT lockext.acquire('w', '10 s', '5 s') AS w2 \gset
SELECT :w2 > :w1 AS granted_at_expiry,
       clock_timestamp() - :'before'::timestamptz BETWEEN '200 ms' AND '2 s' AS woke_near_expiry;
SELECT lockext.release('w', :w2);

-- A wait that runs out returns NULL after about the wait.
SELECT lockext.acquire('busy', '10 s') AS b1 \gset
SELECT clock_timestamp() AS before \gset
SELECT lockext.acquire('busy', wait => '250 ms') IS NULL AS timed_out,
       clock_timestamp() - :'before'::timestamptz BETWEEN '240 ms' AND '3 s' AS waited_about_250ms;
SELECT lockext.release('busy', :b1);

-- Owner labels show in the view.
SELECT lockext.acquire('labelled', owner => 'worker-7') AS o1 \gset
SELECT owner FROM lockext.holders WHERE name = 'labelled';
SELECT lockext.release('labelled', :o1);

-- Session scope: no TTL needed; renew reports no expiry; freed at disconnect.
SELECT lockext.acquire('sess', NULL, scope => 'session') AS ss \gset
SELECT scope, expires_at FROM lockext.holders WHERE name = 'sess';
SELECT lockext.renew('sess', :ss) AS no_expiry;
-- Not re-entrant: waiting on a lock this session holds is an immediate error...
SELECT lockext.acquire('sess', wait => '10 s', scope => 'session');
-- ...while a try simply fails.
SELECT lockext.acquire('sess', scope => 'session') IS NULL AS try_refused;
SELECT lockext.release('sess', :ss);

-- Transaction scope: freed at commit and at rollback.
BEGIN;
SELECT lockext.acquire('tx', scope => 'transaction') IS NOT NULL AS got;
SELECT scope FROM lockext.holders WHERE name = 'tx';
COMMIT;
SELECT count(*) AS after_commit FROM lockext.holders WHERE name = 'tx';
BEGIN;
SELECT lockext.acquire('tx', NULL, scope => 'transaction') IS NOT NULL AS got;
ROLLBACK;
SELECT count(*) AS after_rollback FROM lockext.holders WHERE name = 'tx';
-- Outside a transaction block the statement is the transaction.
SELECT lockext.acquire('tx', scope => 'transaction') IS NOT NULL AS got;
SELECT count(*) AS after_statement FROM lockext.holders WHERE name = 'tx';
-- A transaction lock cannot be prepared.
BEGIN;
SELECT lockext.acquire('tx2', scope => 'transaction') IS NOT NULL AS got;
PREPARE TRANSACTION 'lockext_tx';
SELECT count(*) AS after_failed_prepare FROM lockext.holders WHERE name = 'tx2';

-- Names are per database, like advisory locks.
SELECT lockext.acquire('shared-name', '1 minute') AS here \gset
CREATE DATABASE lockext_other;
\c lockext_other
CREATE EXTENSION lockext;
SELECT lockext.acquire('shared-name') AS there \gset
SELECT :there > :here AS granted_in_other_db;
SELECT count(*) AS holders_seen_here FROM lockext.holders;
SELECT lockext.release('shared-name', :there);
\c contrib_regression
SELECT count(*) AS holders_seen_here FROM lockext.holders;
SELECT lockext.release('shared-name', :here);
DROP DATABASE lockext_other;

-- The longest name is accepted.
SELECT lockext.acquire(repeat('n', 128)) AS long1 \gset
SELECT lockext.release(repeat('n', 128), :long1);

-- Counters move (they are cluster-wide, so only their signs are shown).
SELECT acquired > 0 AS acquired, released > 0 AS released, expired > 0 AS expired,
       renewed > 0 AS renewed, timed_out > 0 AS timed_out, contended > 0 AS contended,
       slots_used, slots_total = current_setting('lockext.max_locks')::int AS slots_total
  FROM lockext.stats;
