-- Objects the benchmark needs: the extension and the table-lease baseline.
CREATE EXTENSION IF NOT EXISTS lockext;

-- A plain (logged) table, as lease libraries such as cirello.io/pglock use.
CREATE TABLE IF NOT EXISTS bench_lease (
    name       text PRIMARY KEY,
    owner      text NOT NULL,
    token      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS bench_lease_token;
