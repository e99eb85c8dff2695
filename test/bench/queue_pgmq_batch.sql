-- pgbench script: one full pgmq cycle for a batch of :batch jobs, 3 round
-- trips (as queue_lockext_batch.sql): send_batch of :batch payloads (one
-- array parameter); read up to :batch messages with a 30 s visibility
-- timeout (oldest visible first, no per-key order); delete them with one
-- batch delete. Ids and payloads come back to the client as arrays.
-- Variables: :payloads (jsonb[] text), :batch (from -D).
SELECT count(*) FROM pgmq.send_batch('bench', :payloads::jsonb[]);
SELECT coalesce(array_agg(msg_id), '{}') AS ids, array_agg(message) AS bodies
  FROM pgmq.read('bench', 30, :batch) \gset
SELECT count(*) FROM pgmq.delete('bench', :ids::bigint[]);
