"""coltypes on a real PostgreSQL: every line of the reading rules, evaluated over literal JSON values in one
statement (so no value may abort it), in the staged and the one-expression form; canonical write-back and
round trips; type names and limits without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from favmigrate.coltypes import ColumnRules, Kind, Reason, SqlType, json_text, legacy_text, legacy_value, parse_type

LIVE_UUID = "0b5e8f4e-2c1d-4e0a-9f3b-6a7c8d9e0f1a"


def rules(type_name: str, **limits: Any) -> ColumnRules:
    return ColumnRules(parse_type(type_name), **limits)


def evaluate(conn: psycopg.Connection[Any], column: ColumnRules, values: list[str | None]) -> list[tuple[Any, ...]]:
    """Per JSON text (None: the key is absent): (staged value, staged reason, inline value, inline reason).

    The staged form runs as a batch statement does: the texts extracted from a metadata object, a
    materialized pattern step, then value and reason by name.
    """
    meta, raw, text, parsed, value = (sql.Identifier(n) for n in ("meta", "raw", "text", "parsed", "value"))
    query = sql.SQL(
        "WITH input AS (SELECT u.i, CASE WHEN u.v IS NULL THEN '{{}}'::jsonb ELSE jsonb_build_object('k', u.v::jsonb)"
        " END AS meta FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i)), "
        "extracted AS (SELECT i, {raw_of} AS raw, {text_of} AS text FROM input), "
        "parsed AS MATERIALIZED (SELECT i, raw, {parse} AS parsed FROM extracted), "
        "valued AS (SELECT i, raw, parsed, {value_of} AS value FROM parsed) "
        "SELECT value, {reason}, {read}, {read_reason} FROM valued ORDER BY i"
    ).format(
        raw_of=legacy_value(meta, "k"), text_of=legacy_text(meta, "k"), parse=column.parse(raw, text),
        value_of=column.value(parsed), reason=column.reason(raw, parsed, value),
        read=column.read(raw), read_reason=column.read_reason(raw),
    )
    return [tuple(row) for row in conn.execute(query, (values,)).fetchall()]


def check(conn: psycopg.Connection[Any], column: ColumnRules, cases: list[tuple[str, Any]]) -> None:
    """Each JSON text reads as the expected value, or is rejected with the expected reason."""
    found = evaluate(conn, column, [text for text, _ in cases])
    for (text, expected), (value, reason, inline_value, inline_reason) in zip(cases, found, strict=True):
        assert (inline_value, inline_reason) == (value, reason), f"{text}: one-expression form differs"
        if isinstance(expected, Reason):
            assert (value, reason) == (None, expected.value), text
        else:
            assert reason is None, (text, reason)
            assert value == expected and type(value) is type(expected), (text, value)
            if isinstance(expected, Decimal):  # stored at the column's scale, never rounded
                assert value.as_tuple().exponent == -(column.type.scale or 0), (text, value)


UUID_CASES: list[tuple[str, Any]] = [
    (f'"{LIVE_UUID}"', uuid.UUID(LIVE_UUID)),
    (f'"{LIVE_UUID.upper()}"', uuid.UUID(LIVE_UUID)),
    (f'"{{{LIVE_UUID}}}"', Reason.INVALID_UUID),
    (f'" {LIVE_UUID} "', Reason.INVALID_UUID),
    (f'"{LIVE_UUID}\\n"', Reason.INVALID_UUID),
    (f'"{LIVE_UUID.replace("-", "")}"', Reason.INVALID_UUID),
    ('"abc"', Reason.INVALID_UUID),
    ('""', Reason.INVALID_UUID),
    ("42", Reason.INVALID_UUID),
    (f'["{LIVE_UUID}"]', Reason.INVALID_UUID),
    ("true", Reason.INVALID_UUID),
]

WINDOW_CASES: list[tuple[str, Any]] = [  # integer, min 1, max 1440
    ("10", 10), ("10.0", 10), ("1e2", 100), ('"15"', 15), ('"0015"', 15), ("1", 1), ("1440", 1440),
    ("12.5", Reason.INVALID_INTEGER), ('"ten"', Reason.INVALID_INTEGER), ('""', Reason.INVALID_INTEGER),
    ('"-5"', Reason.INVALID_INTEGER), ('"10.0"', Reason.INVALID_INTEGER), ("true", Reason.INVALID_INTEGER),
    ("[10]", Reason.INVALID_INTEGER), ('" 10"', Reason.INVALID_INTEGER), ('"１０"', Reason.INVALID_INTEGER),
    ('"1e3"', Reason.INVALID_INTEGER), ('{"minutes": 10}', Reason.INVALID_INTEGER),
    ("0", Reason.OUT_OF_RANGE), ("-5", Reason.OUT_OF_RANGE), ("1441", Reason.OUT_OF_RANGE),
    ('"0"', Reason.OUT_OF_RANGE), ("99999999999", Reason.OUT_OF_RANGE), ('"99999999999"', Reason.OUT_OF_RANGE),
    ('"' + "9" * 400 + '"', Reason.OUT_OF_RANGE), ("1e400", Reason.OUT_OF_RANGE),
]

SMALLINT_CASES: list[tuple[str, Any]] = [
    ("32767", 32767), ("-32768", -32768), ('"32767"', 32767),
    ("32768", Reason.OUT_OF_RANGE), ("-32769", Reason.OUT_OF_RANGE), ('"32768"', Reason.OUT_OF_RANGE),
    ("1.5", Reason.INVALID_INTEGER),
]

INTEGER_CASES: list[tuple[str, Any]] = [
    ("2147483647", 2147483647), ("-2147483648", -2147483648), ('"000"', 0),
    ("2147483648", Reason.OUT_OF_RANGE), ('"2147483648"', Reason.OUT_OF_RANGE),
]

BIGINT_CASES: list[tuple[str, Any]] = [
    ("9223372036854775807", 9223372036854775807), ('"9223372036854775807"', 9223372036854775807),
    ("-9223372036854775808", -9223372036854775808), ("9.223372036854775807e18", 9223372036854775807),
    ("9223372036854775808", Reason.OUT_OF_RANGE), ('"9223372036854775808"', Reason.OUT_OF_RANGE),
    ('"' + "9" * 20 + '"', Reason.OUT_OF_RANGE), ('"' + "9" * 21 + '"', Reason.OUT_OF_RANGE),
    ('"' + "0" * 30 + "7" + '"', 7), ("-9223372036854775809", Reason.OUT_OF_RANGE),
    ('"-1"', Reason.INVALID_INTEGER),
]

PRICE_CASES: list[tuple[str, Any]] = [  # numeric(6,2), min -100, max 1000
    ("12.5", Decimal("12.50")), ('"12.5"', Decimal("12.50")), ("12.50", Decimal("12.50")),
    ("12.500", Decimal("12.50")), ('"12.3400"', Decimal("12.34")), ('"-3.25"', Decimal("-3.25")),
    ("1e2", Decimal("100.00")), ("0", Decimal("0.00")), ('"007.10"', Decimal("7.10")), ('"-0"', Decimal("0.00")),
    ("1000", Decimal("1000.00")), ('"-100"', Decimal("-100.00")), ('"1.' + "0" * 5000 + '"', Decimal("1.00")),
    ('"NaN"', Reason.INVALID_NUMERIC), ('"1e2"', Reason.INVALID_NUMERIC), ("12.345", Reason.INVALID_NUMERIC),
    ('"12.345"', Reason.INVALID_NUMERIC), ('"Infinity"', Reason.INVALID_NUMERIC), ('"abc"', Reason.INVALID_NUMERIC),
    ('""', Reason.INVALID_NUMERIC), ('"."', Reason.INVALID_NUMERIC), ('"1."', Reason.INVALID_NUMERIC),
    ('".5"', Reason.INVALID_NUMERIC), ('"+1"', Reason.INVALID_NUMERIC), ('" 1"', Reason.INVALID_NUMERIC),
    ('"1,5"', Reason.INVALID_NUMERIC), ("true", Reason.INVALID_NUMERIC), ("[1]", Reason.INVALID_NUMERIC),
    ('"0.' + "0" * 20000 + '1"', Reason.INVALID_NUMERIC),
    ("1000.01", Reason.OUT_OF_RANGE), ('"-100.01"', Reason.OUT_OF_RANGE), ("10000", Reason.OUT_OF_RANGE),
    ('"' + "9" * 5000 + '"', Reason.OUT_OF_RANGE), ('"-' + "9" * 200000 + '.5"', Reason.OUT_OF_RANGE),
    ("1e400", Reason.OUT_OF_RANGE),
]

RATIO_CASES: list[tuple[str, Any]] = [  # numeric(4,2) without min/max: at most 2 integer digits
    ("99.99", Decimal("99.99")), ('"-99.99"', Decimal("-99.99")), ('"0.5"', Decimal("0.50")),
    ("100", Reason.OUT_OF_RANGE), ('"100.00"', Reason.OUT_OF_RANGE), ("-100", Reason.OUT_OF_RANGE),
    ("99.999", Reason.INVALID_NUMERIC),
]

BOOLEAN_CASES: list[tuple[str, Any]] = [
    ("true", True), ("false", False), ('"true"', True), ('"false"', False),
    ('"TRUE"', Reason.INVALID_BOOLEAN), ('"True"', Reason.INVALID_BOOLEAN), ('"t"', Reason.INVALID_BOOLEAN),
    ('"yes"', Reason.INVALID_BOOLEAN), ("1", Reason.INVALID_BOOLEAN), ("0", Reason.INVALID_BOOLEAN),
    ('""', Reason.INVALID_BOOLEAN), ('" true"', Reason.INVALID_BOOLEAN), ("[true]", Reason.INVALID_BOOLEAN),
]

TEXT_CASES: list[tuple[str, Any]] = [
    ('"hello"', "hello"), ('" padded "', " padded "), ('""', ""), ('"tab\\there"', "tab\there"),
    ("5", Reason.INVALID_TEXT), ("true", Reason.INVALID_TEXT), ('["a"]', Reason.INVALID_TEXT),
    ('{"a": "b"}', Reason.INVALID_TEXT),
]

SHORT_TEXT_CASES: list[tuple[str, Any]] = [  # max_length 3
    ('"abc"', "abc"), ('"héé"', "héé"), ('"😀😀😀"', "😀😀😀"), ('"abcd"', Reason.TOO_LONG),
    ('"😀😀😀😀"', Reason.TOO_LONG), ('" ab "', Reason.TOO_LONG),
]

CONDITION_CASES: list[tuple[str, Any]] = [  # allowed new/used/refurbished, max_length 4
    ('"new"', "new"), ('"used"', "used"), ('"New"', Reason.NOT_ALLOWED), ('"old"', Reason.NOT_ALLOWED),
    ('"new "', Reason.NOT_ALLOWED), ('""', Reason.NOT_ALLOWED), ('"refurbished"', Reason.TOO_LONG),
    ("1", Reason.INVALID_TEXT),
]


def _utc(*fields: int, offset: timedelta = timedelta(0)) -> datetime:
    return datetime(*fields, tzinfo=timezone(offset)).astimezone(UTC)


TIMESTAMP_CASES: list[tuple[str, Any]] = [
    ('"2025-11-02T01:00:00Z"', _utc(2025, 11, 2, 1)),
    ('"2025-11-02T01:00:00+05:30"', _utc(2025, 11, 2, 1, offset=timedelta(hours=5, minutes=30))),
    ('"2025-11-02T01:00:00+0530"', _utc(2025, 11, 2, 1, offset=timedelta(hours=5, minutes=30))),
    ('"2025-11-02T01:00:00+05"', _utc(2025, 11, 2, 1, offset=timedelta(hours=5))),
    ('"2025-11-02T01:00:00-03:00"', _utc(2025, 11, 2, 1, offset=timedelta(hours=-3))),
    ('"2025-11-02T01:00:00"', _utc(2025, 11, 2, 1)), ('"2025-11-02T01:00"', _utc(2025, 11, 2, 1)),
    ('"2025-11-02T01:00Z"', _utc(2025, 11, 2, 1)),
    ('"2025-11-02T01:00:00.123456Z"', _utc(2025, 11, 2, 1, 0, 0, 123456)),
    ('"2025-11-02T01:00:00.5"', _utc(2025, 11, 2, 1, 0, 0, 500000)),
    ('"2024-02-29T12:00:00Z"', _utc(2024, 2, 29, 12)), ('"2000-02-29T12:00:00Z"', _utc(2000, 2, 29, 12)),
    ('"2025-02-30T10:00:00Z"', Reason.INVALID_TIMESTAMP), ('"2023-02-29T10:00:00Z"', Reason.INVALID_TIMESTAMP),
    ('"1900-02-29T10:00:00Z"', Reason.INVALID_TIMESTAMP), ('"2025-04-31T10:00:00Z"', Reason.INVALID_TIMESTAMP),
    ('"0000-01-01T00:00:00Z"', Reason.INVALID_TIMESTAMP), ('"2025-11-02T24:00:00Z"', Reason.INVALID_TIMESTAMP),
    ('"2025-11-02T01:60:00Z"', Reason.INVALID_TIMESTAMP), ('"2025-11-02T01:00:60Z"', Reason.INVALID_TIMESTAMP),
    ('"2025-11-02T01:00:00.1234567Z"', Reason.INVALID_TIMESTAMP),
    ('"2025-11-02T01:00:00+16:00"', Reason.INVALID_TIMESTAMP), ('"2025-11-02T01:00:00+05:3"', Reason.INVALID_TIMESTAMP),
    ('"2025-11-02 01:00:00Z"', Reason.INVALID_TIMESTAMP), ('"2025-11-02t01:00:00z"', Reason.INVALID_TIMESTAMP),
    ('"2025-11-02"', Reason.INVALID_TIMESTAMP), ('" 2025-11-02T01:00:00Z"', Reason.INVALID_TIMESTAMP),
    ('"now"', Reason.INVALID_TIMESTAMP), ('"infinity"', Reason.INVALID_TIMESTAMP),
    ('"epoch"', Reason.INVALID_TIMESTAMP), ("1730000000", Reason.INVALID_TIMESTAMP),
    ("true", Reason.INVALID_TIMESTAMP),
]

DATE_CASES: list[tuple[str, Any]] = [
    ('"2024-02-29"', date(2024, 2, 29)), ('"2000-02-29"', date(2000, 2, 29)), ('"2025-12-31"', date(2025, 12, 31)),
    ('"0001-01-01"', date(1, 1, 1)), ('"9999-12-31"', date(9999, 12, 31)),
    ('"2023-02-29"', Reason.INVALID_DATE), ('"1900-02-29"', Reason.INVALID_DATE), ('"2025-04-31"', Reason.INVALID_DATE),
    ('"0000-01-01"', Reason.INVALID_DATE), ('"2025-13-01"', Reason.INVALID_DATE), ('"2025-1-01"', Reason.INVALID_DATE),
    ('"2025-11-02T00:00:00Z"', Reason.INVALID_DATE), ('" 2025-11-02"', Reason.INVALID_DATE),
    ('"2025-11-02 "', Reason.INVALID_DATE), ('"20251102"', Reason.INVALID_DATE), ("20251102", Reason.INVALID_DATE),
    ('"02.11.2025"', Reason.INVALID_DATE), ('"today"', Reason.INVALID_DATE), ('"infinity"', Reason.INVALID_DATE),
    ('"10000-01-01"', Reason.INVALID_DATE), ("true", Reason.INVALID_DATE),
]


@pytest.mark.db
@pytest.mark.parametrize(("column", "cases"), [
    pytest.param(rules("uuid"), UUID_CASES, id="uuid"),
    pytest.param(rules("integer", min=1, max=1440), WINDOW_CASES, id="integer-min-max"),
    pytest.param(rules("smallint"), SMALLINT_CASES, id="smallint"),
    pytest.param(rules("integer"), INTEGER_CASES, id="integer"),
    pytest.param(rules("bigint"), BIGINT_CASES, id="bigint"),
    pytest.param(rules("numeric(6,2)", min=Decimal(-100), max=Decimal(1000)), PRICE_CASES, id="numeric-min-max"),
    pytest.param(rules("numeric(4,2)"), RATIO_CASES, id="numeric"),
    pytest.param(rules("boolean"), BOOLEAN_CASES, id="boolean"),
    pytest.param(rules("text"), TEXT_CASES, id="text"),
    pytest.param(rules("text", max_length=3), SHORT_TEXT_CASES, id="text-max-length"),
    pytest.param(rules("text", max_length=4, allowed=("new", "used", "refurbished")), CONDITION_CASES,
                 id="text-allowed"),
    pytest.param(rules("timestamptz"), TIMESTAMP_CASES, id="timestamptz"),
    pytest.param(rules("date"), DATE_CASES, id="date"),
])
def test_reading_rules(conn, column, cases):
    conn.execute("SET TimeZone = 'America/Sao_Paulo'")  # no reading may depend on the session's time zone
    conn.execute("SET DateStyle = 'ISO, DMY'")
    check(conn, column, cases)


@pytest.mark.db
@pytest.mark.parametrize("type_name", ["uuid", "integer", "numeric(6,2)", "boolean", "text", "timestamptz", "date"])
def test_absent_key_and_json_null_read_nothing_and_reject_nothing(conn, type_name):
    assert evaluate(conn, rules(type_name), [None, "null"]) == [(None, None, None, None)] * 2


@pytest.mark.db
def test_a_non_object_metadata_has_no_legacy_value(conn):
    found = conn.execute(sql.SQL("SELECT {}, {} FROM unnest(%s::jsonb[]) AS u(meta)").format(
        legacy_value(sql.Identifier("meta"), "k"), legacy_text(sql.Identifier("meta"), "k")),
        (['["k"]', '"k"', "15", "null"],)).fetchall()
    assert found == [(None, None)] * 4


ROUND_TRIPS: list[tuple[str, str, str]] = [
    # (type, column value as SQL text, its canonical JSON)
    ("uuid", LIVE_UUID.upper(), f'"{LIVE_UUID}"'),
    ("smallint", "-5", "-5"),
    ("integer", "1440", "1440"),
    ("bigint", "9223372036854775807", "9223372036854775807"),
    ("numeric(6,2)", "12.5", "12.50"),
    ("numeric(6,2)", "-3", "-3.00"),
    ("numeric(6,2)", "0", "0.00"),
    ("numeric(6,2)", "9999.99", "9999.99"),
    ("numeric(4,0)", "42", "42"),
    ("boolean", "true", "true"),
    ("boolean", "false", "false"),
    ("text", ' a "quoted" value ', '" a \\"quoted\\" value "'),
    ("text", "", '""'),
    ("timestamptz", "2025-11-02 01:00:00+00", '"2025-11-02T01:00:00Z"'),
    ("timestamptz", "2025-11-02 01:00:00.5+05:30", '"2025-11-01T19:30:00.500000Z"'),
    ("timestamptz", "2025-11-02 01:00:00.000001+00", '"2025-11-02T01:00:00.000001Z"'),
    ("date", "2024-02-29", '"2024-02-29"'),
    ("date", "0001-01-01", '"0001-01-01"'),
]


@pytest.mark.db
@pytest.mark.parametrize(("type_name", "stored", "canonical"), ROUND_TRIPS)
def test_write_back_is_canonical_and_reads_back_as_the_same_value(conn, type_name, stored, canonical):
    conn.execute("SET TimeZone = 'Asia/Kolkata'")  # the write-back renders UTC whatever the session says
    conn.execute("SET DateStyle = 'German'")
    column = rules(type_name)
    value = sql.SQL("{}::{}").format(sql.Literal(stored), column.type.sql)
    written = sql.SQL("({})").format(column.write_back(value))
    found = conn.execute(sql.SQL("SELECT {written}::text, {same}, {read} = {value}, {reason}").format(
        written=written, same=column.reads_same(written, value), read=column.read(written), value=value,
        reason=column.read_reason(written))).fetchone()
    assert found == (canonical, True, True, None)


@pytest.mark.db
def test_reads_same_compares_meanings_not_spellings(conn):
    cases = [
        (rules("uuid"), f'"{LIVE_UUID.upper()}"', f"'{LIVE_UUID}'::uuid", True),
        (rules("integer"), '"0010"', "10", True),
        (rules("integer"), "10.0", "10", True),
        (rules("integer"), '"11"', "10", False),
        (rules("integer"), '"ten"', "10", False),
        (rules("numeric(6,2)"), '"12.5"', "12.50", True),
        (rules("numeric(6,2)"), "12.51", "12.50", False),
        (rules("boolean"), '"false"', "false", True),
        (rules("text"), '"a "', "'a'", False),
        (rules("timestamptz"), '"2025-11-02T06:30:00+05:30"', "'2025-11-02T01:00:00Z'::timestamptz", True),
        (rules("timestamptz"), '"2025-11-02T01:00:00"', "'2025-11-02T01:00:00Z'::timestamptz", True),
        (rules("date"), '"2025-11-02"', "'2025-11-03'::date", False),
    ]
    for column, raw, stored, same in cases:
        legacy = sql.SQL("{}::jsonb").format(sql.Literal(raw))
        stored = sql.SQL("({})::{}").format(sql.SQL(stored), column.type.sql)
        found = conn.execute(sql.SQL("SELECT {}, ({})::text IS NOT DISTINCT FROM ({})::text").format(
            column.reads_same(legacy, stored), column.write_back(column.read(legacy)),
            column.write_back(stored))).fetchone()
        # canonical JSON is one text per value: rollback compares meanings by comparing those texts
        assert found == (same, same), (column.type.name, raw)


@pytest.mark.db
def test_typed_literal_of_a_spec_default(conn):
    for type_name, text, expected in [("integer", "10", 10), ("numeric(6,2)", "1.5", Decimal("1.50")),
                                      ("text", "it's", "it's"), ("boolean", "false", False)]:
        assert conn.execute(sql.SQL("SELECT {}").format(rules(type_name).literal(text))).fetchone() == (expected,)


@pytest.mark.db
def test_json_text_is_the_string_or_null(conn):
    found = conn.execute(sql.SQL("SELECT {} FROM unnest(%s::jsonb[]) WITH ORDINALITY AS u(v, i) ORDER BY i").format(
        json_text(sql.Identifier("v"))), (['"a\\"b"', "1", "null", "[]"],)).fetchall()
    assert found == [('a"b',), (None,), (None,), (None,)]


# ---------------------------------------------------------------- no database


@pytest.mark.parametrize(("text", "expected"), [
    ("uuid", SqlType(Kind.UUID)), ("INTEGER", SqlType(Kind.INTEGER)), ("int4", SqlType(Kind.INTEGER)),
    ("int2", SqlType(Kind.SMALLINT)), ("bigint", SqlType(Kind.BIGINT)), ("bool", SqlType(Kind.BOOLEAN)),
    ("text", SqlType(Kind.TEXT)), ("timestamptz", SqlType(Kind.TIMESTAMPTZ)),
    ("timestamp  with time zone", SqlType(Kind.TIMESTAMPTZ)), ("date", SqlType(Kind.DATE)),
    ("numeric(12,2)", SqlType(Kind.NUMERIC, 12, 2)), ("decimal( 5 , 0 )", SqlType(Kind.NUMERIC, 5, 0)),
])
def test_parse_type(text, expected):
    assert parse_type(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("varchar(10)", "unsupported column type 'varchar(10)'"),
    ("timestamp", "unsupported column type 'timestamp'"),
    ("numeric", "numeric needs its precision and scale"),
    ("numeric(2,3)", "0 <= scale <= precision"),
    ("numeric(0,0)", "1 <= precision"),
    ("numeric(1001,2)", "1 <= precision <= 1000"),
])
def test_parse_type_refuses(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_type(text)


def test_type_names_as_the_catalogs_spell_them():
    assert [parse_type(t).name for t in ("timestamptz", "numeric(12,2)", "int4")] == \
        ["timestamp with time zone", "numeric(12,2)", "integer"]
    assert parse_type("numeric(12,2)").data_type == "numeric"


@pytest.mark.parametrize(("type_name", "limits", "message"), [
    ("text", {"min": 1}, "min/max apply to integer and numeric"),
    ("integer", {"max_length": 3}, "max_length/allowed apply to text"),
    ("uuid", {"allowed": ("a",)}, "max_length/allowed apply to text"),
    ("integer", {"min": 5, "max": 1}, "min 5 is above max 1"),
    ("text", {"max_length": 0}, "max_length must be at least 1"),
])
def test_rules_refuse_limits_that_do_not_fit_the_type(type_name, limits, message):
    with pytest.raises(ValueError, match=message):
        rules(type_name, **limits)


def test_bounds_are_the_spec_limits_within_the_type():
    assert rules("smallint").bounds == (-32768, 32767)
    assert rules("integer", min=1, max=1440).bounds == (1, 1440)
    assert rules("smallint", min=-99999).bounds == (-32768, 32767)
    assert rules("numeric(6,2)").bounds == (Decimal("-9999.99"), Decimal("9999.99"))
    assert rules("numeric(6,2)", max=Decimal("10.5")).bounds == (Decimal("-9999.99"), Decimal("10.5"))
    assert rules("text").bounds is None and rules("uuid").bounds is None


@pytest.mark.db
@pytest.mark.parametrize(("column", "stored", "outside"), [
    (rules("integer", min=1, max=1440), ["1", "1440", "0", "1441"], [False, False, True, True]),
    (rules("bigint", min=1), ["1", "0", "-9"], [False, True, True]),
    (rules("numeric(12,2)", min=Decimal(0), max=Decimal("9999999.99")), ["0.00", "9999999.99", "-0.01"],
     [False, False, True]),
    (rules("text", max_length=8, allowed=("web", "store", "phone")), ["web", "Web", "telephone", "phone"],
     [False, True, True, False]),
    (rules("text", max_length=3), ["abc", "abcd", "😀😀😀"], [False, True, False]),
    (rules("date"), ["2025-01-01"], [False]),
])
def test_stored_values_against_the_spec_limits(conn, column, stored, outside):
    found = [conn.execute(sql.SQL("SELECT {}").format(column.outside(column.literal(text)))).fetchone()[0]
             for text in stored]
    assert found == outside
    assert conn.execute(sql.SQL("SELECT {}").format(column.outside(sql.SQL("NULL::{}").format(column.type.sql)))
                        ).fetchone()[0] is False


def test_limits_in_words():
    assert rules("integer", min=1, max=1440).describe_limits() == "1..1440"
    assert rules("bigint", min=1).describe_limits() == ">= 1"
    assert rules("numeric(6,2)", max=Decimal("10.5")).describe_limits() == "<= 10.5"
    assert rules("text", max_length=8, allowed=("web", "store")).describe_limits() == \
        "at most 8 characters; one of web, store"
    assert not rules("date").limited and rules("text", allowed=("a",)).limited
