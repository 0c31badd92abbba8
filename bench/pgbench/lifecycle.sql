-- One job's life in three commits: submit, claim (SKIP LOCKED), complete with a result.
INSERT INTO queue (payload) VALUES ('{"t": "pgbench", "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}');
WITH c AS (UPDATE queue SET status = 'running', started_at = now() WHERE id = (SELECT id FROM queue WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id) SELECT coalesce(max(id), 0) AS id FROM c \gset
UPDATE queue SET status = 'done', result = '{"ok": true}', finished_at = now() WHERE id = :id;
