-- Timeouts set the way favmigrate's own runner sets them: through set_config(), session-wide.
SELECT set_config('lock_timeout', '1s', false);
SELECT set_config('statement_timeout', '5s', false);

ALTER TABLE orders ADD COLUMN IF NOT EXISTS e text;

CREATE INDEX IF NOT EXISTS orders_e_idx ON orders (e);
