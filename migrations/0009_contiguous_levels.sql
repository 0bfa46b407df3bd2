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

-- The current version, if it leaves gaps (the seeded 10-99,100-999,1000-10000 does), is replaced by
-- a new version whose every level but the last ends where the next one starts.
DO $$
DECLARE
    old_version integer;
    new_version integer;
BEGIN
    SELECT version INTO old_version FROM deposit_level_versions WHERE is_current;
    IF old_version IS NULL OR NOT EXISTS (
        SELECT 1 FROM deposit_levels a JOIN deposit_levels b ON b.version = a.version AND b.level = a.level + 1
        WHERE a.version = old_version AND b.min_tokens <> a.max_tokens) THEN
        RETURN;
    END IF;
    UPDATE deposit_level_versions SET is_current = false WHERE version = old_version;
    INSERT INTO deposit_level_versions (is_current) VALUES (true) RETURNING version INTO new_version;
    INSERT INTO deposit_levels (version, level, min_tokens, max_tokens)
    SELECT new_version, level, min_tokens, coalesce(lead(min_tokens) OVER (ORDER BY level), max_tokens)
    FROM deposit_levels WHERE version = old_version;
END $$;
