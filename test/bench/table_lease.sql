-- pgbench script: baseline, a table-based lease in the style of cirello.io/pglock.
-- Acquire inserts the row, or takes it over when the previous lease has expired;
-- it yields no row when the name is held, which the outer SELECT turns into
-- token 0 (matches nothing on release) so the client never aborts.
\set n random(1, 1000)
WITH got AS (
    INSERT INTO bench_lease (name, owner, token, expires_at)
    VALUES ('bench:' || :n, 'pgbench-' || :client_id, nextval('bench_lease_token'),
            now() + interval '30 seconds')
    ON CONFLICT (name) DO UPDATE
        SET owner = excluded.owner, token = excluded.token, expires_at = excluded.expires_at
        WHERE bench_lease.expires_at < now()
    RETURNING token)
SELECT coalesce((SELECT token FROM got), 0) AS tok \gset
DELETE FROM bench_lease WHERE name = 'bench:' || :n AND token = :tok;
