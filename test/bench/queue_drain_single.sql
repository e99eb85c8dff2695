-- pgbench script for the bloat check: a worker's dequeue + complete of one
-- job from queue 'bench', filled beforehand (no enqueue here), 2 round trips.
SELECT coalesce(max(id), 0) AS id, coalesce(max(token), 0) AS tok, max(payload::text) AS body
  FROM lockext.dequeue('bench', 1) \gset
SELECT lockext.complete('bench', :id::bigint, :tok::bigint);
