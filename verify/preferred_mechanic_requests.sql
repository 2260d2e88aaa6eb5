-- title: One preferred mechanic's priority requests, newest notification first (the mechanic's dashboard)
-- expects: session_requests_priority_analytics_idx
-- param: mechanic_id uuid = coalesce((SELECT preferred_mechanic_id FROM {table} WHERE preferred_mechanic_id IS NOT NULL GROUP BY preferred_mechanic_id ORDER BY count(*) DESC, preferred_mechanic_id LIMIT 1), '00000000-0000-0000-0000-000000000000')
-- param: limit integer = 50
--
-- mechanic_id defaults to the most frequent preferred_mechanic_id in the data (the nil uuid while no
-- request has one, so that a lookup is still planned). The composite index
-- (preferred_mechanic_id, priority_notified_at, status) both finds the mechanic's rows and returns
-- them in notification order, so no sort is needed.
SELECT sr.id,
       sr.status,
       sr.priority_notified_at,
       sr.priority_window_minutes,
       sr.accepted_at,
       sr.mechanic_id
FROM {table} AS sr
WHERE sr.preferred_mechanic_id = %(mechanic_id)s
  AND sr.priority_notified_at IS NOT NULL
ORDER BY sr.priority_notified_at DESC
LIMIT %(limit)s
