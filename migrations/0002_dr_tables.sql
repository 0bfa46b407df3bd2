-- Disaster-recovery tables: PostgreSQL fallbacks for what normally lives in Redis.

-- Dialog (FSM) state of a chat when Redis is down; migrated back to Redis on recovery.
CREATE TABLE user_fsm_states (
    bot_id                 bigint NOT NULL DEFAULT 0,
    chat_id                bigint NOT NULL,
    user_id                bigint NOT NULL,
    thread_id              bigint NOT NULL DEFAULT 0,  -- message_thread_id; 0 = none
    business_connection_id text NOT NULL DEFAULT '',
    state                  text,                        -- NULL: no dialog, data may remain
    data                   jsonb NOT NULL DEFAULT '{}',
    version                bigint NOT NULL DEFAULT 1,   -- bumped on every write (last writer is known)
    updated_at             timestamptz NOT NULL DEFAULT now(),
    migrated_at            timestamptz,                 -- copied back to Redis at this time
    PRIMARY KEY (bot_id, chat_id, user_id, thread_id, business_connection_id)
);
CREATE INDEX user_fsm_states_unmigrated_idx ON user_fsm_states (updated_at) WHERE migrated_at IS NULL;

-- Notifications queued while Redis is down; delivered or migrated back once it returns.
CREATE TABLE notification_queue_fallback (
    id              bigserial PRIMARY KEY,
    chat_id         bigint NOT NULL,
    payload         jsonb NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED', 'MIGRATED')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    migrated_at     timestamptz
);
CREATE INDEX notification_queue_fallback_due_idx ON notification_queue_fallback (next_attempt_at, id)
    WHERE status = 'PENDING';
