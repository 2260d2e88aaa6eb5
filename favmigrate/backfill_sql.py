"""The statements of one backfill batch, composed for the spec's columns from their types (coltypes).

Kept apart from backfill.py, which runs them (passes, checkpoint, retries, progress): this module only
builds text, for any number of columns of any supported type. The templates are sql/backfill_classify.sql
(shared: read, judge, decide), sql/backfill_batch.sql (a real batch) and sql/backfill_dry_run.sql.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from psycopg import sql

from favmigrate.coltypes import ColumnRules, Reason, legacy_text, legacy_value
from favmigrate.resources import read_sql
from favmigrate.spec import IndexSpec, Target
from favmigrate.state import HISTORY_SCHEMA

REJECTS_TABLE = sql.Identifier(HISTORY_SCHEMA, "backfill_rejects")
CONFLICT = "conflict"


@dataclass(frozen=True)
class Reference:
    """The row a column's value must name (its foreign key), and the reason when it is missing."""

    table: sql.Identifier
    column: str
    unknown: str = Reason.UNKNOWN_REFERENCE.value
    table_name: str = ""  # for messages


@dataclass(frozen=True)
class BackfillColumn:
    """One column the backfill fills from one legacy key."""

    name: str
    key: str
    rules: ColumnRules
    fill_default: str | None = None  # a NOT NULL column's default: filled like NULL
    reference: Reference | None = None
    unique: bool = False  # a member of a unique index of the spec: a value another row holds is rejected

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reject reasons this column can give."""
        found = [self.rules.invalid.value]
        if self.rules.bounds is not None:
            found.append(Reason.OUT_OF_RANGE.value)
        if self.rules.max_length is not None:
            found.append(Reason.TOO_LONG.value)
        if self.rules.allowed is not None:
            found.append(Reason.NOT_ALLOWED.value)
        if self.reference is not None:
            found.append(self.reference.unknown)
        if self.unique:
            found.append(Reason.DUPLICATE_VALUE.value)
        return tuple(found)

    def default_literal(self) -> sql.Composable | None:
        return None if self.fill_default is None else self.rules.literal(self.fill_default)


def backfill_columns(target: Target) -> tuple[BackfillColumn, ...]:
    """The spec's columns as the backfill fills them, in spec order. Pure."""
    found = []
    keyed = {name for index in unique_indexes(target) for name in index.columns}
    for column in target.spec.columns:
        fk = column.foreign_key
        reference = None if fk is None else Reference(target.qualified(fk.referenced_table), fk.referenced_column,
                                                      fk.unknown_reason, fk.referenced_table)
        fill_default = column.default_text if not column.nullable else None
        found.append(BackfillColumn(column.name, column.legacy_key, column.rules, fill_default, reference,
                                    column.name in keyed))
    return tuple(found)


def unique_indexes(target: Target) -> tuple[IndexSpec, ...]:
    """The spec's unique indexes on at least one of its columns: the keys backfill must not duplicate. Pure."""
    promoted = {column.name for column in target.spec.columns}
    return tuple(index for index in target.spec.indexes if index.unique and promoted.intersection(index.columns))


def reject_reasons(columns: tuple[BackfillColumn, ...]) -> tuple[str, ...]:
    """Every reason a backfill of these columns can report, in the order of coltypes.Reason (each once)."""
    given = {reason for column in columns for reason in column.reasons} | {Reason.METADATA_NOT_OBJECT.value}
    order = [r.value for r in Reason]
    ranked = {reason: order.index(Reason.UNKNOWN_REFERENCE.value) for reason in given if reason not in order}
    ranked.update({reason: order.index(reason) for reason in given if reason in order})
    return tuple(sorted(given, key=lambda reason: (ranked[reason], reason)))


# ---------------------------------------------------------------- per-column names inside the statement

JSONB_BUILD_PAIRS = 50  # jsonb_build_object takes at most 100 arguments (FUNC_MAX_ARGS)


def jsonb_object(pairs: Sequence[tuple[sql.Composable, sql.Composable]]) -> sql.Composable:
    """A jsonb object of any number of (key, value) pairs: jsonb_build_object calls of at most 50 pairs, joined
    by ``||`` (a single call when the pairs fit in one). Pure."""
    calls = [sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
        sql.SQL("{}, {}").format(key, value) for key, value in pairs[start:start + JSONB_BUILD_PAIRS]))
        for start in range(0, max(len(pairs), 1), JSONB_BUILD_PAIRS)]
    return calls[0] if len(calls) == 1 else sql.SQL("({})").format(sql.SQL(" || ").join(calls))



def _name(i: int, part: str) -> sql.Identifier:
    return sql.Identifier(f"c{i}_{part}")


def _each(columns: tuple[BackfillColumn, ...], piece: Callable[[int, BackfillColumn], sql.Composable],
          separator: str = ",\n           ") -> sql.Composed:
    return sql.SQL(separator).join(piece(i, column) for i, column in enumerate(columns))


def _empty(column: BackfillColumn, current: sql.Composable, value: sql.Composable) -> sql.Composable:
    """The column holds nothing yet: NULL, or (a NOT NULL column) its default while the legacy value differs."""
    default = column.default_literal()
    if default is None:
        return sql.SQL("{} IS NULL").format(current)
    return sql.SQL("({cur} IS NULL OR ({cur} = {default} AND {value} <> {json}))").format(
        cur=current, default=default, value=value, json=column.rules.write_back(default))


def candidate(target: Target, columns: tuple[BackfillColumn, ...], alias: str, *, pending: bool) -> sql.Composed:
    """Rows worth a look: metadata that is not an object, or that holds a legacy key.

    ``pending`` narrows it to what a catch-up pass must revisit: a legacy value whose column is still
    empty and that was not already reported as rejected with this very value. Reads the rejects table,
    so only for real runs.
    """
    meta = sql.Identifier(alias, target.spec.metadata_column)
    not_object = sql.SQL("jsonb_typeof({meta}) <> 'object'").format(meta=meta)
    if not pending:
        keys = sql.SQL(", ").join(sql.Literal(c.key) for c in columns)
        return sql.SQL("({not_object} OR {meta} ?| ARRAY[{keys}])").format(not_object=not_object, meta=meta,
                                                                            keys=keys)

    def unreported(key: str, value: sql.Composable) -> sql.Composed:
        # a correlated scalar subquery: one primary-key probe per row that gets this far (NOT EXISTS
        # would be planned as a hash of every reject, rebuilt for every batch)
        return sql.SQL(
            "{value} IS DISTINCT FROM (SELECT r.value FROM {rejects} AS r WHERE r.migration_id = %(migration_id)s "
            "AND r.target_schema = %(target_schema)s AND r.row_id = {pk}::text AND r.key = {key})"
        ).format(rejects=REJECTS_TABLE, pk=sql.Identifier(alias, target.spec.primary_key), key=sql.Literal(key),
                 value=value)

    parts = [sql.SQL("({not_object} AND {unreported})").format(not_object=not_object,
                                                               unreported=unreported("", meta))]
    for column in columns:
        value = sql.SQL("({meta} -> {key})").format(meta=meta, key=sql.Literal(column.key))
        empty = _empty(column, sql.Identifier(alias, column.name), value)
        parts.append(sql.SQL("(jsonb_typeof({meta}) = 'object' AND {empty} AND nullif({value}, 'null') IS NOT NULL "
                             "AND {unreported})").format(meta=meta, empty=empty, value=value,
                                                         unreported=unreported(column.key, value)))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts))


def classify(target: Target, columns: tuple[BackfillColumn, ...], *, in_batch: sql.Composable,
             candidate: sql.Composable, row_lock: bool, lock_references: bool, claimed: bool = False) -> sql.Composed:
    """The shared head of a batch (sql/backfill_classify.sql): the CTEs batch .. decided and rejects.

    ``claimed``: a key in a dry run's claimed_table (an earlier batch of the same dry run would have written it)
    is a duplicate too."""
    spec = target.spec
    metadata = sql.SQL("t.{}").format(sql.Identifier(spec.metadata_column))

    def read(i: int, c: BackfillColumn) -> sql.Composable:
        return sql.SQL("t.{col} AS {cur},\n           {raw} AS {raw_name},\n           {text} AS {text_name}").format(
            col=sql.Identifier(c.name), cur=_name(i, "cur"), raw=legacy_value(metadata, c.key),
            raw_name=_name(i, "raw"), text=legacy_text(metadata, c.key), text_name=_name(i, "text"))

    def parsed(i: int, c: BackfillColumn) -> sql.Composable:
        return sql.SQL("{} AS {}").format(c.rules.parse(_name(i, "raw"), _name(i, "text")), _name(i, "parsed"))

    def value(i: int, c: BackfillColumn) -> sql.Composable:
        return sql.SQL("{} AS {}").format(c.rules.value(_name(i, "parsed")), _name(i, "value"))

    referenced = [(i, c, c.reference) for i, c in enumerate(columns) if c.reference is not None]
    lookups = [sql.SQL(
        "{lookup} AS (\n    SELECT m.{ref} AS id\n    FROM {table} AS m\n"
        "    WHERE m.{ref} IN (SELECT p.{value} FROM parsed AS p WHERE p.{value} IS NOT NULL)\n    {lock}\n),\n"
    ).format(lookup=_name(i, "found"), ref=sql.Identifier(ref.column), table=ref.table, value=_name(i, "value"),
             lock=sql.SQL("FOR KEY SHARE OF m") if lock_references else sql.SQL(""))
        for i, _, ref in referenced]
    joins = [sql.SQL("LEFT JOIN {lookup} AS {alias} ON {alias}.id = p.{value}").format(
        lookup=_name(i, "found"), alias=_name(i, "ref"), value=_name(i, "value")) for i, _, _ in referenced]

    def status(i: int, c: BackfillColumn) -> sql.Composable:
        unknown: sql.Composable = sql.SQL("")
        if c.reference is not None:
            unknown = sql.SQL(" WHEN {alias}.id IS NULL THEN {reason}").format(
                alias=_name(i, "ref"), reason=sql.Literal(c.reference.unknown))
        return sql.SQL("CASE WHEN {raw} IS NULL THEN NULL WHEN {reason} IS NOT NULL THEN {reason}{unknown} "
                       "ELSE 'ok' END AS {status}").format(
            raw=_name(i, "raw"), reason=c.rules.reason(_name(i, "raw"), _name(i, "parsed"), _name(i, "value")),
            unknown=unknown, status=_name(i, "status"))

    def decision(i: int, c: BackfillColumn) -> sql.Composable:
        current, value = _name(i, "cur"), _name(i, "value")
        default = c.default_literal()
        empty = sql.SQL("{} IS NULL").format(current) if default is None else \
            sql.SQL("{cur} IS NULL OR {cur} = {default}").format(cur=current, default=default)
        return sql.SQL(
            "CASE WHEN {status} = 'ok' THEN CASE WHEN {cur} = {value} THEN 'same' WHEN {empty} THEN 'update' "
            "WHEN %(overwrite)s THEN 'update' ELSE 'conflict' END END"
        ).format(status=_name(i, "status"), cur=current, value=value, empty=empty)

    uniques = unique_indexes(target)
    position = {c.name: i for i, c in enumerate(columns)}

    def action(i: int, c: BackfillColumn) -> sql.Composable:
        decided = decision(i, c)
        duplicates = [sql.SQL("{}").format(_unique_name(k, "duplicate")) for k, index in enumerate(uniques)
                      if c.name in index.columns]
        if duplicates:
            decided = sql.SQL("CASE WHEN ({dup}) AND {decided} = 'update' THEN {reason} ELSE {decided} END").format(
                dup=sql.SQL(" OR ").join(duplicates), decided=decided, reason=sql.Literal(Reason.DUPLICATE_VALUE.value))
        return sql.SQL("{} AS {}").format(decided, _name(i, "action"))

    def rejects(i: int, c: BackfillColumn) -> sql.Composable:
        kept = sql.SQL("IN ('conflict', {})").format(sql.Literal(Reason.DUPLICATE_VALUE.value)) if c.unique \
            else sql.SQL("= 'conflict'")
        return sql.SQL(
            "UNION ALL\n    SELECT d.row_id, {key},"
            "\n           CASE WHEN d.{action} {kept} THEN d.{action} ELSE d.{status} END,"
            "\n           d.{raw}, CASE WHEN d.{action} = 'conflict' THEN to_jsonb(d.{cur}) END\n"
            "    FROM decided AS d WHERE d.{status} <> 'ok' OR d.{action} {kept}"
        ).format(key=sql.Literal(c.key), action=_name(i, "action"), status=_name(i, "status"), raw=_name(i, "raw"),
                 cur=_name(i, "cur"), kept=kept)

    unique_checks: sql.Composable = sql.SQL("")
    if uniques:
        unique_checks = _unique_checks(target, uniques, {name: (i, decision(i, columns[i]))
                                                         for name, i in position.items()}, claimed=claimed)

    return sql.SQL(read_sql("backfill_classify.sql").strip()).format(
        pk=sql.Identifier(spec.primary_key), metadata=sql.Identifier(spec.metadata_column), table=target.table,
        in_batch=in_batch, candidate=candidate,
        # a row another transaction holds is skipped, not waited for: one long transaction must not stop
        # the run; the batch reports it and the run retries it at its end
        row_lock=sql.SQL("FOR NO KEY UPDATE OF t SKIP LOCKED") if row_lock else sql.SQL(""),
        read_columns=_each(columns, read), parsed_columns=_each(columns, parsed), value_columns=_each(columns, value),
        lookups=sql.SQL("").join(lookups), lookup_joins=sql.SQL("\n    ").join(joins),
        status_columns=_each(columns, status), action_columns=_each(columns, action),
        unique_checks=unique_checks, decide_from=sql.Identifier("unique_checked" if uniques else "judged"),
        column_rejects=_each(columns, rejects, "\n    "),
    )


def _unique_name(k: int, part: str) -> sql.Identifier:
    return sql.Identifier(f"u{k}_{part}")


def claimed_table(k: int) -> sql.Identifier:
    """The keys of unique index k that the earlier batches of a dry run would have written: a temporary table
    (the dry run writes nothing else, so its batches can see what those would have written)."""
    return sql.Identifier("pg_temp", f"favmigrate_claimed_{k}")


def claimable(index: IndexSpec) -> bool:
    """A dry run records the keys of this unique index: not a partial one, whose predicate would have to be
    judged on the row as the batch would leave it."""
    return index.predicate is None


def _unique_checks(target: Target, uniques: tuple[IndexSpec, ...],
                   decisions: dict[str, tuple[int, sql.Composable]], *, claimed: bool = False) -> sql.Composed:
    """The CTEs proposed and unique_checked: per unique index k, the key each row would hold after the batch
    (u<k>_<m>), whether the row writes part of it (u<k>_writes), and u<k>_duplicate: it writes a key with no
    NULL that another row of the table holds, or that a row of the batch with a lower primary key writes
    (``claimed``: or that claimed_table(k) holds)."""
    keys: list[sql.Composable] = []
    flags: list[sql.Composable] = []
    needs_row = False
    for k, index in enumerate(uniques):
        writes: list[sql.Composable] = []
        parts = [_unique_name(k, str(m)) for m in range(len(index.columns))]
        for part, name in zip(parts, index.columns, strict=True):
            if name in decisions:
                i, decided = decisions[name]
                updates = sql.SQL("({}) = 'update'").format(decided)
                writes.append(updates)
                keys.append(sql.SQL("CASE WHEN {updates} THEN j.{value} ELSE j.{cur} END AS {part}").format(
                    updates=updates, value=_name(i, "value"), cur=_name(i, "cur"), part=part))
            else:  # a column the table has already: as the row holds it
                needs_row = True
                keys.append(sql.SQL("r.{} AS {}").format(sql.Identifier(name), part))
        keys.append(sql.SQL("({}) AS {}").format(sql.SQL(" OR ").join(writes), _unique_name(k, "writes")))
        held = sql.SQL(" AND ").join(sql.SQL("o.{} = p.{}").format(sql.Identifier(name), part)
                                    for part, name in zip(parts, index.columns, strict=True))
        predicate = sql.SQL("") if index.predicate is None else sql.SQL(" AND ({})").format(sql.SQL(index.predicate))
        in_claims: sql.Composable = sql.SQL("")
        if claimed and claimable(index):
            in_claims = sql.SQL("\n               OR EXISTS (SELECT FROM {claims} AS o WHERE {held})").format(
                claims=claimed_table(k), held=held)
        flags.append(sql.SQL(
            "p.{writes} AND {not_null} AND (row_number() OVER (PARTITION BY p.{writes}, {parts} ORDER BY p.row_id) > 1"
            "\n               OR EXISTS (SELECT FROM {table} AS o WHERE {held} AND o.ctid <> p.row_ctid{predicate})"
            "{in_claims}) AS {duplicate}").format(
            writes=_unique_name(k, "writes"), table=target.table, held=held, predicate=predicate, in_claims=in_claims,
            not_null=sql.SQL(" AND ").join(sql.SQL("p.{} IS NOT NULL").format(part) for part in parts),
            parts=sql.SQL(", ").join(sql.SQL("p.{}").format(part) for part in parts),
            duplicate=_unique_name(k, "duplicate")))
    row = sql.SQL("\n    JOIN {} AS r ON r.ctid = j.row_ctid").format(target.table) if needs_row else sql.SQL("")
    return sql.SQL(
        "proposed AS (\n    -- the key of each unique index as the row would hold it after this batch\n"
        "    SELECT j.*,\n           {keys}\n    FROM judged AS j{row}\n),\n"
        "unique_checked AS (\n    SELECT p.*,\n           {flags}\n    FROM proposed AS p\n),\n"
    ).format(keys=sql.SQL(",\n           ").join(keys), row=row, flags=sql.SQL(",\n           ").join(flags))


def claims(target: Target, columns: tuple[BackfillColumn, ...]) -> sql.Composed:
    """The data-modifying CTEs of a dry run's batch that add to each claimed_table the keys the batch would write
    (a key of the batch's decided rows with no NULL, one of whose columns the row would update); ahead of each,
    the comma that continues the batch's WITH list."""
    position = {c.name: i for i, c in enumerate(columns)}
    added: list[sql.Composable] = []
    for k, index in enumerate(unique_indexes(target)):
        if not claimable(index):
            continue
        parts = [_unique_name(k, str(m)) for m in range(len(index.columns))]
        updates = [sql.SQL("d.{} = 'update'").format(_name(position[name], "action"))
                   for name in index.columns if name in position]
        added.append(sql.SQL(
            ",\nclaimed_{k} AS (\n    INSERT INTO {claims} ({names})\n    SELECT {parts} FROM decided AS d\n"
            "    WHERE ({updates}) AND {not_null}\n)").format(
            k=sql.SQL(str(k)), claims=claimed_table(k),
            names=sql.SQL(", ").join(sql.Identifier(name) for name in index.columns),
            parts=sql.SQL(", ").join(sql.SQL("d.{}").format(part) for part in parts),
            updates=sql.SQL(" OR ").join(updates),
            not_null=sql.SQL(" AND ").join(sql.SQL("d.{} IS NOT NULL").format(part) for part in parts)))
    return sql.Composed(added)


def actions(columns: tuple[BackfillColumn, ...], alias: str = "d") -> sql.Composed:
    """The per-column action names, for ``'update' IN (...)``."""
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), _name(i, "action"))
                              for i in range(len(columns)))


def assignments(columns: tuple[BackfillColumn, ...]) -> sql.Composed:
    """SET list of an UPDATE ... FROM decided AS d: each column takes its value where its action is update."""
    return _each(columns, lambda i, c: sql.SQL(
        "{col} = CASE WHEN d.{action} = 'update' THEN d.{value} ELSE t.{col} END").format(
        col=sql.Identifier(c.name), action=_name(i, "action"), value=_name(i, "value")), ",\n        ")


def batch_template(target: Target, columns: tuple[BackfillColumn, ...], *, classified: sql.Composable,
                   in_batch: sql.Composable, last_key: sql.Composable, row_match: sql.Composable,
                   dry_run: bool, claimed: bool = False) -> sql.Composed:
    """The whole statement of one batch (sql/backfill_batch.sql, or sql/backfill_dry_run.sql; ``claimed``: it
    records the unique keys it would write, see claims)."""
    if dry_run:
        counts = jsonb_object([(sql.Literal(c.name), sql.SQL("(SELECT count(*) FROM decided WHERE {} = 'update')")
                                .format(_name(i, "action"))) for i, c in enumerate(columns)])
    else:
        counts = jsonb_object([(sql.Literal(c.name), sql.SQL("(SELECT count(*) FROM updated WHERE {})")
                                .format(_name(i, "updated"))) for i, c in enumerate(columns)])
    flags = _each(columns, lambda i, c: sql.SQL("d.{action} = 'update' AS {flag}").format(
        action=_name(i, "action"), flag=_name(i, "updated")), ",\n              ")
    template = read_sql("backfill_dry_run.sql" if dry_run else "backfill_batch.sql")
    return sql.SQL(template.strip().rstrip(";")).format(
        classify=classified, table=target.table, in_batch=in_batch, last_key=last_key, rejects_table=REJECTS_TABLE,
        row_match=row_match, assignments=assignments(columns), actions=actions(columns), updated_flags=flags,
        updated_counts=counts, claims=claims(target, columns) if claimed else sql.SQL(""),
    )
