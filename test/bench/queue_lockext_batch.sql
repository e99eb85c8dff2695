-- pgbench script: one full lockext cycle for a batch of :batch jobs, 3 round
-- trips: enqueue_batch of :batch payloads (one array parameter) with random
-- keys out of :keys; dequeue up to :batch jobs (only key heads: per-key
-- order is enforced, so fewer may come back); complete them with one batch
-- complete. Ids, tokens and payloads come back to the client as arrays.
-- Variables: :payloads (jsonb[] text), :batch, :keys (from -D).
SELECT count(*) FROM lockext.enqueue_batch('bench', :payloads::jsonb[],
    ARRAY(SELECT 'k' || floor(random() * :keys)::int FROM generate_series(1, :batch)));
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(token), '{}') AS toks,
       array_agg(payload) AS bodies
  FROM lockext.dequeue('bench', :batch) \gset
SELECT lockext.complete('bench', :ids::bigint[], :toks::bigint[]);
