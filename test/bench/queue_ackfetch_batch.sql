-- pgbench script: the lockext batch cycle as a worker that acknowledges and
-- fetches in one call: enqueue_batch of :batch keyed jobs; then
-- complete_and_dequeue completes the batch this client fetched last time
-- and dequeues the next, in one round trip and one transaction.
-- Variables: :payloads, :batch, :keys, and :pids / :ptoks ('{}' at start, from -D).
SELECT count(*) FROM lockext.enqueue_batch('bench', :payloads::jsonb[],
    ARRAY(SELECT 'k' || floor(random() * :keys)::int FROM generate_series(1, :batch)));
SELECT coalesce(array_agg(id), '{}') AS pids, coalesce(array_agg(token), '{}') AS ptoks,
       array_agg(payload) AS bodies
  FROM lockext.complete_and_dequeue('bench', :pids::bigint[], :ptoks::bigint[], :batch) \gset
