-- pgbench script: the lockext single-job cycle as a worker that acknowledges
-- and fetches in one transaction: enqueue one job (keyed, as in
-- queue_lockext_single.sql); then complete the job this client fetched last
-- time and dequeue the next one, in one transaction. Two commits per job, as
-- the plain baseline, and the job keeps its lease between fetch and
-- complete. The first complete gets id 0 and returns false.
-- Variables: :payload, :keys, and :pid / :ptok (0 at start, from -D).
\set k random(0, :keys - 1)
SELECT lockext.enqueue('bench', :payload::jsonb, 'k' || :k);
BEGIN;
SELECT lockext.complete('bench', :pid::bigint, :ptok::bigint);
SELECT coalesce(max(id), 0) AS pid, coalesce(max(token), 0) AS ptok, max(payload::text) AS body
  FROM lockext.dequeue('bench', 1) \gset
COMMIT;
