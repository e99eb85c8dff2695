-- pgbench script: one full lockext job cycle for a single job, 3 round trips
-- (each statement its own transaction, as a producer and a worker would):
-- enqueue one job with one of :keys keys; dequeue one job (any ready job
-- that is its key's head: per-key order is enforced); complete it with its
-- token. dequeue may return no row (every ready job taken or blocked by its
-- key): the aggregates turn that into id 0 / token 0, which complete rejects
-- with false, and the bash driver counts the jobs left over.
-- Variables: :payload (jsonb text), :keys (from -D).
\set k random(0, :keys - 1)
SELECT lockext.enqueue('bench', :payload::jsonb, 'k' || :k);
SELECT coalesce(max(id), 0) AS id, coalesce(max(token), 0) AS tok, max(payload::text) AS body
  FROM lockext.dequeue('bench', 1) \gset
SELECT lockext.complete('bench', :id::bigint, :tok::bigint);
