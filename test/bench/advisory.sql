-- pgbench script: baseline, a session advisory lock + unlock on one of 1,000 keys.
\set n random(1, 1000)
SELECT pg_advisory_lock(:n);
SELECT pg_advisory_unlock(:n);
