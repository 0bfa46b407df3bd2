-- After a database restore the chain may show hot wallet transactions the database lost: the
-- sender stops until `python dr.py reconcile` has matched each one to a withdrawal or the
-- operator has accepted it. Nonces are unique per hot wallet address (a key rotation starts over).
ALTER TABLE withdrawals ADD COLUMN from_address text CHECK (from_address ~ '^0x[0-9a-f]{40}$');
ALTER TABLE withdrawals ADD COLUMN reconciled_at timestamptz;  -- paid by a transaction found on chain
ALTER TABLE withdrawals DROP CONSTRAINT withdrawals_nonce_key;
ALTER TABLE withdrawals ADD CONSTRAINT withdrawals_from_address_nonce_key UNIQUE (from_address, nonce);

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

-- REQUESTED/APPROVED -> CONFIRMED only when reconciliation found the payment on chain.
CREATE OR REPLACE FUNCTION withdrawals_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.raw_tx IS NOT NULL AND (NEW.raw_tx, NEW.tx_hash, NEW.nonce) IS DISTINCT FROM (OLD.raw_tx, OLD.tx_hash, OLD.nonce) THEN
        RAISE EXCEPTION 'withdrawal %: a signed transaction is never replaced', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status = 'CONFIRMED' AND OLD.status IN ('REQUESTED', 'APPROVED') THEN
        IF NEW.reconciled_at IS NULL OR OLD.reconciled_at IS NOT NULL THEN
            RAISE EXCEPTION 'withdrawal %: % -> CONFIRMED only by reconciliation with the chain', OLD.id, OLD.status
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status <> OLD.status AND (OLD.status, NEW.status) NOT IN (
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
