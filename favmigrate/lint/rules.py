"""The lint rules (ids shared with squawk where a rule means the same) and the pass over one file.

The pass keeps the context a rule needs: tables created earlier in the file (new, empty: no index or
constraint finding on them), the transaction block (BEGIN ... COMMIT), and the lock_timeout and
statement_timeout in force (SET, SET LOCAL, RESET, set_config; a value of 0 means no limit).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from favmigrate.errors import UsageError
from favmigrate.lint.facts import Facts, NoFacts
from favmigrate.lint.findings import Finding, RuleInfo, Severity
from favmigrate.lint.source import IgnoreComment, IgnoreScope, LineIndex, Origin, Statement, Token, split_statements
from favmigrate.lint.statements import (
    Action,
    ActionKind,
    AlterTable,
    ConstraintKind,
    CreateIndex,
    CreateTable,
    DropIndex,
    DropTable,
    Settings,
    TableRef,
    Transaction,
    TransactionOp,
    shape_of,
)

W, E, N = Severity.WARNING, Severity.ERROR, Severity.NOTE

RULES: dict[str, RuleInfo] = {rule.id: rule for rule in (
    RuleInfo("require-concurrent-index-creation", W, "CREATE INDEX without CONCURRENTLY blocks writes while it builds",
             "CREATE INDEX CONCURRENTLY (outside a transaction block)"),
    RuleInfo("require-concurrent-index-deletion", W, "DROP INDEX without CONCURRENTLY blocks reads and writes",
             "DROP INDEX CONCURRENTLY (outside a transaction block)"),
    RuleInfo("ban-concurrent-index-creation-in-transaction", E,
             "CREATE INDEX CONCURRENTLY cannot run inside a transaction block or a DO block",
             "run CREATE INDEX CONCURRENTLY on its own, outside BEGIN ... COMMIT and DO"),
    RuleInfo("constraint-missing-not-valid", W,
             "a new constraint scans the whole table under a lock that blocks writes",
             "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a separate transaction"),
    RuleInfo("adding-foreign-key-constraint", W,
             "a validating foreign key blocks writes to both tables while it scans",
             "ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then VALIDATE CONSTRAINT in a separate transaction"),
    RuleInfo("disallowed-unique-constraint", W,
             "a UNIQUE or PRIMARY KEY constraint builds its index under an ACCESS EXCLUSIVE lock",
             "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX"),
    RuleInfo("require-lock-timeout", W,
             "a statement waiting for a strong lock queues every later query on the table behind it",
             "SET lock_timeout = '1s' (or set_config('lock_timeout', '1s', false)) before it, and retry"),
    RuleInfo("require-statement-timeout", W,
             "a statement that reads the whole table while blocking writes has no statement_timeout",
             "SET statement_timeout = '5s' (a non-zero value) before it"),
    RuleInfo("ban-drop-column", W, "dropping a column breaks application code still reading it",
             "stop using the column in the application first; drop it in a later release"),
    RuleInfo("ban-drop-table", W, "dropping a table breaks application code still using it",
             "stop using the table in the application first; drop it in a later release"),
    RuleInfo("changing-column-type", W,
             "changing a column's type rewrites the table under an ACCESS EXCLUSIVE lock",
             "add a new column, backfill it in batches, switch the application, drop the old one"),
    RuleInfo("renaming-column", W, "renaming a column breaks application code using the old name",
             "add a new column (or a view) and migrate the application before removing the old name"),
    RuleInfo("renaming-table", W, "renaming a table breaks application code using the old name",
             "create the new table (or a view under the new name) and migrate the application first"),
    RuleInfo("adding-field-with-default", W,
             "a volatile default or a stored generated column rewrites the table under an ACCESS EXCLUSIVE lock",
             "add the column without a default (or with a constant one), then backfill it in batches"),
    RuleInfo("adding-required-field", W,
             "adding a NOT NULL column without a default fails on a table that has rows",
             "add it with a constant DEFAULT, or nullable and backfill it, then SET NOT NULL"),
    RuleInfo("adding-not-nullable-field", W,
             "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
             "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL (PostgreSQL 12+)"),
    RuleInfo("prefer-robust-stmts", N,
             "a statement that fails when re-run after a partial failure outside a transaction",
             "use IF [NOT] EXISTS, or wrap the file in a transaction", default=False),
    RuleInfo("ban-uncommitted-transaction", W, "a transaction block is opened and never committed",
             "end the block with COMMIT"),
    RuleInfo("transaction-nesting", W, "BEGIN inside an open transaction block is ignored by PostgreSQL",
             "remove the inner BEGIN (or COMMIT the first block before it)"),
)}

# Functions known not to be volatile (fixed per statement or transaction): a default using them needs no
# rewrite. Any other function is taken as volatile unless --dsn's pg_proc says otherwise.
_NON_VOLATILE = frozenset({
    "now", "current_timestamp", "current_date", "current_time", "localtimestamp", "localtime",
    "transaction_timestamp", "statement_timestamp", "current_user", "session_user", "current_schema",
    "to_timestamp", "make_interval", "interval", "lower", "upper", "coalesce", "array", "jsonb_build_object",
    "json_build_object", "to_jsonb", "date_trunc",
})
_ZERO = re.compile(r"^\s*0+(\.0*)?\s*(us|ms|s|min|h|d)?\s*$", re.IGNORECASE)
_TIMEOUTS = ("lock_timeout", "statement_timeout")
# A missing timeout is a property of the file: reported at the first statement that needs it.
ONCE_PER_FILE = frozenset({"require-lock-timeout", "require-statement-timeout"})
# Statements (by their first words) that wait for a lock blocking reads or writes of an existing table.
_LOCKING_OTHER = {("TRUNCATE",), ("LOCK",), ("CLUSTER",), ("VACUUM", "FULL"), ("CREATE", "TRIGGER"),
                  ("DROP", "TRIGGER"), ("CREATE", "RULE")}
_SCANNING_OTHER = {("CLUSTER",), ("VACUUM", "FULL")}


def is_unset(value: str | None) -> bool:
    """A timeout that does not limit anything: absent, reset, or zero."""
    return value is None or bool(_ZERO.match(value))


@dataclass
class _Timeout:
    session: str | None = None
    local: str | None = None
    session_at_begin: str | None = None

    @property
    def is_set(self) -> bool:
        return not is_unset(self.local if self.local is not None else self.session)


@dataclass(frozen=True)
class _Hit:
    rule: str
    token: Token
    message: str
    scans: TableRef | None = None  # the table read under the lock: --dsn turns its size into the severity


@dataclass
class FileLinter:
    """One pass over one file's statements in order."""

    path: str
    text: str
    enabled: frozenset[str]
    facts: Facts = field(default_factory=NoFacts)
    new_tables: set[str] = field(default_factory=set)
    transaction: Statement | None = None  # the open BEGIN
    transaction_number: int = 0
    timeouts: dict[str, _Timeout] = field(default_factory=lambda: {name: _Timeout() for name in _TIMEOUTS})
    not_valid: dict[str, int | None] = field(default_factory=dict)  # constraint -> transaction it was added in
    not_null_checks: dict[str, tuple[str, str]] = field(default_factory=dict)  # constraint -> (table, column)
    proven_not_null: set[tuple[str, str]] = field(default_factory=set)
    dropped_constraints: set[str] = field(default_factory=set)  # DROP CONSTRAINT IF EXISTS seen
    in_do_block: bool = False
    tool_wraps: bool = False  # a migration tool runs the file in one transaction (--assume-in-transaction)
    wrapped: bool = False  # that transaction is still open (a COMMIT in the file ends it)

    def run(self) -> list[Finding]:
        """Every finding of the file, in statement order, with ignore comments applied.

        Raises UsageError for a `favmigrate:ignore` comment naming no rule.
        """
        statements, comments = split_statements(self.text)
        unknown = unknown_ignored_rules(comments)
        if unknown:
            raise UsageError(f"{self.path}: favmigrate:ignore names unknown rule(s): {', '.join(unknown)}",
                             hint="`favmigrate lint --list-rules` shows every rule id")
        file_ignored = _file_ignores(comments)
        hits: list[tuple[Statement, _Hit]] = []
        for statement in statements:
            hits += [(statement, hit) for hit in self.visit(statement)]
        if self.transaction is not None:
            hits.append((self.transaction, _Hit("ban-uncommitted-transaction", self.transaction.tokens[0],
                                                "BEGIN without a matching COMMIT: the migration's changes stay "
                                                "uncommitted (and its locks held) until the session ends")))
        lines = LineIndex(self.text)
        findings = []
        reported: set[str] = set()
        for statement, hit in hits:
            if hit.rule not in self.enabled or _ignores(statement.ignored | file_ignored, hit.rule):
                continue
            if hit.rule in ONCE_PER_FILE:
                if hit.rule in reported:
                    continue
                reported.add(hit.rule)
            findings.append(self.finding(hit, lines))
        return findings

    def finding(self, hit: _Hit, lines: LineIndex) -> Finding:
        rule = RULES[hit.rule]
        severity, message = rule.severity, hit.message
        size = self.facts.table_size(hit.scans) if hit.scans is not None else None
        if size is not None and size.is_small:
            severity, message = Severity.NOTE, f"{message} (small table: {size.describe()})"
        elif size is not None and size.is_large:
            severity, message = Severity.ERROR, f"{message} (large table: {size.describe()})"
        elif size is not None:
            message = f"{message} ({size.describe()})"
        line, column = lines.position(hit.token.offset)
        return Finding(self.path, line, column, rule.id, severity, message, rule.help)

    # ------------------------------------------------------------ the walk

    def visit(self, statement: Statement) -> Iterable[_Hit]:
        inside_do = statement.origin is not Origin.FILE
        if self.in_do_block and not inside_do and self.transaction is None and not self.wrapped:
            self._end_transaction(commit=True)  # a DO block outside BEGIN is its own transaction
        self.in_do_block = inside_do
        shape = shape_of(statement)
        hits: list[_Hit] = []
        if isinstance(shape, Transaction):
            hits += self.transaction_control(statement, shape)
        elif isinstance(shape, Settings):
            for change in shape.changes:
                self.set(change.name, change.value, change.local)
        elif isinstance(shape, CreateTable):
            if shape.table is not None:
                self.new_tables.add(shape.table.name)
            if not shape.if_not_exists:
                hits += self.robust(statement.tokens[0], "CREATE TABLE without IF NOT EXISTS")
        elif isinstance(shape, CreateIndex):
            hits += self.create_index(statement, shape)
        elif isinstance(shape, DropIndex):
            hits += self.drop_index(statement, shape)
        elif isinstance(shape, DropTable):
            hits += self.drop_table(statement, shape)
        elif isinstance(shape, AlterTable):
            hits += self.alter_table(statement, shape)
        else:
            words = statement.words(2)
            what = " ".join(w for w in words if w)
            reindex = words[0] == "REINDEX" and "CONCURRENTLY" not in statement.words(4)
            if words[:1] in _LOCKING_OTHER or words in _LOCKING_OTHER or reindex:
                hits += self.needs_lock_timeout(statement.tokens[0], what)
            if words[:1] in _SCANNING_OTHER or words in _SCANNING_OTHER or reindex:
                hits += self.needs_statement_timeout(statement.tokens[0], what)
        return hits

    def in_transaction(self, statement: Statement) -> bool:
        return self.transaction is not None or self.wrapped or statement.origin is not Origin.FILE

    def open_transaction(self) -> int | None:
        """The number of the transaction open now (0: the one the file is wrapped in), or None."""
        if self.transaction is not None:
            return self.transaction_number
        return 0 if self.wrapped else None

    def is_new(self, table: TableRef | None) -> bool:
        return table is not None and table.name in self.new_tables

    # ------------------------------------------------------------ transactions and settings

    def transaction_control(self, statement: Statement, shape: Transaction) -> list[_Hit]:
        verb = statement.tokens[0]
        hits = []
        if self.tool_wraps:  # the migration tool owns the transaction: the file's own control fights it
            hits.append(_Hit("transaction-nesting", verb, f"{verb.value} in a file the migration tool runs in a "
                             "transaction (--assume-in-transaction): " + (
                                 "PostgreSQL ignores it" if shape.op is TransactionOp.BEGIN and self.wrapped
                                 else "what follows runs outside the tool's transaction")))
        if shape.op is TransactionOp.BEGIN:
            if self.transaction is not None and not self.tool_wraps:
                hits.append(_Hit("transaction-nesting", verb, "BEGIN inside an open transaction block: PostgreSQL "
                                 "ignores it, and the first COMMIT ends both"))
            if self.transaction is None and not self.wrapped:
                self.transaction = statement
                self.transaction_number += 1
                for timeout in self.timeouts.values():
                    timeout.session_at_begin = timeout.session
            return hits
        self.wrapped = False
        self._end_transaction(commit=not verb.is_word("ROLLBACK", "ABORT"))
        return hits

    def _end_transaction(self, *, commit: bool) -> None:
        for timeout in self.timeouts.values():
            timeout.local = None
            if not commit and self.transaction is not None:
                timeout.session = timeout.session_at_begin
        self.transaction = None

    def set(self, name: str, value: str | None, local: bool) -> None:
        timeout = self.timeouts.get(name.lower())
        if timeout is None:
            return
        if local:
            if self.open_transaction() is not None or self.in_do_block:  # outside a transaction SET LOCAL does nothing
                timeout.local = value
        else:
            timeout.session, timeout.local = value, None

    def needs_lock_timeout(self, token: Token, what: str) -> list[_Hit]:
        if self.timeouts["lock_timeout"].is_set:
            return []
        return [_Hit("require-lock-timeout", token,
                     f"{what} waits for a lock that blocks the table with no lock_timeout set: every later query "
                     "on the table queues behind it")]

    def needs_statement_timeout(self, token: Token, what: str) -> list[_Hit]:
        if self.timeouts["statement_timeout"].is_set:
            return []
        return [_Hit("require-statement-timeout", token,
                     f"{what} reads the whole table while blocking writes, with no statement_timeout set "
                     "(0 means none)")]

    def robust(self, token: Token, what: str) -> list[_Hit]:
        if self.open_transaction() is not None or self.in_do_block:
            return []
        return [_Hit("prefer-robust-stmts", token, f"{what}: re-running the file after a failure part-way fails here")]

    # ------------------------------------------------------------ indexes and tables

    def create_index(self, statement: Statement, shape: CreateIndex) -> list[_Hit]:
        hits: list[_Hit] = []
        start = statement.tokens[0]
        table = shape.table
        if shape.concurrently and self.in_transaction(statement):
            where = "a DO block" if statement.origin is not Origin.FILE else "a transaction block"
            hits.append(_Hit("ban-concurrent-index-creation-in-transaction", start,
                             f"CREATE INDEX CONCURRENTLY inside {where} fails: it cannot run in a transaction"))
        if not shape.if_not_exists:
            hits += self.robust(start, "CREATE INDEX without IF NOT EXISTS")
        if self.is_new(table) or shape.concurrently:
            return hits
        hits += self.needs_lock_timeout(start, "CREATE INDEX")
        hits.append(_Hit("require-concurrent-index-creation", start,
                         f"CREATE INDEX {shape.name or ''} blocks writes to {table} while it builds".replace("  ", " "),
                         scans=table))
        hits += self.needs_statement_timeout(start, "CREATE INDEX")
        return hits

    def drop_index(self, statement: Statement, shape: DropIndex) -> list[_Hit]:
        hits: list[_Hit] = []
        start = statement.tokens[0]
        if not shape.if_exists:
            hits += self.robust(start, "DROP INDEX without IF EXISTS")
        if not shape.concurrently:
            hits += self.needs_lock_timeout(start, "DROP INDEX")
            hits.append(_Hit("require-concurrent-index-deletion", start,
                             "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on its table"))
        return hits

    def drop_table(self, statement: Statement, shape: DropTable) -> list[_Hit]:
        hits: list[_Hit] = []
        start = statement.tokens[0]
        if not shape.if_exists:
            hits += self.robust(start, "DROP TABLE without IF EXISTS")
        existing = [table for table in shape.tables if not self.is_new(table)]
        if existing:
            hits += self.needs_lock_timeout(start, "DROP TABLE")
            hits.append(_Hit("ban-drop-table", start, f"DROP TABLE {', '.join(map(str, existing))}: code still using "
                             "it breaks"))
        return hits

    # ------------------------------------------------------------ ALTER TABLE

    def alter_table(self, statement: Statement, shape: AlterTable) -> list[_Hit]:
        table = shape.table
        if self.is_new(table):
            # a new table is empty and unused: only a statement that cannot be re-run is worth a word
            said = [hit for action in shape.actions for hit in self.action(statement, table, action)]
            return [hit for hit in said if hit.rule == "prefer-robust-stmts"]
        hits: list[_Hit] = []
        blocking = [a for a in shape.actions if a.kind is not ActionKind.VALIDATE]
        if blocking:
            hits += self.needs_lock_timeout(statement.tokens[0], f"ALTER TABLE {table}")
        for action in shape.actions:
            hits += self.action(statement, table, action)
        return hits

    def action(self, statement: Statement, table: TableRef | None, action: Action) -> list[_Hit]:
        kind = action.kind
        if kind is ActionKind.ADD_COLUMN:
            return self.add_column(statement, table, action)
        if kind is ActionKind.ADD_CONSTRAINT:
            return self.add_constraint(statement, table, action)
        if kind is ActionKind.VALIDATE:
            return self.validate(statement, table, action)
        if kind is ActionKind.DROP_CONSTRAINT:
            if action.constraint:
                self.dropped_constraints.add(action.constraint)
            return [] if action.if_exists else self.robust(action.token, "DROP CONSTRAINT without IF EXISTS")
        if kind is ActionKind.DROP_COLUMN:
            hits = [_Hit("ban-drop-column", action.token, f"DROP COLUMN {action.column} of {table}: code still "
                         "reading it breaks")]
            return hits + ([] if action.if_exists else self.robust(action.token, "DROP COLUMN without IF EXISTS"))
        if kind is ActionKind.COLUMN_TYPE:
            return self.column_type(table, action)
        if kind is ActionKind.SET_NOT_NULL:
            if table is not None and (table.name, action.column or "") in self.proven_not_null:
                return []  # a validated CHECK (col IS NOT NULL) lets PostgreSQL 12+ skip the scan
            return [_Hit("adding-not-nullable-field", action.token,
                         f"SET NOT NULL on {table}.{action.column} scans the table under an ACCESS EXCLUSIVE lock",
                         scans=table),
                    *self.needs_statement_timeout(action.token, "SET NOT NULL")]
        if kind is ActionKind.RENAME_COLUMN:
            return [_Hit("renaming-column", action.token, f"RENAME COLUMN {action.column} of {table}: code using "
                         "the old name breaks"), *self.robust(action.token, "RENAME COLUMN")]
        if kind is ActionKind.RENAME_TABLE:
            return [_Hit("renaming-table", action.token, f"RENAME of {table}: code using the old name breaks"),
                    *self.robust(action.token, "RENAME TABLE")]
        return []

    def add_column(self, statement: Statement, table: TableRef | None, action: Action) -> list[_Hit]:
        hits: list[_Hit] = []
        column = f"{table}.{action.column}"
        if not action.if_exists:
            hits += self.robust(action.token, "ADD COLUMN without IF NOT EXISTS")
        volatile = self.volatile_call(action.default or ())
        rewrite = ("a stored generated column" if action.generated_stored else action.filled
                   or (f"the default {volatile}() (volatile, or unknown without --dsn)" if volatile else None))
        if rewrite:
            hits.append(_Hit("adding-field-with-default", action.token,
                             f"ADD COLUMN {column} with {rewrite} rewrites the whole table under an ACCESS EXCLUSIVE "
                             "lock", scans=table))
            hits += self.needs_statement_timeout(action.token, "ADD COLUMN with a rewrite")
        if action.not_null and action.default is None and not (action.generated_stored or action.filled):
            hits.append(_Hit("adding-required-field", action.token,
                             f"ADD COLUMN {column} NOT NULL without a DEFAULT fails as soon as the table has a row"))
        if ConstraintKind.FOREIGN_KEY in action.inline:
            hits.append(_Hit("adding-foreign-key-constraint", action.token,
                             f"ADD COLUMN {column} REFERENCES validates the new foreign key while blocking writes",
                             scans=table))
        if {ConstraintKind.UNIQUE, ConstraintKind.PRIMARY_KEY} & set(action.inline):
            hits.append(_Hit("disallowed-unique-constraint", action.token,
                             f"ADD COLUMN {column} UNIQUE/PRIMARY KEY builds its index under an ACCESS EXCLUSIVE lock",
                             scans=table))
        if action.inline:
            hits += self.needs_statement_timeout(action.token, "ADD COLUMN with a constraint")
        return hits

    def volatile_call(self, expression: Iterable[Token]) -> str | None:
        """The first function of a DEFAULT expression that is volatile, or may be (unknown without --dsn)."""
        tokens = list(expression)
        for token, after in itertools.pairwise(tokens):
            if not (token.is_word() and after.is_punct("(")):
                continue
            name = token.name
            known = self.facts.volatile(name)
            if known or (known is None and name not in _NON_VOLATILE):
                return name
        return None

    def add_constraint(self, statement: Statement, table: TableRef | None, action: Action) -> list[_Hit]:
        hits: list[_Hit] = []
        name = action.constraint or "(unnamed)"
        kind = action.constraint_kind
        if action.not_valid and action.constraint:
            self.not_valid[action.constraint] = self.open_transaction()
            if action.not_null_check and table is not None:
                self.not_null_checks[action.constraint] = (table.name, action.not_null_check)
        if action.constraint not in self.dropped_constraints:
            hits += self.robust(action.token, f"ADD CONSTRAINT {name} (it exists after a partial run)")
        if kind in (ConstraintKind.FOREIGN_KEY, ConstraintKind.CHECK) and not action.not_valid:
            hits.append(_Hit("constraint-missing-not-valid", action.token,
                             f"ADD CONSTRAINT {name} without NOT VALID scans {table} while blocking its writes",
                             scans=table))
            if kind is ConstraintKind.FOREIGN_KEY:
                hits.append(_Hit("adding-foreign-key-constraint", action.token,
                                 f"foreign key {name} is validated at once: {table} and the referenced table are "
                                 "blocked for writes during the scan", scans=table))
            hits += self.needs_statement_timeout(action.token, f"ADD CONSTRAINT {name}")
        if kind in (ConstraintKind.UNIQUE, ConstraintKind.PRIMARY_KEY) and not action.using_index:
            hits.append(_Hit("disallowed-unique-constraint", action.token,
                             f"ADD CONSTRAINT {name} builds a unique index on {table} under an ACCESS EXCLUSIVE lock",
                             scans=table))
            hits += self.needs_statement_timeout(action.token, f"ADD CONSTRAINT {name}")
        return hits

    def validate(self, statement: Statement, table: TableRef | None, action: Action) -> list[_Hit]:
        name = action.constraint or ""
        if name in self.not_null_checks:
            self.proven_not_null.add(self.not_null_checks[name])
        current = self.open_transaction()
        if name in self.not_valid and current is not None and self.not_valid[name] == current:
            return [_Hit("constraint-missing-not-valid", action.token,
                         f"VALIDATE CONSTRAINT {name} in the transaction that added it NOT VALID keeps the "
                         "blocking lock of the ADD for the whole scan", scans=table)]
        return []

    def column_type(self, table: TableRef | None, action: Action) -> list[_Hit]:
        if table is not None and action.column and self.facts.rewrite_free(table, action.column, action.type_text):
            return []
        return [_Hit("changing-column-type", action.token,
                     f"ALTER COLUMN {action.column} TYPE {action.type_text} on {table} may rewrite the table under "
                     "an ACCESS EXCLUSIVE lock", scans=table),
                *self.needs_statement_timeout(action.token, "ALTER COLUMN TYPE")]


def _file_ignores(comments: list[IgnoreComment]) -> frozenset[str]:
    rules: set[str] = set()
    for comment in comments:
        if comment.scope is IgnoreScope.FILE:
            rules |= comment.rules or {"*"}
    return frozenset(rules)


def _ignores(ignored: frozenset[str], rule: str) -> bool:
    return "*" in ignored or rule in ignored


def unknown_ignored_rules(comments: list[IgnoreComment]) -> list[str]:
    """Rule ids named by `favmigrate:ignore` comments that no rule has (squawk-ignore may name squawk-only rules)."""
    return sorted({rule for c in comments if c.syntax == "favmigrate" for rule in c.rules if rule not in RULES})
