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
