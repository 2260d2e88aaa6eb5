-- title: Priority success, response time and timeouts per preferred mechanic, with totals (favmigrate report)
-- expects: session_requests_preferred_mechanic_idx | session_requests_priority_analytics_idx
-- param: since timestamptz = NULL
-- param: until timestamptz = NULL
--
-- The query behind `favmigrate report`. A priority request is a row with a preferred mechanic, created
-- in [since, until) (a NULL bound is open). "accepted_by_preferred": accepted by that mechanic.
-- "timed_out": notified, and no acceptance within the row's own window: still pending after
-- priority_notified_at + priority_window_minutes, or accepted after it. Response times are seconds
-- from notification to acceptance by the preferred mechanic. GROUPING SETS returns one row per
-- mechanic plus the totals row (is_total), whose median is over all rows, not a mean of medians.
-- The mechanic label is built from whichever display columns mechanics has (name, first_name and
-- last_name, ...), NULL when it has none: the report always carries the mechanic id as well.
--
-- The whole predicate is read, so either index with the predicate `preferred_mechanic_id IS NOT NULL`
-- serves it; the planner takes the smaller, the single-column one, once there are a few hundred
-- priority rows, and the composite one on a tie (both one page).
WITH priority AS (
    SELECT sr.preferred_mechanic_id,
           sr.status = 'accepted' AND sr.mechanic_id = sr.preferred_mechanic_id AS by_preferred,
           sr.accepted_at - sr.priority_notified_at AS response,
           sr.priority_notified_at IS NOT NULL AS notified,
           sr.priority_notified_at IS NOT NULL AND (
               (sr.status = 'pending'
                AND now() > sr.priority_notified_at + make_interval(mins => sr.priority_window_minutes))
               OR (sr.status = 'accepted'
                   AND sr.accepted_at > sr.priority_notified_at + make_interval(mins => sr.priority_window_minutes))
           ) AS timed_out
    FROM {table} AS sr
    WHERE sr.preferred_mechanic_id IS NOT NULL
      AND (%(since)s::timestamptz IS NULL OR sr.created_at >= %(since)s::timestamptz)
      AND (%(until)s::timestamptz IS NULL OR sr.created_at < %(until)s::timestamptz)
),
per_mechanic AS (
    SELECT p.preferred_mechanic_id,
           grouping(p.preferred_mechanic_id) = 1 AS is_total,
           count(*) AS requests,
           count(*) FILTER (WHERE p.notified) AS notified,
           count(*) FILTER (WHERE p.by_preferred) AS accepted_by_preferred,
           count(*) FILTER (WHERE p.timed_out) AS timed_out,
           avg(extract(epoch FROM p.response)::float8)
               FILTER (WHERE p.by_preferred AND p.response IS NOT NULL) AS avg_response_s,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM p.response)::float8)
               FILTER (WHERE p.by_preferred AND p.response IS NOT NULL) AS median_response_s
    FROM priority AS p
    GROUP BY GROUPING SETS ((p.preferred_mechanic_id), ())
)
SELECT pm.is_total,
       pm.preferred_mechanic_id AS mechanic_id,
       {mechanic_label} AS mechanic_name,
       NOT pm.is_total AND m.id IS NULL AS mechanic_missing,
       pm.requests,
       pm.notified,
       pm.accepted_by_preferred,
       round(100.0 * pm.accepted_by_preferred / nullif(pm.requests, 0), 2) AS success_rate_pct,
       pm.timed_out,
       round(100.0 * pm.timed_out / nullif(pm.notified, 0), 2) AS timeout_rate_pct,
       pm.avg_response_s,
       pm.median_response_s
FROM per_mechanic AS pm
LEFT JOIN {referenced_table} AS m ON m.id = pm.preferred_mechanic_id
ORDER BY pm.is_total DESC,
         pm.accepted_by_preferred::numeric / nullif(pm.requests, 0) DESC NULLS LAST,
         pm.requests DESC,
         mechanic_name,
         pm.preferred_mechanic_id
