-- A statement_timeout of 0 is no limit at all.
SET lock_timeout = '1s';
SET statement_timeout = 0;

ALTER TABLE orders ADD CONSTRAINT orders_f_check CHECK (f > 0);
