-- pgbench script: one lockext transaction-scope acquire on one of 1,000 names,
-- released by the commit that ends the statement (one round trip). A name
-- another client holds yields NULL (wait defaults to 0), as the try-lock
-- baseline does.
\set n random(1, 1000)
SELECT lockext.acquire('bench:' || :n, NULL, scope => 'transaction') IS NOT NULL;
