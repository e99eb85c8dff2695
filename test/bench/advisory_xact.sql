-- pgbench script: baseline for transaction scope, a transaction advisory
-- try-lock on one of 1,000 keys, released by the commit that ends the
-- statement (one round trip).
\set n random(1, 1000)
SELECT pg_try_advisory_xact_lock(:n);
