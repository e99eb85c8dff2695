-- pgbench script: the lockext batch cycle as a worker that acknowledges and
-- fetches in one transaction: enqueue_batch of :batch keyed jobs; then
-- complete the batch this client fetched last time and dequeue the next, in
-- one transaction. Variables: :payloads, :batch, :keys, and :pids / :ptoks
-- ('{}' at start, from -D).
SELECT count(*) FROM lockext.enqueue_batch('bench', :payloads::jsonb[],
    ARRAY(SELECT 'k' || floor(random() * :keys)::int FROM generate_series(1, :batch)));
BEGIN;
SELECT lockext.complete('bench', :pids::bigint[], :ptoks::bigint[]);
SELECT coalesce(array_agg(id), '{}') AS pids, coalesce(array_agg(token), '{}') AS ptoks,
       array_agg(payload) AS bodies
  FROM lockext.dequeue('bench', :batch) \gset
COMMIT;
