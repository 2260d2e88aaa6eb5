-- Column changes on existing tables.
SET lock_timeout = '2s';
SET statement_timeout = '10s';

ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text;

ALTER TABLE orders ADD COLUMN IF NOT EXISTS token uuid DEFAULT gen_random_uuid();

ALTER TABLE orders ADD COLUMN IF NOT EXISTS placed_at timestamptz NOT NULL DEFAULT now();

ALTER TABLE orders ADD COLUMN IF NOT EXISTS channel text NOT NULL;

ALTER TABLE orders ALTER COLUMN channel SET NOT NULL;

ALTER TABLE orders ALTER COLUMN note TYPE varchar(200);

ALTER TABLE orders DROP COLUMN IF EXISTS legacy_flag;

ALTER TABLE orders RENAME COLUMN note TO remark;

ALTER TABLE orders RENAME TO purchase_orders;

DROP TABLE IF EXISTS order_archive;

ALTER TABLE orders ADD COLUMN IF NOT EXISTS code int DEFAULT next_code();
