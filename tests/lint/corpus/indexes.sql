-- Index builds and drops on existing tables.
SET lock_timeout = '2s';
SET statement_timeout = '10s';

CREATE INDEX orders_customer_idx ON orders (customer_id);

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS orders_number_key ON orders (number);

DROP INDEX IF EXISTS orders_old_idx;

DROP INDEX CONCURRENTLY IF EXISTS orders_older_idx;

BEGIN;
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_created_idx ON orders (created_at);
COMMIT;
