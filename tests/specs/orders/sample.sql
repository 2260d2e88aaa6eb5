-- The orders spec's sample for `favmigrate --spec tests/specs/orders demo`: its tables before the
-- migration, and current_setting('favmigrate.sample_rows') orders whose `data` carries the legacy keys.
-- Every 50th order holds values the backfill must reject (a quantity "many", a warehouse that does not
-- exist, a channel outside the allowed ones); every 10th has no legacy key at all.
CREATE TABLE customers (id uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE warehouses (id integer PRIMARY KEY, city text NOT NULL);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status text NOT NULL DEFAULT 'open',
    data jsonb NOT NULL DEFAULT '{}'
);

INSERT INTO customers
SELECT md5('customer:' || n)::uuid, 'customer ' || n FROM generate_series(1, 50) AS n;
INSERT INTO warehouses VALUES (1, 'Lyon'), (2, 'Turin'), (3, 'Porto');

INSERT INTO orders (status, data)
SELECT CASE WHEN n % 4 = 0 THEN 'open' ELSE 'shipped' END,
       CASE WHEN n % 10 = 0 THEN jsonb_build_object('source', 'import')
            WHEN n % 50 = 1 THEN jsonb_build_object('customer', md5('customer:' || (n % 50 + 1))::uuid::text,
                                                     'qty', 'many', 'warehouse', 99, 'ref', 1000 + n,
                                                     'total', '12.50', 'gift', false, 'channel', 'fax',
                                                     'shipped_at', '2025-11-02T10:00:00Z', 'due', '2025-12-01')
            ELSE jsonb_build_object('customer', md5('customer:' || (n % 50 + 1))::uuid::text,
                                    'qty', n % 7 + 1, 'warehouse', n % 3 + 1, 'ref', 1000 + n,
                                    'total', (n % 500) || '.' || lpad((n % 100)::text, 2, '0'),
                                    'gift', n % 3 = 0, 'channel', (ARRAY['web', 'store', 'phone'])[1 + n % 3],
                                    'shipped_at', to_char(timestamptz '2025-11-01 00:00:00+00'
                                                          + make_interval(mins => n), 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                    'due', to_char(date '2025-12-01' + n % 30, 'YYYY-MM-DD'))
       END
FROM generate_series(1, current_setting('favmigrate.sample_rows')::int) AS n;

ANALYZE customers;
ANALYZE warehouses;
ANALYZE orders;
