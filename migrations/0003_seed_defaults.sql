-- Seed rows: the first deposit level version and the default system settings.
-- Amounts are whole-token decimals; JSON strings, so no float ever carries money.

INSERT INTO deposit_level_versions (version, is_current) VALUES (1, true);
SELECT setval(pg_get_serial_sequence('deposit_level_versions', 'version'), 1);
INSERT INTO deposit_levels (version, level, min_tokens, max_tokens) VALUES
    (1, 1, 10, 99),
    (1, 2, 100, 999),
    (1, 3, 1000, 10000);

INSERT INTO system_settings (key, value) VALUES
    ('min_withdrawal', '"1"'),
    ('withdrawal_fee', '"0"'),
    ('support_contact', '"@support"');
