-- pgbench script: one full cycle of the plain SKIP LOCKED queue (baseline)
-- for a single job, 2 round trips: INSERT one job; DELETE the oldest
-- unlocked job RETURNING it (dequeue and complete in one statement; no
-- ordering, lease or retry). Variables: :payload (jsonb text, from -D).
INSERT INTO plain_queue (payload) VALUES (:payload::jsonb);
DELETE FROM plain_queue
 WHERE id = (SELECT id FROM plain_queue ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING id, payload;
