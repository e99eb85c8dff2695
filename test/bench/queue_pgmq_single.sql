-- pgbench script: one full pgmq cycle for a single job, 3 round trips (each
-- statement its own transaction, as in queue_lockext_single.sql): send one
-- message; read one message with a 30 s visibility timeout (the oldest
-- visible one: pgmq has no keys, so no per-key order); delete it by id.
-- read may return no row (every visible message taken by another worker):
-- the aggregates turn that into id 0, which delete answers with false, and
-- the bash driver counts the messages left over.
-- Variables: :payload (jsonb text, from -D).
SELECT * FROM pgmq.send('bench', :payload::jsonb);
SELECT coalesce(max(msg_id), 0) AS id, max(message::text) AS body
  FROM pgmq.read('bench', 30, 1) \gset
SELECT pgmq.delete('bench', :id::bigint);
