-- Drain, batched: claim ten queued jobs and complete them (two commits).
WITH c AS (UPDATE queue SET status = 'running', started_at = now() WHERE id = ANY(ARRAY(SELECT id FROM queue WHERE status = 'queued' ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED)) RETURNING id) SELECT coalesce(array_agg(id), '{}') AS ids FROM c \gset
UPDATE queue SET status = 'done', result = '{"ok": true}', finished_at = now() WHERE id = ANY(CAST(:ids AS bigint[]));
