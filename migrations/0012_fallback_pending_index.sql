-- Recovery takes pending fallback notices in id order: without this index PostgreSQL walks the
-- primary key past every row already migrated, and each batch gets slower than the last.
CREATE INDEX notification_queue_fallback_pending_idx ON notification_queue_fallback (id) WHERE status = 'PENDING';
