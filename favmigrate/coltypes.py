"""Column types: how a legacy JSON value is read into a typed column, and how a column value is written back.

Nothing else in favmigrate knows a type. For each supported type this module composes (with
``psycopg.sql``, never raising for any input):

- the reading of a legacy JSON value in three steps over named inputs, so that a batch statement can
  run each regular expression once per row: ``parse`` (from the JSON value and, when it is a JSON
  string, its text), ``value`` (from the parsed form: the column-typed value, or NULL when it cannot
  be stored), and ``reason`` (why a present value was not read, NULL when it was);
- the canonical write-back (column value -> jsonb) and the "same value" test (does this JSON value
  read, as backfill would read it, as this column value?).

Every cast is reached only after a pattern or range test proved it safe, so no legacy value can abort
a batch. The reading rules (README: "Reading and writing rules"):

- uuid: a JSON string, canonical 8-4-4-4-12 hex in any case (stored lower-case);
- smallint/integer/bigint: an integer-valued JSON number (``10``, ``10.0``, ``1e2``) or a JSON
  string of ASCII digits; then within min..max and the type's own range;
- numeric(p,s): a JSON number or a JSON string ``-?digits[.digits]``, stored exactly: a value that
  would need rounding to s fraction digits is invalid, one with more than p-s integer digits (or
  outside min..max) is out of range;
- boolean: JSON true/false or the strings "true"/"false";
- text: a JSON string, unchanged; at most max_length characters (as char_length counts them), one of
  ``allowed`` (case-sensitive) when given;
- timestamptz: ``YYYY-MM-DDTHH:MM[:SS[.ffffff]]`` then Z, ±HH:MM, ±HHMM, ±HH or nothing (UTC), a real
  calendar day from year 0001;
- date: ``YYYY-MM-DD``, a real calendar day, years 0001-9999.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from psycopg import sql

# [0-9] rather than \d: \d follows the locale's notion of a digit.
UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
DIGITS_PATTERN = r"^[0-9]+$"
DECIMAL_PATTERN = r"^-?[0-9]+(?:\.[0-9]+)?$"
# YYYY-MM-DDTHH:MM[:SS[.ffffff]] then Z, +-HH:MM, +-HHMM or +-HH (offsets up to 15:59, as PostgreSQL's own).
# No capturing groups: they make PostgreSQL's regex engine several times slower. The fields sit at fixed
# positions, so the day check reads them with substr().
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-](?:0[0-9]|1[0-5])(?::?[0-5][0-9])?)?$"
)
DATE_PATTERN = r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"
_ISO_UTC = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
# A digits string longer than this is out of range for every integer type: it is not worth a cast.
_MAX_INTEGER_DIGITS = 20


class Kind(StrEnum):
    """The supported column types."""

    UUID = "uuid"
    SMALLINT = "smallint"
    INTEGER = "integer"
    BIGINT = "bigint"
    NUMERIC = "numeric"
    BOOLEAN = "boolean"
    TEXT = "text"
    TIMESTAMPTZ = "timestamptz"
    DATE = "date"


class Reason(StrEnum):
    """Why a legacy value was not copied into its column (reports list them in this order)."""

    INVALID_UUID = "invalid_uuid"
    UNKNOWN_REFERENCE = "unknown_reference"  # a value of a column with `references` whose row is missing
    OUT_OF_RANGE = "out_of_range"
    INVALID_INTEGER = "invalid_integer"
    INVALID_NUMERIC = "invalid_numeric"
    INVALID_BOOLEAN = "invalid_boolean"
    INVALID_TEXT = "invalid_text"
    TOO_LONG = "too_long"
    NOT_ALLOWED = "not_allowed"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_DATE = "invalid_date"
    DUPLICATE_VALUE = "duplicate_value"  # the key of a unique index another row holds, or an earlier row writes
    METADATA_NOT_OBJECT = "metadata_not_object"  # the whole row: metadata is not a JSON object


_INTEGER_RANGE = {
    Kind.SMALLINT: (-(2**15), 2**15 - 1),
    Kind.INTEGER: (-(2**31), 2**31 - 1),
    Kind.BIGINT: (-(2**63), 2**63 - 1),
}
_INVALID = {
    Kind.UUID: Reason.INVALID_UUID, Kind.SMALLINT: Reason.INVALID_INTEGER, Kind.INTEGER: Reason.INVALID_INTEGER,
    Kind.BIGINT: Reason.INVALID_INTEGER, Kind.NUMERIC: Reason.INVALID_NUMERIC, Kind.BOOLEAN: Reason.INVALID_BOOLEAN,
    Kind.TEXT: Reason.INVALID_TEXT, Kind.TIMESTAMPTZ: Reason.INVALID_TIMESTAMP, Kind.DATE: Reason.INVALID_DATE,
}
_ALIASES = {
    "uuid": Kind.UUID, "smallint": Kind.SMALLINT, "int2": Kind.SMALLINT, "integer": Kind.INTEGER, "int": Kind.INTEGER,
    "int4": Kind.INTEGER, "bigint": Kind.BIGINT, "int8": Kind.BIGINT, "boolean": Kind.BOOLEAN, "bool": Kind.BOOLEAN,
    "text": Kind.TEXT, "timestamptz": Kind.TIMESTAMPTZ, "timestamp with time zone": Kind.TIMESTAMPTZ,
    "date": Kind.DATE,
}
_NUMERIC = re.compile(r"(?:numeric|decimal)\s*\(\s*([0-9]+)\s*,\s*([0-9]+)\s*\)")
MAX_NUMERIC_PRECISION = 1000  # PostgreSQL's limit for numeric(p,s)


@dataclass(frozen=True)
class SqlType:
    """A supported column type; numeric carries its precision and scale."""

    kind: Kind
    precision: int | None = None
    scale: int | None = None

    @property
    def name(self) -> str:
        """The type as PostgreSQL's format_type() spells it: ``numeric(12,2)``, ``timestamp with time zone``."""
        if self.kind is Kind.NUMERIC:
            return f"numeric({self.precision},{self.scale})"
        if self.kind is Kind.TIMESTAMPTZ:
            return "timestamp with time zone"
        return self.kind.value

    @property
    def data_type(self) -> str:
        """The type as information_schema.columns.data_type spells it (numeric without its precision)."""
        return "numeric" if self.kind is Kind.NUMERIC else self.name

    @property
    def sql(self) -> sql.SQL:
        """The type for DDL and casts (composed from the closed set of supported types only)."""
        return sql.SQL(self.name)

    def __str__(self) -> str:
        return self.name


def parse_type(text: str) -> SqlType:
    """The supported type a spec names (``uuid``, ``integer``, ``numeric(12,2)``, ``timestamptz`` ...). Pure.

    Raises ValueError naming the supported types when ``text`` is not one of them.
    """
    spelled = " ".join(text.strip().lower().split())
    if spelled in _ALIASES:
        return SqlType(_ALIASES[spelled])
    numeric = _NUMERIC.fullmatch(spelled)
    if numeric is not None:
        precision, scale = int(numeric.group(1)), int(numeric.group(2))
        if not 1 <= precision <= MAX_NUMERIC_PRECISION or scale > precision:
            raise ValueError(f"numeric({precision},{scale}) needs 1 <= precision <= {MAX_NUMERIC_PRECISION} and "
                             "0 <= scale <= precision")
        return SqlType(Kind.NUMERIC, precision, scale)
    if spelled in ("numeric", "decimal"):
        raise ValueError("numeric needs its precision and scale, e.g. numeric(12,2)")
    raise ValueError(f"unsupported column type {text!r}; supported: uuid, smallint, integer, bigint, numeric(p,s), "
                     "boolean, text, timestamptz, date")


Number = int | Decimal


@dataclass(frozen=True)
class ColumnRules:
    """What a column accepts: its type and the spec's limits for it (``min``/``max``: integers and numeric;
    ``max_length``/``allowed``: text).
    """

    type: SqlType
    min: Number | None = None
    max: Number | None = None
    max_length: int | None = None
    allowed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        kind = self.type.kind
        numeric = kind in _INTEGER_RANGE or kind is Kind.NUMERIC
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to integer and numeric columns, not {self.type}")
        if (self.max_length is not None or self.allowed is not None) and kind is not Kind.TEXT:
            raise ValueError(f"max_length/allowed apply to text columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("max_length must be at least 1")

    @property
    def invalid(self) -> Reason:
        """The reason for a value that is not of the type at all."""
        return _INVALID[self.type.kind]

    @property
    def bounds(self) -> tuple[Number, Number] | None:
        """The accepted range of an integer or numeric column: min..max within the type's own range."""
        kind = self.type.kind
        low: Number
        high: Number
        if kind in _INTEGER_RANGE:
            low, high = _INTEGER_RANGE[kind]
        elif kind is Kind.NUMERIC:
            assert self.type.precision is not None and self.type.scale is not None
            limit = Decimal(10) ** (self.type.precision - self.type.scale) - Decimal(10) ** -self.type.scale
            low, high = -limit, limit
        else:
            return None
        return (low if self.min is None else max(low, self.min), high if self.max is None else min(high, self.max))

    # ------------------------------------------------------------ reading, in three steps

    def parse(self, raw: sql.Composable, text: sql.Composable) -> sql.Composable:
        """Step 1 (the pattern tests): ``raw`` is the JSON value (NULL when absent or JSON null), ``text`` its
        text when it is a JSON string (else NULL). NULL when the value is not of the type at all.
        """
        kind = self.type.kind
        if kind is Kind.UUID:
            return sql.SQL("CASE WHEN {text} ~ {pattern} THEN {text}::uuid END").format(
                text=text, pattern=sql.Literal(UUID_PATTERN))
        if kind in _INTEGER_RANGE:
            # an integer-valued JSON number, or a JSON string of ASCII digits, as numeric (any size)
            return sql.SQL(
                "CASE WHEN jsonb_typeof({raw}) = 'number' "
                "THEN CASE WHEN {raw}::numeric = trunc({raw}::numeric) THEN {raw}::numeric END "
                "WHEN {text} ~ {pattern} "
                "THEN CASE WHEN length(ltrim({text}, '0')) <= {digits} THEN ('0' || ltrim({text}, '0'))::numeric "
                "ELSE 10::numeric ^ {digits} END END"
            ).format(raw=raw, text=text, pattern=sql.Literal(DIGITS_PATTERN), digits=sql.Literal(_MAX_INTEGER_DIGITS))
        if kind is Kind.NUMERIC:
            return self._parse_numeric(raw, text)
        if kind is Kind.BOOLEAN:
            return sql.SQL(
                "CASE WHEN jsonb_typeof({raw}) = 'boolean' THEN {raw}::boolean "
                "WHEN {text} IN ('true', 'false') THEN {text}::boolean END").format(raw=raw, text=text)
        if kind is Kind.TEXT:
            return text
        pattern = TIMESTAMP_PATTERN if kind is Kind.TIMESTAMPTZ else DATE_PATTERN
        return sql.SQL("CASE WHEN {text} ~ {pattern} THEN {text} END").format(text=text, pattern=sql.Literal(pattern))

    def _parse_numeric(self, raw: sql.Composable, text: sql.Composable) -> sql.Composable:
        # A decimal string is measured before it is cast, and cast without its leading and trailing zeros: a
        # string of many thousand digits must not reach numeric's input (it would overflow). Too many
        # significant fraction digits: invalid (never rounded); too many integer digits: a stand-in just past
        # the type's range, so value() finds it out of range.
        assert self.type.precision is not None and self.type.scale is not None
        scale = sql.Literal(self.type.scale)
        integer_digits = sql.Literal(self.type.precision - self.type.scale)
        return sql.SQL(
            "CASE WHEN jsonb_typeof({raw}) = 'number' "
            "THEN CASE WHEN {raw}::numeric = round({raw}::numeric, {scale}) THEN {raw}::numeric END "
            "WHEN {text} ~ {pattern} "
            "THEN CASE WHEN length(rtrim(split_part({text}, '.', 2), '0')) > {scale} THEN NULL "
            "WHEN length(ltrim(split_part(ltrim({text}, '-'), '.', 1), '0')) > {integer_digits} "
            "THEN CASE WHEN left({text}, 1) = '-' THEN -1 ELSE 1 END * 10::numeric ^ {integer_digits} "
            "ELSE (CASE WHEN left({text}, 1) = '-' THEN '-' ELSE '' END || '0' "
            "|| ltrim(split_part(ltrim({text}, '-'), '.', 1), '0') || '.' || rtrim(split_part({text}, '.', 2), '0')"
            " || '0')::numeric END END"
        ).format(raw=raw, text=text, scale=scale, integer_digits=integer_digits, pattern=sql.Literal(DECIMAL_PATTERN))

    def value(self, parsed: sql.Composable) -> sql.Composable:
        """Step 2: the column-typed value from step 1's result, NULL when it cannot be stored."""
        kind = self.type.kind
        bounds = self.bounds
        if bounds is not None:
            low, high = bounds
            in_range = sql.SQL("{parsed} BETWEEN {low} AND {high}").format(
                parsed=parsed, low=sql.Literal(low), high=sql.Literal(high))
            return sql.SQL("CASE WHEN {in_range} THEN {parsed}::{type} END").format(
                in_range=in_range, parsed=parsed, type=self.type.sql)
        if kind is Kind.TEXT:
            tests: list[sql.Composable] = []
            if self.max_length is not None:
                tests.append(sql.SQL("char_length({parsed}) <= {n}").format(parsed=parsed,
                                                                              n=sql.Literal(self.max_length)))
            if self.allowed is not None:
                tests.append(self._allowed(parsed))
            if not tests:
                return parsed
            return sql.SQL("CASE WHEN {tests} THEN {parsed} END").format(tests=sql.SQL(" AND ").join(tests),
                                                                        parsed=parsed)
        if kind is Kind.TIMESTAMPTZ:
            # a real calendar day is safe to cast; no offset means UTC
            return sql.SQL(
                "CASE WHEN {real_day} THEN ({parsed} || CASE WHEN right({parsed}, 1) <> 'Z' "
                "AND strpos(substr({parsed}, 17), '+') = 0 AND strpos(substr({parsed}, 17), '-') = 0 "
                "THEN '+00' ELSE '' END)::timestamptz END"
            ).format(real_day=_real_day(parsed), parsed=parsed)
        if kind is Kind.DATE:
            return sql.SQL("CASE WHEN {real_day} THEN {parsed}::date END").format(real_day=_real_day(parsed),
                                                                                 parsed=parsed)
        return parsed

    def _allowed(self, parsed: sql.Composable) -> sql.Composable:
        assert self.allowed is not None
        # COLLATE "C": byte-wise equality, whatever the database's collation
        return sql.SQL("{parsed} COLLATE \"C\" = ANY ({allowed}::text[])").format(
            parsed=parsed, allowed=sql.Literal(list(self.allowed)))

    def reason(self, raw: sql.Composable, parsed: sql.Composable, value: sql.Composable) -> sql.Composable:
        """Step 3: why a present value was not read (text), NULL when it was read or nothing was there."""
        kind = self.type.kind
        unstored: sql.Composable = sql.Literal(self.invalid.value)
        if self.bounds is not None:
            unstored = sql.Literal(Reason.OUT_OF_RANGE.value)
        elif kind is Kind.TEXT:
            unstored = sql.Literal(Reason.NOT_ALLOWED.value)
            if self.max_length is not None:
                unstored = sql.SQL("CASE WHEN char_length({parsed}) > {n} THEN {too_long} ELSE {unstored} END").format(
                    parsed=parsed, n=sql.Literal(self.max_length), too_long=sql.Literal(Reason.TOO_LONG.value),
                    unstored=unstored)
        return sql.SQL(
            "CASE WHEN {raw} IS NULL THEN NULL WHEN {parsed} IS NULL THEN {invalid} "
            "WHEN {value} IS NULL THEN {unstored} END"
        ).format(raw=raw, parsed=parsed, value=value, invalid=sql.Literal(self.invalid.value), unstored=unstored)

    # ------------------------------------------------------------ the same steps for one value

    def reading(self, raw: sql.Composable) -> sql.Composable:
        """A one-row subquery reading the JSON value ``raw`` (columns ``value`` and ``reason``), for a FROM
        list or a LATERAL join: each step runs once (OFFSET 0 keeps the planner from inlining the steps
        into one another, which would repeat every pattern test for each use of its result).
        """
        raw0, text0 = sql.Identifier("s0", "raw"), sql.Identifier("s0", "text")
        raw1, parsed1 = sql.Identifier("s1", "raw"), sql.Identifier("s1", "parsed")
        raw2, parsed2, value2 = (sql.Identifier("s2", n) for n in ("raw", "parsed", "value"))
        return sql.SQL(
            "(SELECT {value2} AS value, {reason} AS reason FROM "
            "(SELECT {raw1}, {parsed1}, {value} AS value FROM "
            "(SELECT {raw0}, {parse} AS parsed FROM "
            "(SELECT r.raw, {text} AS text FROM (SELECT {raw} AS raw) AS r OFFSET 0) AS s0 OFFSET 0) AS s1 "
            "OFFSET 0) AS s2)"
        ).format(value2=value2, reason=self.reason(raw2, parsed2, value2), raw1=raw1, parsed1=parsed1,
                 value=self.value(parsed1), raw0=raw0, parse=self.parse(raw0, text0),
                 text=json_text(sql.Identifier("r", "raw")), raw=raw)

    def read(self, raw: sql.Composable) -> sql.Composable:
        """The column-typed value a JSON value reads as (NULL: nothing read), as a scalar subquery."""
        return sql.SQL("(SELECT x.value FROM {} AS x)").format(self.reading(raw))

    def read_reason(self, raw: sql.Composable) -> sql.Composable:
        """Why a JSON value is not read (NULL when it is, or is absent), as a scalar subquery."""
        return sql.SQL("(SELECT x.reason FROM {} AS x)").format(self.reading(raw))

    @staticmethod
    def same(read: sql.Composable, column: sql.Composable) -> sql.Composable:
        """TRUE when a value read (``read``, NULL: nothing read) is the column value; never NULL."""
        return sql.SQL("coalesce({read} = {column}, FALSE)").format(read=read, column=column)

    def reads_same(self, raw: sql.Composable, column: sql.Composable) -> sql.Composable:
        """TRUE when the JSON value ``raw`` reads (as backfill reads it) as the column value; never NULL."""
        return self.same(self.read(raw), column)

    # ------------------------------------------------------------ stored values against the spec's limits

    @property
    def limited(self) -> bool:
        """Whether the spec limits the values beyond the type (min/max, max_length, allowed)."""
        return (self.min is not None or self.max is not None or self.max_length is not None
                or self.allowed is not None)

    def outside(self, column: sql.Composable) -> sql.Composable:
        """TRUE when a stored (non-NULL) column value breaks the spec's limits; FALSE when there are none."""
        tests: list[sql.Composable] = []
        if self.min is not None:
            tests.append(sql.SQL("{} < {}").format(column, sql.Literal(self.min)))
        if self.max is not None:
            tests.append(sql.SQL("{} > {}").format(column, sql.Literal(self.max)))
        if self.max_length is not None:
            tests.append(sql.SQL("char_length({}) > {}").format(column, sql.Literal(self.max_length)))
        if self.allowed is not None:
            tests.append(sql.SQL("NOT ({})").format(self._allowed(column)))
        if not tests:
            return sql.SQL("FALSE")
        return sql.SQL("coalesce({}, FALSE)").format(sql.SQL(" OR ").join(tests))

    def describe_limits(self) -> str:
        """The spec's limits in words: ``1..1440``, ``>= 0``, ``at most 8 characters; one of web, store``."""
        parts = []
        if self.min is not None and self.max is not None:
            parts.append(f"{self.min}..{self.max}")
        elif self.min is not None:
            parts.append(f">= {self.min}")
        elif self.max is not None:
            parts.append(f"<= {self.max}")
        if self.max_length is not None:
            parts.append(f"at most {self.max_length} characters")
        if self.allowed is not None:
            parts.append("one of " + ", ".join(self.allowed))
        return "; ".join(parts)

    # ------------------------------------------------------------ writing back

    def write_back(self, column: sql.Composable) -> sql.Composable:
        """The canonical JSON of a column value (NULL for NULL): a lower-case uuid string, integers and
        numerics as JSON numbers (numerics at the column's scale), a boolean, a string, a timestamptz as
        ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (UTC), a date as ``YYYY-MM-DD``.
        """
        kind = self.type.kind
        if kind is Kind.UUID:
            return sql.SQL("to_jsonb({}::text)").format(column)  # uuid output is lower-case
        if kind is Kind.NUMERIC:
            return sql.SQL("to_jsonb({}::{})").format(column, self.type.sql)
        if kind is Kind.TIMESTAMPTZ:
            # rendered in UTC by the server (no client time zone); 'infinity' has no such form and stays text
            return sql.SQL(
                "to_jsonb(coalesce(replace(to_char({column} AT TIME ZONE 'UTC', {format}), '.000000Z', 'Z'), "
                "{column}::text))").format(column=column, format=sql.Literal(_ISO_UTC))
        if kind is Kind.DATE:
            return sql.SQL("to_jsonb(coalesce(to_char({column}, 'YYYY-MM-DD'), {column}::text))").format(
                column=column)
        return sql.SQL("to_jsonb({})").format(column)

    def literal(self, value: str) -> sql.Composable:
        """A value written as text in the spec (a column default, say) as a typed SQL literal."""
        return sql.SQL("{}::{}").format(sql.Literal(value), self.type.sql)


def json_text(raw: sql.Composable) -> sql.Composable:
    """The text of a JSON string value (NULL for any other JSON type, or SQL NULL)."""
    return sql.SQL("CASE WHEN jsonb_typeof({raw}) = 'string' THEN {raw} #>> '{{}}' END").format(raw=raw)


def legacy_value(metadata: sql.Composable, key: str) -> sql.Composable:
    """The JSON value under ``key`` in a metadata object (NULL when metadata is not an object, the key is absent,
    or holds JSON null).
    """
    return sql.SQL("CASE WHEN jsonb_typeof({meta}) = 'object' THEN nullif({meta} -> {key}, 'null') END").format(
        meta=metadata, key=sql.Literal(key))


def legacy_text(metadata: sql.Composable, key: str) -> sql.Composable:
    """The text of the JSON string under ``key`` in a metadata object (NULL for anything else)."""
    return sql.SQL(
        "CASE WHEN jsonb_typeof({meta}) = 'object' THEN "
        "CASE WHEN jsonb_typeof({meta} -> {key}) = 'string' THEN {meta} ->> {key} END END"
    ).format(meta=metadata, key=sql.Literal(key))


def _real_day(text: sql.Composable) -> sql.Composable:
    """The text, which starts with a well-formed YYYY-MM-DD, names a real calendar day (no 2025-02-30, no year 0)."""
    year = sql.SQL("substr({}, 1, 4)").format(text)
    month = sql.SQL("substr({}, 6, 2)").format(text)
    return sql.SQL(
        "{year} <> '0000' AND substr({text}, 9, 2)::integer <= CASE "
        "WHEN {month} = '02' THEN CASE WHEN mod({year}::integer, 4) = 0 AND (mod({year}::integer, 100) <> 0 "
        "OR mod({year}::integer, 400) = 0) THEN 29 ELSE 28 END "
        "WHEN {month} IN ('04', '06', '09', '11') THEN 30 ELSE 31 END"
    ).format(year=year, month=month, text=text)

