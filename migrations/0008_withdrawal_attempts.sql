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

INSERT INTO withdrawal_attempts (withdrawal_id, kind, from_address, nonce, tx_hash, raw_tx, created_at)
SELECT id, 'TRANSFER', from_address, nonce, tx_hash, raw_tx, updated_at FROM withdrawals
WHERE raw_tx IS NOT NULL AND reconciled_at IS NULL ORDER BY id;

ALTER TABLE withdrawals ADD COLUMN problem text;              -- the last thing that stopped it, for admins
ALTER TABLE withdrawals ADD COLUMN not_before timestamptz;    -- not signed again before (after a freed nonce)

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

-- A signed withdrawal's transaction changes only to another recorded transfer attempt at the same
-- nonce (a re-priced replacement, or the attempt that was mined); it goes back to APPROVED, its
-- transaction cleared, only once a cancel at its nonce was mined (the nonce is spent for good).
CREATE OR REPLACE FUNCTION withdrawals_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
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
