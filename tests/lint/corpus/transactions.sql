-- Transaction blocks: nested BEGIN, and a block never committed.
SET lock_timeout = '2s';
SET statement_timeout = '10s';

BEGIN;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS a text;
BEGIN;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS b text;
COMMIT;

BEGIN;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS c text;
