-- pgbench script: one full cycle of the plain SKIP LOCKED queue (baseline)
-- for a batch of :batch jobs, 2 round trips: INSERT :batch rows from one
-- array parameter; DELETE the oldest :batch unlocked jobs RETURNING them.
-- Variables: :payloads (jsonb[] text), :batch (from -D).
INSERT INTO plain_queue (payload) SELECT unnest(:payloads::jsonb[]);
DELETE FROM plain_queue
 WHERE id IN (SELECT id FROM plain_queue ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)
RETURNING id, payload;
