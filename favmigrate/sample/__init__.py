"""The shipped sample database (before the migration) and its deterministic data generator.

``load_sample()`` creates the Supabase-like schema of ``schema.sql`` (``auth`` stub, ``mechanics``,
``session_requests``, ``feature_flags``) and fills it with set-based ``INSERT ... SELECT`` statements:
every value is derived from ``md5(seed, row number)``, so a seed always gives the same rows
(``created_at`` spreads over the 90 days before 2025-11-01; a legacy ``priority_notified_at`` follows its
row's ``created_at`` by seconds, as the notification did).

Row ``n`` (1-based) of ``session_requests`` falls in the metadata case chosen by its slot
``(n - 1) % 1000``, so the number of rows in each case is exact (`expected_case_counts`).
Legacy Phase 3 rows carry ``priority_mechanic_id``, ``priority_window_minutes`` and
``priority_notified_at`` in ``metadata``; every object ``metadata`` also carries the unrelated keys
``source`` and ``client_version``, which a backfill must leave alone. Expected backfill outcome per
key (mechanic / window / notified_at); a window is valid from 1 to 1440 minutes; a timestamp without
an offset is read as UTC:

======================== ===== ============================================= =======================================
case                     /1000 metadata holds                                mechanic / window / notified_at
======================== ===== ============================================= =======================================
full_valid                 200 lowercase uuid, integer, ``...Z`` time        ok / ok / ok
mechanic_uppercase          10 upper-case uuid                               ok / ok / ok
window_numeric_string       10 window ``"15"``                               ok / ok / ok
window_integral_float       10 window ``10.0``                               ok / ok / ok
notified_offset             10 time with ``+05:30``                          ok / ok / ok
notified_no_offset          10 time without offset (UTC)                     ok / ok / ok
keys_json_null              10 all three keys JSON ``null``                  absent / absent / absent
only_mechanic               10 only ``priority_mechanic_id``                 ok / absent / absent
window_and_notified_only    10 no ``priority_mechanic_id``                   absent / ok / ok
mechanic_not_uuid            3 ``"abc"``                                     invalid_uuid / ok / ok
mechanic_braced              3 ``"{<uuid>}"``                                invalid_uuid / ok / ok
mechanic_padded              3 ``" <uuid> "``                                invalid_uuid / ok / ok
mechanic_departed            6 uuid of a deleted mechanic                    unknown_mechanic / ok / ok
window_word                  3 ``"ten"``                                     ok / invalid_integer / ok
window_fraction              3 ``12.5``                                      ok / invalid_integer / ok
window_zero                  3 ``0``                                         ok / out_of_range / ok
window_negative              3 ``-5``                                        ok / out_of_range / ok
window_too_large             3 ``1441``                                      ok / out_of_range / ok
window_decimal_string        3 ``"10.0"``                                    ok / invalid_integer / ok
window_empty_string          3 ``""``                                        ok / invalid_integer / ok
window_boolean               3 ``true``                                      ok / invalid_integer / ok
window_array                 3 ``[10]``                                      ok / invalid_integer / ok
notified_now                 3 ``"now"``                                     ok / ok / invalid_timestamp
notified_yesterday           3 ``"yesterday"``                               ok / ok / invalid_timestamp
notified_infinity            3 ``"infinity"``                                ok / ok / invalid_timestamp
notified_epoch_number        3 ``1730000000``-like number                    ok / ok / invalid_timestamp
notified_epoch_string        3 ``"1730000000"``-like string                  ok / ok / invalid_timestamp
notified_js_date             3 ``"Sat Nov 02 2025 01:00:00 GMT+0000 (...)"`` ok / ok / invalid_timestamp
notified_impossible_date     3 ``"2025-02-30T10:00:00Z"``                    ok / ok / invalid_timestamp
departed_and_bad_window      3 deleted mechanic, window ``"30 min"``         unknown_mechanic / invalid_integer / ok
metadata_array               3 JSON array holding a legacy object            metadata_not_object (whole row)
metadata_string              3 JSON string                                   metadata_not_object (whole row)
metadata_number              3 JSON number                                   metadata_not_object (whole row)
plain                      645 no legacy key                                 absent / absent / absent
======================== ===== ============================================= =======================================
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from favmigrate.errors import FavmigrateError, UsageError
from favmigrate.stall import WriteTransaction

SLOTS = 1000
LEGACY_KEYS = ("priority_mechanic_id", "priority_window_minutes", "priority_notified_at")
WINDOW_MINUTES_RANGE = (1, 1440)
FEATURE_FLAG_KEY = "ENABLE_FAVORITES_PRIORITY"
_SEED_LIMIT = 2**58  # the generator hashes with seed * 16 + k as a bigint


class SampleAlreadyLoaded(FavmigrateError):
    """The target schema already holds the sample tables; nothing was changed."""


class Outcome(StrEnum):
    """What a backfill should conclude for one legacy key of one row."""

    OK = "ok"
    ABSENT = "absent"
    INVALID_UUID = "invalid_uuid"
    UNKNOWN_MECHANIC = "unknown_mechanic"
    OUT_OF_RANGE = "out_of_range"
    INVALID_INTEGER = "invalid_integer"
    INVALID_TIMESTAMP = "invalid_timestamp"
    METADATA_NOT_OBJECT = "metadata_not_object"


@dataclass(frozen=True)
class MetadataCase:
    """One category of ``session_requests.metadata`` and the backfill outcome expected per key.

    ``slots`` is the case's share of every 1000 consecutive rows. ``metadata_sql`` is the SQL
    expression that builds the metadata; it reads ``v.base`` (the unrelated keys), ``v.mech`` and
    ``v.dead`` (uuid text of a live and of a deleted mechanic), ``v.win`` (int) and ``v.ts``.
    """

    name: str
    slots: int
    description: str
    mechanic_id: Outcome
    window_minutes: Outcome
    notified_at: Outcome
    metadata_sql: str

    @property
    def outcomes(self) -> dict[str, Outcome]:
        """Expected outcome keyed by legacy metadata key."""
        return dict(zip(LEGACY_KEYS, (self.mechanic_id, self.window_minutes, self.notified_at),
                        strict=True))

    @property
    def legacy(self) -> bool:
        """True when rows of this case carry legacy data (any key present, or non-object metadata)."""
        return self.name != "plain"


@dataclass(frozen=True)
class SampleSummary:
    """What ``load_sample`` created: live mechanics, requests, legacy rows, deleted mechanics."""

    mechanics: int
    session_requests: int
    legacy_rows: int
    deleted_mechanics: int


# SQL building blocks of the cases (constant text, composed with sql.SQL).
_TS_Z = "to_char(v.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
_TS_LOCAL = "to_char(v.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
_TS_IST = ("to_char((v.ts AT TIME ZONE 'UTC') + interval '5 hours 30 minutes', "
           "'YYYY-MM-DD\"T\"HH24:MI:SS') || '+05:30'")
_TS_JS = ("to_char(v.ts AT TIME ZONE 'UTC', 'Dy Mon DD YYYY HH24:MI:SS') "
          "|| ' GMT+0000 (Coordinated Universal Time)'")
_EPOCH = "extract(epoch FROM v.ts)::bigint"


def _keys(mechanic: str | None = "v.mech", window: str | None = "v.win",
          notified: str | None = _TS_Z) -> str:
    """SQL for the unrelated keys plus the given legacy keys (None leaves a key out)."""
    pairs = [f"'{key}', {value}" for key, value in zip(LEGACY_KEYS, (mechanic, window, notified),
                                                       strict=True) if value is not None]
    return "v.base || jsonb_build_object(" + ", ".join(pairs) + ")"


def _case(name: str, slots: int, description: str, outcomes: tuple[Outcome, Outcome, Outcome],
          metadata_sql: str) -> MetadataCase:
    return MetadataCase(name, slots, description, *outcomes, metadata_sql=metadata_sql)


_O, _A = Outcome.OK, Outcome.ABSENT
_NOT_OBJECT = (Outcome.METADATA_NOT_OBJECT,) * 3

METADATA_CASES: tuple[MetadataCase, ...] = (
    _case("full_valid", 200, "lowercase uuid of a live mechanic, integer window, ISO timestamp with Z",
          (_O, _O, _O), _keys()),
    _case("mechanic_uppercase", 10, "upper-case uuid of a live mechanic",
          (_O, _O, _O), _keys(mechanic="upper(v.mech)")),
    _case("window_numeric_string", 10, "window as a JSON string of digits, e.g. \"15\"",
          (_O, _O, _O), _keys(window="v.win::text")),
    _case("window_integral_float", 10, "window as the JSON number 10.0",
          (_O, _O, _O), _keys(window="10.0")),
    _case("notified_offset", 10, "timestamp with a +05:30 offset",
          (_O, _O, _O), _keys(notified=_TS_IST)),
    _case("notified_no_offset", 10, "timestamp without an offset (read as UTC)",
          (_O, _O, _O), _keys(notified=_TS_LOCAL)),
    _case("keys_json_null", 10, "all three keys present with JSON null",
          (_A, _A, _A), _keys("NULL::text", "NULL::text", "NULL::text")),
    _case("only_mechanic", 10, "only priority_mechanic_id present",
          (_O, _A, _A), _keys(window=None, notified=None)),
    _case("window_and_notified_only", 10, "window and timestamp present, no mechanic",
          (_A, _O, _O), _keys(mechanic=None)),
    _case("mechanic_not_uuid", 3, "mechanic id \"abc\"",
          (Outcome.INVALID_UUID, _O, _O), _keys(mechanic="'abc'::text")),
    _case("mechanic_braced", 3, "mechanic uuid wrapped in braces",
          (Outcome.INVALID_UUID, _O, _O), _keys(mechanic="'{' || v.mech || '}'")),
    _case("mechanic_padded", 3, "mechanic uuid with surrounding spaces",
          (Outcome.INVALID_UUID, _O, _O), _keys(mechanic="' ' || v.mech || ' '")),
    _case("mechanic_departed", 6, "well-formed uuid of a mechanic that was deleted",
          (Outcome.UNKNOWN_MECHANIC, _O, _O), _keys(mechanic="v.dead")),
    _case("window_word", 3, "window \"ten\"",
          (_O, Outcome.INVALID_INTEGER, _O), _keys(window="'ten'::text")),
    _case("window_fraction", 3, "window 12.5",
          (_O, Outcome.INVALID_INTEGER, _O), _keys(window="12.5")),
    _case("window_zero", 3, "window 0",
          (_O, Outcome.OUT_OF_RANGE, _O), _keys(window="0")),
    _case("window_negative", 3, "window -5",
          (_O, Outcome.OUT_OF_RANGE, _O), _keys(window="-5")),
    _case("window_too_large", 3, "window 1441 (more than a day)",
          (_O, Outcome.OUT_OF_RANGE, _O), _keys(window="1441")),
    _case("window_decimal_string", 3, "window \"10.0\" (a string with a decimal point)",
          (_O, Outcome.INVALID_INTEGER, _O), _keys(window="'10.0'::text")),
    _case("window_empty_string", 3, "window \"\"",
          (_O, Outcome.INVALID_INTEGER, _O), _keys(window="''::text")),
    _case("window_boolean", 3, "window true",
          (_O, Outcome.INVALID_INTEGER, _O), _keys(window="true")),
    _case("window_array", 3, "window [10]",
          (_O, Outcome.INVALID_INTEGER, _O), _keys(window="jsonb_build_array(10)")),
    _case("notified_now", 3, "timestamp \"now\"",
          (_O, _O, Outcome.INVALID_TIMESTAMP), _keys(notified="'now'::text")),
    _case("notified_yesterday", 3, "timestamp \"yesterday\"",
          (_O, _O, Outcome.INVALID_TIMESTAMP), _keys(notified="'yesterday'::text")),
    _case("notified_infinity", 3, "timestamp \"infinity\"",
          (_O, _O, Outcome.INVALID_TIMESTAMP), _keys(notified="'infinity'::text")),
    _case("notified_epoch_number", 3, "timestamp as a JSON number of epoch seconds",
          (_O, _O, Outcome.INVALID_TIMESTAMP), _keys(notified=_EPOCH)),
    _case("notified_epoch_string", 3, "timestamp as a string of epoch seconds",
          (_O, _O, Outcome.INVALID_TIMESTAMP), _keys(notified=_EPOCH + "::text")),
    _case("notified_js_date", 3, "timestamp in JavaScript Date.toString() form",
          (_O, _O, Outcome.INVALID_TIMESTAMP), _keys(notified=_TS_JS)),
    _case("notified_impossible_date", 3, "timestamp \"2025-02-30T10:00:00Z\" (no such day)",
          (_O, _O, Outcome.INVALID_TIMESTAMP), _keys(notified="'2025-02-30T10:00:00Z'::text")),
    _case("departed_and_bad_window", 3, "deleted mechanic and window \"30 min\"",
          (Outcome.UNKNOWN_MECHANIC, Outcome.INVALID_INTEGER, _O),
          _keys(mechanic="v.dead", window="'30 min'::text")),
    _case("metadata_array", 3, "metadata is a JSON array holding a legacy object",
          _NOT_OBJECT, "jsonb_build_array(" + _keys() + ")"),
    _case("metadata_string", 3, "metadata is a JSON string",
          _NOT_OBJECT, "to_jsonb('priority_mechanic_id=' || v.mech)"),
    _case("metadata_number", 3, "metadata is a JSON number",
          _NOT_OBJECT, "to_jsonb(v.win)"),
    _case("plain", 645, "no legacy key, only the unrelated keys",
          (_A, _A, _A), "v.base"),
)

assert sum(case.slots for case in METADATA_CASES) == SLOTS


def _rows_in_slot(rows: int, slot: int) -> int:
    """How many n in 1..rows have (n - 1) % SLOTS == slot."""
    return 0 if rows <= slot else (rows - 1 - slot) // SLOTS + 1


def expected_case_counts(rows: int) -> dict[str, int]:
    """How many of ``rows`` generated session requests fall in each metadata case. Pure."""
    counts: dict[str, int] = {}
    start = 0
    for case in METADATA_CASES:
        counts[case.name] = sum(_rows_in_slot(rows, slot) for slot in range(start, start + case.slots))
        start += case.slots
    return counts


def expected_outcome_counts(rows: int) -> dict[str, dict[str, int]]:
    """Expected backfill outcomes for ``rows`` generated requests: {legacy key: {outcome: rows}}. Pure."""
    per_case = expected_case_counts(rows)
    result: dict[str, dict[str, int]] = {key: {} for key in LEGACY_KEYS}
    for case in METADATA_CASES:
        for key, outcome in case.outcomes.items():
            result[key][outcome.value] = result[key].get(outcome.value, 0) + per_case[case.name]
    return result


def mechanic_counts(rows: int) -> tuple[int, int]:
    """(mechanics generated, of which deleted) for a sample of ``rows`` requests. Pure."""
    generated = max(20, min(1000, rows // 50))
    return generated, generated // 20


def expected_summary(rows: int) -> SampleSummary:
    """The `SampleSummary` that ``load_sample(rows=rows)`` returns. Pure."""
    generated, deleted = mechanic_counts(rows)
    plain = expected_case_counts(rows)["plain"]
    return SampleSummary(mechanics=generated - deleted, session_requests=rows,
                         legacy_rows=rows - plain, deleted_mechanics=deleted)


def expected_rejects(rows: int) -> dict[str, int]:
    """The values a backfill of ``rows`` generated requests rejects, per reason (the outcomes that are not
    ok or absent); metadata that is not an object is one reject for the whole row. Pure."""
    counts: dict[str, int] = {}
    per_case = expected_case_counts(rows)
    for case in METADATA_CASES:
        outcomes = set(case.outcomes.values())
        if outcomes == {Outcome.METADATA_NOT_OBJECT}:
            counts[Outcome.METADATA_NOT_OBJECT.value] = (counts.get(Outcome.METADATA_NOT_OBJECT.value, 0)
                                                        + per_case[case.name])
            continue
        for outcome in case.outcomes.values():
            if outcome not in (Outcome.OK, Outcome.ABSENT):
                counts[outcome.value] = counts.get(outcome.value, 0) + per_case[case.name]
    return counts


def schema_sql() -> str:
    """The text of the shipped ``schema.sql``."""
    return resources.files("favmigrate.sample").joinpath("schema.sql").read_text(encoding="utf-8")


SEED_SQL_FILE = "seed_original.sql"


def seed_sql() -> str:
    """The seed's hand-written Phase 4 SQL (``seed_original.sql``), verbatim: what favmigrate replaces."""
    return resources.files("favmigrate.sample").joinpath(SEED_SQL_FILE).read_text(encoding="utf-8")


def sample_writes(rows: int, *, seed: int = 42, schema: str = "public") -> WriteTransaction:
    """The application's writes on a loaded sample, one transaction per call (see `favmigrate.stall`).

    Even calls UPDATE the status of an existing request (picked by its generated id, spread over the
    ``rows`` requests), odd ones INSERT a new pending request. Writes.
    """
    table = sql.Identifier(schema, "session_requests")
    status_type = sql.Identifier(schema, "session_request_status")
    insert = sql.SQL("INSERT INTO {} (customer_id, status, metadata) VALUES (%s, 'pending', '{{}}'::jsonb)"
                     ).format(table)
    update = sql.SQL("UPDATE {} SET status = %s::{} WHERE id = md5(%s || ':request:' || %s)::uuid").format(
        table, status_type)

    def write(conn: psycopg.Connection[Any], n: int) -> str:
        if n % 2:
            with conn.transaction():
                conn.execute(insert, (uuid.uuid4(),))
            return "insert"
        with conn.transaction():
            conn.execute(update, ("accepted" if n % 4 else "cancelled", str(seed), 1 + (n * 7919) % rows))
        return "update"

    return write


def load_sample(conn: psycopg.Connection[Any], *, rows: int = 10_000, seed: int = 42, schema: str = "public",
                progress: Callable[[str], None] | None = None) -> SampleSummary:
    """Create the sample schema in ``schema`` (plus the ``auth`` stub) and fill it. Writes.

    Runs in one transaction (a savepoint if ``conn`` is already in one). Raises UsageError for
    ``rows < 1`` or a seed beyond +-2**58, and SampleAlreadyLoaded when ``schema`` already has a
    ``session_requests`` table.
    """
    if rows < 1:
        raise UsageError(f"rows must be at least 1, not {rows}")
    if not -_SEED_LIMIT <= seed < _SEED_LIMIT:
        raise UsageError(f"seed must be between {-_SEED_LIMIT} and {_SEED_LIMIT - 1}, not {seed}")
    say = progress or (lambda message: None)
    generated, deleted = mechanic_counts(rows)
    customers = max(10, rows // 8)
    seed_text = sql.Literal(str(seed))
    with conn.transaction():
        found = conn.execute("SELECT 1 FROM pg_catalog.pg_class c "
                             "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE n.nspname = %s AND c.relname = 'session_requests'",
                             (schema,)).fetchone()
        if found is not None:
            raise SampleAlreadyLoaded(f"schema {schema!r} already has a session_requests table",
                                      hint="load the sample into an empty database or another schema")
        say(f"creating the sample schema in {schema!r}")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)))
        # JIT-compiling the generator's large expressions costs seconds and saves nothing.
        conn.execute("SET LOCAL jit = off")
        conn.execute(sql.SQL(schema_sql()))

        say(f"inserting {generated:,} mechanics ({deleted:,} of them then deleted)")
        conn.execute(_MECHANICS_SQL.format(seed=seed_text, mechanics=sql.Literal(generated)))
        conn.execute(_USERS_SQL.format(seed=seed_text, customers=sql.Literal(customers),
                                       mechanics=sql.Literal(generated)))
        # Deleting first leaves the same end state as deleting after the requests, without an
        # ON DELETE SET NULL scan of session_requests (mechanic_id has no index) per mechanic.
        conn.execute(sql.SQL("DELETE FROM mechanics WHERE id IN (SELECT md5({} || ':mechanic:' || i)::uuid "
                             "FROM generate_series(19, {}, 20) AS i)")
                     .format(seed_text, sql.Literal(generated - 1)))

        say(f"inserting {rows:,} session requests")
        conn.execute(_REQUESTS_SQL.format(
            seed=seed_text, rows=sql.Literal(rows), mechanics=sql.Literal(generated),
            departed=sql.Literal(deleted), customers=sql.Literal(customers), metadata=_metadata_case()))
        say("analyzing")
        for table in ("mechanics", "session_requests", "feature_flags"):
            conn.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
    return expected_summary(rows)


def _metadata_case() -> sql.Composable:
    """The CASE expression choosing each row's metadata from its slot."""
    whens: list[sql.Composable] = []
    upper = 0
    for case in METADATA_CASES[:-1]:
        upper += case.slots
        whens.append(sql.SQL("WHEN r.slot < {} THEN {}").format(
            sql.Literal(upper), sql.SQL(case.metadata_sql)))
    return sql.SQL("CASE {} ELSE {} END").format(
        sql.SQL(" ").join(whens), sql.SQL(METADATA_CASES[-1].metadata_sql))


_MECHANICS_SQL = sql.SQL("""
INSERT INTO mechanics (id, user_id, first_name, last_name, status, is_online, created_at)
SELECT md5({seed} || ':mechanic:' || i)::uuid,
       md5({seed} || ':mechanic-user:' || i)::uuid,
       (ARRAY['Alex', 'Sam', 'Jordan', 'Priya', 'Chen', 'Maria', 'Omar', 'Lena', 'Kofi', 'Yuki',
              'Diego', 'Aisha'])[1 + mod(i * 7, 12)],
       (ARRAY['Garcia', 'Smith', 'Nguyen', 'Patel', 'Okafor', 'Kim', 'Rossi', 'Novak', 'Silva',
              'Haddad', 'Berg'])[1 + mod(i * 5, 11)],
       CASE WHEN mod(i, 10) = 7 THEN 'inactive' ELSE 'active' END,
       mod(i, 3) = 0,
       timestamptz '2025-01-01 00:00:00+00' + make_interval(days => mod(i * 13, 300))
FROM generate_series(0, {mechanics} - 1) AS i
""")

_USERS_SQL = sql.SQL("""
INSERT INTO auth.users (id, email)
SELECT md5({seed} || ':customer:' || i)::uuid, 'customer' || i || '@example.com'
FROM generate_series(0, {customers} - 1) AS i
UNION ALL
SELECT md5({seed} || ':mechanic-user:' || i)::uuid, 'mechanic' || i || '@example.com'
FROM generate_series(0, {mechanics} - 1) AS i
ON CONFLICT (id) DO NOTHING
""")

# r1..r8 are independent non-negative 63-bit numbers per row. Mechanics whose index is 19 mod 20 are the
# deleted ones: v.mech steps off them, v.dead picks only them.
_REQUESTS_SQL = sql.SQL("""
INSERT INTO session_requests
    (id, created_at, updated_at, customer_id, mechanic_id, session_type, plan_code, status,
     accepted_at, notification_sent_at, metadata)
SELECT r.id, v.created_at,
       coalesce(v.accepted_at, v.notified, v.created_at) + make_interval(secs => mod(r.r5, 300)),
       md5({seed} || ':customer:' || mod(r.r8, {customers}))::uuid,
       CASE WHEN v.status = 'accepted'
            THEN (CASE WHEN mod(r.r5, 2) = 0 THEN v.mech ELSE v.other END)::uuid END,
       v.session_type, v.plan_code, v.status::session_request_status, v.accepted_at, v.notified,
       {metadata}
FROM generate_series(1, {rows}) AS g(n)
CROSS JOIN LATERAL (
    SELECT mod(g.n - 1, 1000) AS slot,
           md5({seed} || ':request:' || g.n)::uuid AS id,
           hashint8extended(g.n, {seed}::bigint * 16 + 1) & 9223372036854775807 AS r1,
           hashint8extended(g.n, {seed}::bigint * 16 + 2) & 9223372036854775807 AS r2,
           hashint8extended(g.n, {seed}::bigint * 16 + 3) & 9223372036854775807 AS r3,
           hashint8extended(g.n, {seed}::bigint * 16 + 4) & 9223372036854775807 AS r4,
           hashint8extended(g.n, {seed}::bigint * 16 + 5) & 9223372036854775807 AS r5,
           hashint8extended(g.n, {seed}::bigint * 16 + 6) & 9223372036854775807 AS r6,
           hashint8extended(g.n, {seed}::bigint * 16 + 7) & 9223372036854775807 AS r7,
           hashint8extended(g.n, {seed}::bigint * 16 + 8) & 9223372036854775807 AS r8
    -- OFFSET 0 keeps this subquery from being flattened: every reference below reuses the
    -- computed values instead of repeating the hashing.
    OFFSET 0
) AS r
CROSS JOIN LATERAL (
    SELECT mod(r.r1, {mechanics}) - CASE WHEN mod(mod(r.r1, {mechanics}), 20) = 19 THEN 1 ELSE 0 END AS mech_i,
           mod(r.r2, {mechanics}) - CASE WHEN mod(mod(r.r2, {mechanics}), 20) = 19 THEN 1 ELSE 0 END AS other_i,
           mod(r.r3, {departed}) * 20 + 19 AS dead_i,
           CASE WHEN mod(r.r6, 100) < 55 THEN 'accepted'
                WHEN mod(r.r6, 100) < 80 THEN 'pending'
                ELSE 'cancelled' END AS status,
           timestamptz '2025-11-01 00:00:00+00' - make_interval(secs => mod(r.r7, 90 * 86400)) AS created_at
) AS s
CROSS JOIN LATERAL (
    SELECT md5({seed} || ':mechanic:' || s.mech_i)::uuid::text AS mech,
           md5({seed} || ':mechanic:' || s.other_i)::uuid::text AS other,
           md5({seed} || ':mechanic:' || s.dead_i)::uuid::text AS dead,
           (ARRAY[5, 10, 15, 20, 30, 45, 60])[1 + mod(r.r4, 7)] AS win,
           s.created_at + make_interval(secs => 1 + mod(r.r5, 20)) AS ts,
           jsonb_build_object(
               'source', (ARRAY['web', 'ios', 'android', 'partner_api'])[1 + mod(r.r5, 4)],
               'client_version', '3.' || mod(r.r6, 12) || '.' || mod(r.r6, 7)) AS base,
           s.status,
           s.created_at,
           CASE WHEN s.status = 'accepted'
                THEN s.created_at + make_interval(secs => 20 + mod(r.r8, 1800)) END AS accepted_at,
           CASE WHEN s.status <> 'pending' OR mod(r.r5, 3) = 0
                THEN s.created_at + make_interval(secs => 1 + mod(r.r5, 20)) END AS notified,
           (ARRAY['diagnostic', 'diagnostic', 'diagnostic', 'diagnostic', 'diagnostic', 'diagnostic',
                  'diagnostic', 'repair', 'repair', 'inspection'])[1 + mod(r.r3, 10)] AS session_type,
           (ARRAY[NULL, NULL, 'basic', 'basic', 'premium', 'fleet'])[1 + mod(r.r4, 6)] AS plan_code
) AS v
""")
