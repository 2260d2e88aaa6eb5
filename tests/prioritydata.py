"""Priority data with known answers for the explain and report tests, written straight into the columns."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from favmigrate.apply import apply_migration
from favmigrate.spec import Target, load_spec


def target() -> Target:
    return Target(load_spec())


def apply(conn: psycopg.Connection[Any]) -> None:
    """Bring the database to the migration's end state (the columns and indexes the queries need)."""
    report = apply_migration(conn, target())
    assert report.ok, report.to_dict()


def add_mechanic(conn: psycopg.Connection[Any], first: str, last: str) -> str:
    row = conn.execute("INSERT INTO mechanics (first_name, last_name) VALUES (%s, %s) RETURNING id::text",
                       (first, last)).fetchone()
    assert row is not None
    return str(row[0])


def add_request(
    conn: psycopg.Connection[Any], *, preferred: str | None, status: str = "pending", mechanic: str | None = None,
    created_at: str = "2025-01-15T12:00:00Z", notified_ago_s: float | None = None,
    accepted_after_s: float | None = None,
    window: int = 10,
) -> str:
    """One session request. Times are relative to now(): notified ``notified_ago_s`` seconds ago, accepted
    ``accepted_after_s`` seconds after the notification."""
    row = conn.execute(
        """
        INSERT INTO session_requests (customer_id, created_at, status, mechanic_id, preferred_mechanic_id,
                                      priority_window_minutes, priority_notified_at, accepted_at)
        SELECT gen_random_uuid(), %(created_at)s, %(status)s, %(mechanic)s, %(preferred)s, %(window)s, n.at,
               n.at + make_interval(secs => %(accepted_after)s)
        FROM (SELECT now() - make_interval(secs => %(notified_ago)s) AS at) n
        RETURNING id::text
        """,
        {"created_at": created_at, "status": status, "mechanic": mechanic, "preferred": preferred, "window": window,
         "notified_ago": notified_ago_s, "accepted_after": accepted_after_s},
    ).fetchone()
    assert row is not None
    return str(row[0])


def bulk_priority_rows(conn: psycopg.Connection[Any], rows: int, *, mechanics: int = 30,
                       priority_share: float = 0.05) -> None:
    """``rows`` more requests, one a minute up to now; the newest ``priority_share`` of them have a preferred
    mechanic, notified a minute after creation (the feature is new); 2% of all are pending. Then ANALYZE."""
    ids = [add_mechanic(conn, "Bulk", f"Mechanic {n:03d}") for n in range(mechanics)]
    first_priority = rows - int(rows * priority_share)
    conn.execute(
        sql.SQL(
            """
            INSERT INTO session_requests (customer_id, created_at, status, mechanic_id, preferred_mechanic_id,
                                          priority_window_minutes, priority_notified_at, accepted_at)
            SELECT gen_random_uuid(),
                   now() - make_interval(mins => {rows} - g),
                   (CASE WHEN g %% 50 = 0 THEN 'pending' WHEN g %% 3 = 0 THEN 'cancelled' ELSE 'accepted' END)
                       ::session_request_status,
                   CASE WHEN g %% 50 <> 0 AND g %% 3 <> 0 THEN m.ids[1 + (g + 1) %% {mechanics}] END,
                   CASE WHEN g > {first} THEN m.ids[1 + g %% {mechanics}] END,
                   10,
                   CASE WHEN g > {first} THEN now() - make_interval(mins => {rows} - g - 1) END,
                   CASE WHEN g %% 50 <> 0 AND g %% 3 <> 0 THEN now() - interval '55 minutes' END
            FROM generate_series(1, {rows}) AS g, (SELECT %s::uuid[] AS ids) AS m
            """
        ).format(rows=sql.Literal(rows), mechanics=sql.Literal(mechanics), first=sql.Literal(first_priority)),
        (ids,),
    )
    conn.execute("ANALYZE session_requests")
    conn.execute("ANALYZE mechanics")
