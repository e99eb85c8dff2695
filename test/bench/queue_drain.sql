-- pgbench script for the bloat check: a worker's dequeue + batch complete of
-- up to :batch jobs from queue 'bench', filled beforehand (no enqueue here),
-- 2 round trips. Variables: :batch (from -D).
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(token), '{}') AS toks,
       array_agg(payload) AS bodies
  FROM lockext.dequeue('bench', :batch) \gset
SELECT lockext.complete('bench', :ids::bigint[], :toks::bigint[]);
