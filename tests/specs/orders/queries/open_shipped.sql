-- title: Open orders already shipped, oldest shipment first (the reconciliation job's scan)
SELECT o.id, o.shipped_at, o.customer_id
FROM {table} AS o
WHERE o.shipped_at IS NOT NULL AND o.status = 'open'
ORDER BY o.shipped_at
LIMIT 100
