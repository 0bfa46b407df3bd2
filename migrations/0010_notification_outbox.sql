-- Notices caused by a money event are written in the event's own transaction to a table of
-- their own, delivered by the worker directly and never migrated to Redis. Every other notice
-- goes to a Redis Stream, or to notification_queue_fallback while Redis is down (the report's
-- table, now only for that). Every row queued so far was written with a money event: moved here.
CREATE TABLE notification_outbox (
    id              bigserial PRIMARY KEY,
    chat_id         bigint NOT NULL,
    payload         jsonb NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);
CREATE INDEX notification_outbox_due_idx ON notification_outbox (next_attempt_at, id) WHERE status = 'PENDING';

INSERT INTO notification_outbox (id, chat_id, payload, idempotency_key, status, attempts, last_error,
                                 next_attempt_at, created_at, processed_at)
SELECT id, chat_id, payload, idempotency_key, CASE WHEN status = 'MIGRATED' THEN 'SENT' ELSE status END, attempts,
       last_error, next_attempt_at, created_at, processed_at
FROM notification_queue_fallback ORDER BY id;
SELECT setval(pg_get_serial_sequence('notification_outbox', 'id'),
              greatest((SELECT max(id) FROM notification_outbox), 1));
DELETE FROM notification_queue_fallback;
