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

-- Addresses bound before this migration were never proven: they must be proven again.
UPDATE users SET wallet_address = NULL WHERE wallet_address IS NOT NULL;

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

-- Users may cancel their own open deposit request, and a withdrawal still waiting for approval.
ALTER TABLE deposits DROP CONSTRAINT deposits_status_check;
ALTER TABLE deposits ADD CONSTRAINT deposits_status_check
    CHECK (status IN ('PENDING', 'PENDING_NETWORK_RECOVERY', 'CONFIRMED', 'EXPIRED', 'CANCELLED'));

ALTER TABLE withdrawals DROP CONSTRAINT withdrawals_status_check;
ALTER TABLE withdrawals ADD CONSTRAINT withdrawals_status_check
    CHECK (status IN ('REQUESTED', 'APPROVED', 'SIGNED', 'BROADCAST', 'CONFIRMED', 'REJECTED', 'FAILED', 'CANCELLED'));
ALTER TABLE withdrawals DROP CONSTRAINT withdrawals_check;
ALTER TABLE withdrawals ADD CONSTRAINT withdrawals_check
    CHECK (status IN ('REQUESTED', 'APPROVED', 'REJECTED', 'CANCELLED')
        OR (status = 'FAILED' AND tx_hash IS NULL AND raw_tx IS NULL AND nonce IS NULL)
        OR (tx_hash IS NOT NULL AND raw_tx IS NOT NULL AND nonce IS NOT NULL));

CREATE OR REPLACE FUNCTION withdrawals_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.raw_tx IS NOT NULL AND (NEW.raw_tx, NEW.tx_hash, NEW.nonce) IS DISTINCT FROM (OLD.raw_tx, OLD.tx_hash, OLD.nonce) THEN
        RAISE EXCEPTION 'withdrawal %: a signed transaction is never replaced', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status <> OLD.status AND (OLD.status, NEW.status) NOT IN (
        ('REQUESTED', 'APPROVED'), ('REQUESTED', 'REJECTED'), ('REQUESTED', 'CANCELLED'),
        ('APPROVED', 'SIGNED'), ('APPROVED', 'REJECTED'), ('APPROVED', 'FAILED'),
        ('SIGNED', 'BROADCAST'), ('SIGNED', 'CONFIRMED'), ('SIGNED', 'FAILED'),
        ('BROADCAST', 'CONFIRMED'), ('BROADCAST', 'FAILED')
    ) THEN
        RAISE EXCEPTION 'withdrawal %: % -> % is not allowed', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
