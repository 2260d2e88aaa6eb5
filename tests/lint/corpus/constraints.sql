-- Constraints on existing tables: validating, NOT VALID then VALIDATE, unique.
SET lock_timeout = '2s';
SET statement_timeout = '10s';

ALTER TABLE orders ADD CONSTRAINT orders_customer_fkey FOREIGN KEY (customer_id) REFERENCES customers (id);

ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total > 0);

BEGIN;
ALTER TABLE orders ADD CONSTRAINT orders_shop_fkey FOREIGN KEY (shop_id) REFERENCES shops (id) NOT VALID;
COMMIT;
BEGIN;
ALTER TABLE orders VALIDATE CONSTRAINT orders_shop_fkey;
COMMIT;

ALTER TABLE orders ADD CONSTRAINT orders_number_unique UNIQUE (number);

ALTER TABLE orders ADD CONSTRAINT orders_code_unique UNIQUE USING INDEX orders_code_idx;

BEGIN;
ALTER TABLE orders ADD CONSTRAINT orders_discount_check CHECK (discount >= 0) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_discount_check;
COMMIT;

ALTER TABLE order_lines ADD CONSTRAINT order_lines_pkey PRIMARY KEY (id);
