-- A table created in this file is new and empty: building its index or constraints blocks nobody.
SET lock_timeout = '2s';
SET statement_timeout = '10s';

CREATE TABLE IF NOT EXISTS coupons (
    id bigint PRIMARY KEY,
    order_id bigint NOT NULL,
    code text NOT NULL
);

CREATE INDEX IF NOT EXISTS coupons_order_idx ON coupons (order_id);

ALTER TABLE coupons ADD CONSTRAINT coupons_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id);

ALTER TABLE coupons ADD CONSTRAINT coupons_code_unique UNIQUE (code);
