-- Ten jobs' lives in three commits: submit 10, claim 10, complete 10.
INSERT INTO queue (payload) SELECT '{"t": "pgbench", "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}' FROM generate_series(1, 10);
WITH c AS (UPDATE queue SET status = 'running', started_at = now() WHERE id = ANY(ARRAY(SELECT id FROM queue WHERE status = 'queued' ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED)) RETURNING id) SELECT coalesce(array_agg(id), '{}') AS ids FROM c \gset
UPDATE queue SET status = 'done', result = '{"ok": true}', finished_at = now() WHERE id = ANY(CAST(:ids AS bigint[]));
