-- title: Pending priority requests whose window has passed (the broadcast job's scan)
-- expects: session_requests_priority_timeout_idx
--
-- A request times out when it is still pending after its own priority_notified_at +
-- priority_window_minutes; the job then offers it to every mechanic. Only rows that are pending and
-- were notified are in the partial index, so the scan stays small however large the table grows.
SELECT sr.id,
       sr.preferred_mechanic_id,
       sr.priority_notified_at,
       sr.priority_window_minutes,
       sr.priority_notified_at + make_interval(mins => sr.priority_window_minutes) AS window_ended_at
FROM {table} AS sr
WHERE sr.status = 'pending'
  AND sr.priority_notified_at IS NOT NULL
  AND sr.priority_notified_at + make_interval(mins => sr.priority_window_minutes) < now()
ORDER BY sr.priority_notified_at
