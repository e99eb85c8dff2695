-- pgbench script: the lockext single-job cycle as a worker that acknowledges
-- and fetches in one call: enqueue one job (keyed, as in
-- queue_lockext_single.sql); then complete_and_dequeue completes the job
-- this client fetched last time and dequeues the next one, in one round
-- trip and one transaction. Two commits and two round trips per job, as the
-- plain baseline, and the job keeps its lease between fetch and complete.
-- The first call completes id 0, which no job has.
-- Variables: :payload, :keys, and :pid / :ptok (0 at start, from -D).
\set k random(0, :keys - 1)
SELECT lockext.enqueue('bench', :payload::jsonb, 'k' || :k);
SELECT coalesce(max(id), 0) AS pid, coalesce(max(token), 0) AS ptok, max(payload::text) AS body
  FROM lockext.complete_and_dequeue('bench', ARRAY[:pid]::bigint[], ARRAY[:ptok]::bigint[], 1) \gset
