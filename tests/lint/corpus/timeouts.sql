-- No timeouts: the first statements needing them are flagged, once per file.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS d text;

ALTER TABLE orders ADD CONSTRAINT orders_d_check CHECK (d <> '') NOT VALID;

CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_d_idx ON orders (d);
