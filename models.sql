-- The full current schema: what the migrations build, without their seed rows.
-- Keep it equal to the migrations (tests/test_migrations.py compares pg_dump of both).
-- Change the schema by adding a numbered migration AND editing this file.


CREATE TABLE schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id             bigint PRIMARY KEY,              -- Telegram user id
    username       text,
    language       text NOT NULL DEFAULT 'en' CHECK (language IN ('ru', 'en')),
    wallet_address text UNIQUE CHECK (wallet_address ~ '^0x[0-9a-f]{40}$'),
    balance        numeric(78,0) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    blocked_bot    boolean NOT NULL DEFAULT false,  -- the user blocked the bot (Telegram 403)
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Every balance change is a ledger entry; the trigger below is the only writer of users.balance.
CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id),
    amount          numeric(78,0) NOT NULL CHECK (amount <> 0),  -- signed: + credit, - debit
    kind            text NOT NULL CHECK (kind IN ('deposit', 'withdrawal_hold', 'withdrawal_refund', 'adjustment')),
    reference       text NOT NULL,                               -- e.g. deposit:17, withdrawal:5
    idempotency_key text NOT NULL UNIQUE,                        -- deposit:<tx>:<log>, withdrawal:<id>:hold
    balance_after   numeric(78,0) NOT NULL CHECK (balance_after >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_user_idx ON ledger_entries (user_id, id);

CREATE FUNCTION ledger_apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET balance = balance + NEW.amount WHERE id = NEW.user_id
        RETURNING balance INTO NEW.balance_after;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ledger entry for unknown user %', NEW.user_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_entries_apply BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_entry();

CREATE FUNCTION ledger_entries_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only' USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER ledger_entries_no_change BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_immutable();

-- users.balance may change only from inside the ledger trigger (trigger depth > 1).
CREATE FUNCTION users_balance_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.balance IS DISTINCT FROM OLD.balance AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'balance changes only through ledger_entries' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER users_balance_only_via_ledger BEFORE UPDATE OF balance ON users
    FOR EACH ROW EXECUTE FUNCTION users_balance_guard();

-- Wallet ownership is proven by an EIP-191 signature (core/wallet_proof.py). Bindings are a
-- history: a transfer mined in block B is attributed only to the binding valid at B, that is
-- proven_at_block < B <= ended_at_block (NULL: still current). users.wallet_address mirrors the
-- current binding and is written only by the trigger below.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE wallet_bindings (
    id              bigserial PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id),
    address         text NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$'),
    signature       text NOT NULL CHECK (signature ~ '^0x[0-9a-f]{130}$'),
    proven_at_block bigint NOT NULL CHECK (proven_at_block >= 0),  -- chain head when the proof was accepted
    ended_at_block  bigint,                                         -- chain head when it was replaced
    created_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    CHECK (ended_at_block IS NULL OR ended_at_block >= proven_at_block),
    CHECK ((ended_at_block IS NULL) = (ended_at IS NULL)),
    -- no block belongs to two bindings of one address
    EXCLUDE USING gist (address WITH =, int8range(proven_at_block, ended_at_block, '(]') WITH &&)
);
CREATE UNIQUE INDEX wallet_bindings_current_address ON wallet_bindings (address) WHERE ended_at_block IS NULL;
CREATE UNIQUE INDEX wallet_bindings_current_user ON wallet_bindings (user_id) WHERE ended_at_block IS NULL;

-- A binding is never deleted or rewritten; it can only be ended, once.
CREATE FUNCTION wallet_bindings_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.ended_at_block IS NOT NULL
       OR (NEW.user_id, NEW.address, NEW.signature, NEW.proven_at_block, NEW.created_at)
          IS DISTINCT FROM (OLD.user_id, OLD.address, OLD.signature, OLD.proven_at_block, OLD.created_at) THEN
        RAISE EXCEPTION 'wallet bindings are history: they can only be ended, once'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER wallet_bindings_history BEFORE UPDATE OR DELETE ON wallet_bindings
    FOR EACH ROW EXECUTE FUNCTION wallet_bindings_append_only();

CREATE FUNCTION wallet_bindings_mirror() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET wallet_address = (SELECT address FROM wallet_bindings
                                       WHERE user_id = NEW.user_id AND ended_at_block IS NULL)
        WHERE id = NEW.user_id;
    RETURN NULL;
END $$;

CREATE TRIGGER wallet_bindings_mirror_to_users AFTER INSERT OR UPDATE ON wallet_bindings
    FOR EACH ROW EXECUTE FUNCTION wallet_bindings_mirror();

-- users.wallet_address may change only from inside the mirror trigger (trigger depth > 1).
CREATE FUNCTION users_wallet_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 AND NEW.wallet_address IS DISTINCT FROM
       (CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.wallet_address END) THEN
        RAISE EXCEPTION 'wallet_address changes only through wallet_bindings' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER users_wallet_only_via_bindings BEFORE INSERT OR UPDATE OF wallet_address ON users
    FOR EACH ROW EXECUTE FUNCTION users_wallet_guard();

CREATE TABLE deposit_level_versions (
    version    serial PRIMARY KEY,
    is_current boolean NOT NULL DEFAULT false,
    created_by bigint,                                -- admin id; NULL for the seeded version
    created_at timestamptz NOT NULL DEFAULT now()
);
-- At most one current version; replacing it happens in one transaction (db/levels.py).
CREATE UNIQUE INDEX deposit_level_versions_one_current ON deposit_level_versions (is_current) WHERE is_current;

-- Level bounds are whole-token decimals (exact NUMERIC): the token's decimals are read from
-- the contract at start, so base units are computed at run time.
CREATE TABLE deposit_levels (
    version    integer NOT NULL REFERENCES deposit_level_versions (version),
    level      integer NOT NULL CHECK (level > 0),
    min_tokens numeric NOT NULL CHECK (min_tokens > 0),
    max_tokens numeric NOT NULL,
    PRIMARY KEY (version, level),
    CHECK (max_tokens >= min_tokens)
);
-- Deposit levels are contiguous: 10-100,100-1000,1000-10000 means [10, 100), [100, 1000),
-- [1000, 10000] (each upper bound excluded except the last's), so no amount falls between two
-- levels (with 10-99,100-999 a deposit of 99.5 was refused). Checked at commit for every version
-- written from now on; earlier versions stay as they were, for the deposits made under them.
CREATE FUNCTION deposit_levels_contiguous() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM deposit_levels a JOIN deposit_levels b ON b.version = a.version AND b.level = a.level + 1
               WHERE a.version = NEW.version AND b.min_tokens <> a.max_tokens)
       OR EXISTS (SELECT 1 FROM deposit_levels WHERE version = NEW.version AND max_tokens <= min_tokens)
       OR (SELECT max(level) <> count(*) FROM deposit_levels WHERE version = NEW.version) THEN
        RAISE EXCEPTION 'deposit levels version %: levels are numbered from 1 and each starts where the one before ends',
            NEW.version USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER deposit_levels_contiguous AFTER INSERT OR UPDATE ON deposit_levels
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION deposit_levels_contiguous();

CREATE TABLE deposits (
    id               bigserial PRIMARY KEY,
    user_id          bigint REFERENCES users (id),   -- NULL: transfer from an unknown address
    status           text NOT NULL CHECK (status IN ('PENDING', 'PENDING_NETWORK_RECOVERY', 'CONFIRMED', 'EXPIRED',
                                                     'CANCELLED')),
    requested_amount numeric(78,0) CHECK (requested_amount > 0),  -- NULL: nobody asked for it
    level_version    integer,
    level            integer,
    from_address     text CHECK (from_address ~ '^0x[0-9a-f]{40}$'),
    credited_amount  numeric(78,0) CHECK (credited_amount > 0),
    tx_hash          text CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    log_index        integer CHECK (log_index >= 0),
    block_number     bigint CHECK (block_number >= 0),
    block_hash       text CHECK (block_hash ~ '^0x[0-9a-f]{64}$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz,
    confirmed_at     timestamptz,
    UNIQUE (tx_hash, log_index),
    FOREIGN KEY (level_version, level) REFERENCES deposit_levels (version, level),
    CHECK ((requested_amount IS NULL) = (level IS NULL)),
    CHECK (requested_amount IS NULL OR user_id IS NOT NULL),
    -- a matched transfer carries all its coordinates, an unmatched request none of them
    CHECK ((tx_hash IS NULL) = (log_index IS NULL)
       AND (tx_hash IS NULL) = (block_number IS NULL)
       AND (tx_hash IS NULL) = (block_hash IS NULL)
       AND (tx_hash IS NULL) = (credited_amount IS NULL)),
    CHECK ((status = 'CONFIRMED') = (tx_hash IS NOT NULL))
);
CREATE INDEX deposits_open_requests_idx ON deposits (user_id, requested_amount, created_at)
    WHERE status IN ('PENDING', 'PENDING_NETWORK_RECOVERY');
CREATE INDEX deposits_user_idx ON deposits (user_id, id);

CREATE TABLE withdrawals (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    status      text NOT NULL CHECK (status IN ('REQUESTED', 'APPROVED', 'SIGNED', 'BROADCAST', 'CONFIRMED', 'REJECTED', 'FAILED',
                                                'CANCELLED')),
    amount      numeric(78,0) NOT NULL CHECK (amount > 0),
    fee         numeric(78,0) NOT NULL DEFAULT 0 CHECK (fee >= 0),
    to_address  text NOT NULL CHECK (to_address ~ '^0x[0-9a-f]{40}$'),
    nonce       bigint CHECK (nonce >= 0),               -- unique per hot wallet (below)
    tx_hash     text UNIQUE CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    raw_tx      bytea,
    approved_by bigint,                                  -- admin id, NULL when auto-approved
    approved_at timestamptz,
    rejected_by bigint,
    rejected_at timestamptz,
    reason      text,
    request_key text UNIQUE,                             -- one withdrawal per confirmed dialog (double taps)
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    from_address  text CHECK (from_address ~ '^0x[0-9a-f]{40}$'),  -- the hot wallet that signed
    reconciled_at timestamptz,                          -- paid by a transaction found on chain (dr.py reconcile)
    problem       text,                                 -- the last thing that stopped it, for admins
    not_before    timestamptz,                          -- not signed again before (after a freed nonce)
    CONSTRAINT withdrawals_from_address_nonce_key UNIQUE (from_address, nonce),
    -- the signed transaction is committed before it is sent, and never dropped afterwards
    CHECK (status IN ('REQUESTED', 'APPROVED', 'REJECTED', 'CANCELLED')
        OR (status = 'FAILED' AND tx_hash IS NULL AND raw_tx IS NULL AND nonce IS NULL)
        OR (tx_hash IS NOT NULL AND raw_tx IS NOT NULL AND nonce IS NOT NULL))
);
CREATE INDEX withdrawals_status_idx ON withdrawals (status, id);
CREATE INDEX withdrawals_user_idx ON withdrawals (user_id, id);

-- The withdrawal state machine, enforced where no code path can skip it.
CREATE FUNCTION withdrawals_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'APPROVED' AND OLD.status IN ('SIGNED', 'BROADCAST') THEN
        IF NOT (ROW(NEW.raw_tx, NEW.tx_hash, NEW.nonce) IS NULL) OR NOT EXISTS (
            SELECT 1 FROM withdrawal_attempts a WHERE a.withdrawal_id = OLD.id AND a.nonce = OLD.nonce
            AND a.kind = 'CANCEL' AND a.mined_block IS NOT NULL) THEN
            RAISE EXCEPTION 'withdrawal %: back to APPROVED only when a mined cancel spent its nonce', OLD.id
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF OLD.raw_tx IS NOT NULL AND (NEW.raw_tx, NEW.tx_hash, NEW.nonce) IS DISTINCT FROM (OLD.raw_tx, OLD.tx_hash, OLD.nonce) THEN
        IF NEW.nonce IS DISTINCT FROM OLD.nonce OR NOT EXISTS (
            SELECT 1 FROM withdrawal_attempts a WHERE a.withdrawal_id = OLD.id AND a.nonce = OLD.nonce
            AND a.kind = 'TRANSFER' AND a.tx_hash = NEW.tx_hash AND a.raw_tx = NEW.raw_tx) THEN
            RAISE EXCEPTION 'withdrawal %: a signed transaction is replaced only by a recorded attempt at its nonce', OLD.id
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF NEW.status = 'CONFIRMED' AND OLD.status IN ('REQUESTED', 'APPROVED') THEN
        IF NEW.reconciled_at IS NULL OR OLD.reconciled_at IS NOT NULL THEN
            RAISE EXCEPTION 'withdrawal %: % -> CONFIRMED only by reconciliation with the chain', OLD.id, OLD.status
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status <> OLD.status AND (OLD.status, NEW.status) NOT IN (
        ('REQUESTED', 'APPROVED'), ('REQUESTED', 'REJECTED'), ('REQUESTED', 'CANCELLED'),
        ('APPROVED', 'SIGNED'), ('APPROVED', 'REJECTED'), ('APPROVED', 'FAILED'),
        ('SIGNED', 'BROADCAST'), ('SIGNED', 'CONFIRMED'), ('SIGNED', 'FAILED'), ('SIGNED', 'APPROVED'),
        ('BROADCAST', 'CONFIRMED'), ('BROADCAST', 'FAILED'), ('BROADCAST', 'APPROVED')
    ) THEN
        RAISE EXCEPTION 'withdrawal %: % -> % is not allowed', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER withdrawals_transition BEFORE UPDATE ON withdrawals
    FOR EACH ROW EXECUTE FUNCTION withdrawals_check_transition();

-- A refund is computed from amount + fee and the payment goes to to_address: once requested,
-- none of the terms of a withdrawal may change.
CREATE FUNCTION withdrawals_terms_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.user_id, NEW.amount, NEW.fee, NEW.to_address) IS DISTINCT FROM
       (OLD.user_id, OLD.amount, OLD.fee, OLD.to_address) THEN
        RAISE EXCEPTION 'withdrawal %: user, amount, fee and destination never change', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER withdrawals_terms_frozen BEFORE UPDATE OF user_id, amount, fee, to_address ON withdrawals
    FOR EACH ROW EXECUTE FUNCTION withdrawals_terms_frozen();

-- Every transaction signed for a withdrawal is an attempt at its nonce, stored before it is sent:
-- the first one, re-priced replacements of it, and the transfer of nothing to the hot wallet itself
-- that frees the nonce of a withdrawal that cannot be mined. The withdrawal settles by whichever
-- attempt is mined; a mined cancel puts it back to APPROVED (its amount still held).
CREATE TABLE withdrawal_attempts (
    id            bigserial PRIMARY KEY,
    withdrawal_id bigint NOT NULL REFERENCES withdrawals (id),
    kind          text NOT NULL CHECK (kind IN ('TRANSFER', 'CANCEL')),
    from_address  text CHECK (from_address ~ '^0x[0-9a-f]{40}$'),  -- NULL only for rows from before 0006
    nonce         bigint NOT NULL CHECK (nonce >= 0),
    tx_hash       text NOT NULL UNIQUE CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    raw_tx        bytea NOT NULL,
    max_fee_per_gas          numeric(78,0) CHECK (max_fee_per_gas > 0),  -- EIP-1559 attempts
    max_priority_fee_per_gas numeric(78,0) CHECK (max_priority_fee_per_gas >= 0),
    gas_price     numeric(78,0) CHECK (gas_price > 0),                    -- legacy attempts
    mined_block   bigint CHECK (mined_block >= 0),  -- set once, when the attempt settled its withdrawal
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX withdrawal_attempts_withdrawal_idx ON withdrawal_attempts (withdrawal_id, id);
CREATE INDEX withdrawal_attempts_nonce_idx ON withdrawal_attempts (from_address, nonce);

-- An attempt is at the nonce its withdrawal holds, no other withdrawal's attempt uses that nonce,
-- and once stored only mined_block is ever set (once). Attempts are never deleted.
CREATE FUNCTION withdrawal_attempts_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'withdrawal attempt %: attempts are never deleted', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF OLD.mined_block IS NOT NULL OR NEW.mined_block IS NULL
           OR (NEW.withdrawal_id, NEW.kind, NEW.from_address, NEW.nonce, NEW.tx_hash, NEW.raw_tx, NEW.max_fee_per_gas,
               NEW.max_priority_fee_per_gas, NEW.gas_price, NEW.created_at) IS DISTINCT FROM
              (OLD.withdrawal_id, OLD.kind, OLD.from_address, OLD.nonce, OLD.tx_hash, OLD.raw_tx, OLD.max_fee_per_gas,
               OLD.max_priority_fee_per_gas, OLD.gas_price, OLD.created_at) THEN
            RAISE EXCEPTION 'withdrawal attempt %: only its mined block is recorded, once', OLD.id
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM withdrawals w WHERE w.id = NEW.withdrawal_id AND w.nonce = NEW.nonce
                   AND w.from_address IS NOT DISTINCT FROM NEW.from_address AND w.status IN ('SIGNED', 'BROADCAST')) THEN
        RAISE EXCEPTION 'withdrawal %: an attempt must be at the nonce the signed withdrawal holds', NEW.withdrawal_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM withdrawal_attempts a WHERE a.nonce = NEW.nonce AND a.withdrawal_id <> NEW.withdrawal_id
               AND a.from_address IS NOT DISTINCT FROM NEW.from_address) THEN
        RAISE EXCEPTION 'nonce %: already used by another withdrawal''s attempt', NEW.nonce
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER withdrawal_attempts_guard BEFORE INSERT OR UPDATE OR DELETE ON withdrawal_attempts
    FOR EACH ROW EXECUTE FUNCTION withdrawal_attempts_guard();

-- Hot wallet transactions the database learned of from the chain (dr.py reconcile): matched to
-- a withdrawal, or accepted by the operator as not a withdrawal of ours.
CREATE TABLE hot_wallet_transactions (
    address       text NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$'),
    nonce         bigint NOT NULL CHECK (nonce >= 0),
    tx_hash       text CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    decision      text NOT NULL CHECK (decision IN ('MATCHED', 'ACCEPTED')),
    withdrawal_id bigint REFERENCES withdrawals (id),
    decided_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (address, nonce),
    CHECK ((decision = 'MATCHED') = (withdrawal_id IS NOT NULL))
);

CREATE TABLE blacklist (
    user_id    bigint PRIMARY KEY,                     -- no FK: a user may be banned before /start
    reason     text,
    created_by bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE system_settings (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_by bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE admin_audit_log (
    id             bigserial PRIMARY KEY,
    actor_id       bigint NOT NULL,                    -- who tried; not always an admin
    action         text NOT NULL,
    target_user_id bigint,
    details        jsonb NOT NULL DEFAULT '{}',
    allowed        boolean NOT NULL DEFAULT true,      -- false: a non-admin tried an admin command
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_audit_log_created_idx ON admin_audit_log (created_at);

CREATE TABLE chain_cursor (
    stream     text PRIMARY KEY,                       -- e.g. deposits:<token>:<deposit address>
    last_block bigint NOT NULL CHECK (last_block >= 0),  -- last block fully scanned
    block_hash text CHECK (block_hash ~ '^0x[0-9a-f]{64}$'),
    updated_at timestamptz NOT NULL DEFAULT now()
);


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
-- recovery takes pending rows in id order (migration 0012)
CREATE INDEX notification_queue_fallback_pending_idx ON notification_queue_fallback (id) WHERE status = 'PENDING';

-- Notices caused by a money event, written in the event's own transaction; delivered by the
-- worker, never migrated to Redis (notification_queue_fallback is only for notices that could
-- not go to the Redis Stream).
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

CREATE TABLE service_status (
    name       text PRIMARY KEY,                  -- e.g. 'rpc'
    status     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One active worker: whoever holds this row's unexpired lease. The epoch grows by one each time
-- another process takes it; every chain action checks holder and epoch in the transaction that
-- records it, so a worker that lost the lease (frozen, partitioned) cannot sign or send.
CREATE TABLE worker_lease (
    id         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    holder     text NOT NULL,                     -- host:pid of the process
    site       text NOT NULL,                     -- host and STATE_DIR: a restarted worker there takes it at once
    epoch      bigint NOT NULL CHECK (epoch > 0),
    expires_at timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL DEFAULT now()
);
