-- pgbench script: one lockext lease acquire + release on one of 1,000 names.
-- A name busy with another client yields NULL (wait defaults to 0); coalesce
-- turns that into token 0, which release rejects with false, so the client
-- keeps going with the same two round trips instead of aborting on NULL.
\set n random(1, 1000)
SELECT coalesce(lockext.acquire('bench:' || :n), 0) AS tok \gset
SELECT lockext.release('bench:' || :n, :tok);
