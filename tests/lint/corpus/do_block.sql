-- DDL inside DO bodies and constant EXECUTE strings; a dollar quote holding semicolons; comments
-- holding DDL-looking text (CREATE INDEX x ON y (z); DROP TABLE y;) are not statements.
SET lock_timeout = '2s';
SET statement_timeout = '10s';

DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'orders_state_idx') THEN
        CREATE INDEX orders_state_idx ON orders (state);
    END IF;
    EXECUTE 'ALTER TABLE orders DROP COLUMN IF EXISTS obsolete';
    RAISE NOTICE 'done; nothing else to do; DROP TABLE orders;';
END
$do$;

/* ALTER TABLE orders ADD CONSTRAINT x FOREIGN KEY (a) REFERENCES b (id); */
SELECT $$ ALTER TABLE orders RENAME TO x; $$ AS not_ddl;
