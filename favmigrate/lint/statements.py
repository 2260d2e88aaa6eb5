"""What a statement does, read from its tokens: the few shapes the lint rules need, nothing more.

This is not a SQL parser: it recognises the DDL that takes locks on existing tables (CREATE/DROP INDEX,
CREATE/DROP TABLE, ALTER TABLE with its comma-separated actions), the session settings (SET, RESET,
set_config) and transaction control. Anything else is ``Other``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from favmigrate.lint.source import Statement, Token, TokenKind, split_top_level

_NAME_KINDS = (TokenKind.WORD, TokenKind.QUOTED, TokenKind.PLACEHOLDER)


@dataclass(frozen=True)
class TableRef:
    """A (possibly schema-qualified) table name as written; ``{table}`` placeholders included."""

    parts: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.parts[-1]

    @property
    def is_placeholder(self) -> bool:
        return any(part.startswith(("{", "%", "$")) for part in self.parts)

    def __str__(self) -> str:
        return ".".join(self.parts)


def join_tokens(tokens: tuple[Token, ...] | list[Token]) -> str:
    """Tokens back as compact text: `character varying(20)`, `now()`."""
    text = ""
    previous: Token | None = None
    for token in tokens:
        spaced = previous is not None and previous.kind is not TokenKind.PUNCT and token.kind is not TokenKind.PUNCT
        text += (" " if spaced else "") + token.text
        previous = token
    return text


def _name(tokens: tuple[Token, ...], index: int) -> tuple[TableRef | None, int]:
    """A dotted name starting at ``index``, and the index after it."""
    parts: list[str] = []
    while index < len(tokens) and tokens[index].kind in _NAME_KINDS:
        parts.append(tokens[index].name)
        index += 1
        if index < len(tokens) and tokens[index].is_punct("."):
            index += 1
            continue
        break
    return (TableRef(tuple(parts)) if parts else None), index


def _skip(tokens: tuple[Token, ...], index: int, *words: str) -> int:
    """Step over ``words`` in order when they are there."""
    for word in words:
        if index < len(tokens) and tokens[index].is_word(word):
            index += 1
    return index


def _has_words(tokens: tuple[Token, ...] | list[Token], *sequence: str) -> bool:
    values = [t.value if t.kind is TokenKind.WORD else "" for t in tokens]
    return any(values[i:i + len(sequence)] == list(sequence) for i in range(len(values)))


# ---------------------------------------------------------------- shapes


@dataclass(frozen=True)
class CreateIndex:
    table: TableRef | None
    concurrently: bool
    if_not_exists: bool
    unique: bool
    name: str | None


@dataclass(frozen=True)
class DropIndex:
    concurrently: bool
    if_exists: bool


@dataclass(frozen=True)
class CreateTable:
    table: TableRef | None
    if_not_exists: bool


@dataclass(frozen=True)
class DropTable:
    tables: tuple[TableRef, ...]
    if_exists: bool


class ActionKind(StrEnum):
    ADD_COLUMN = "add-column"
    ADD_CONSTRAINT = "add-constraint"
    DROP_COLUMN = "drop-column"
    DROP_CONSTRAINT = "drop-constraint"
    COLUMN_TYPE = "column-type"
    SET_NOT_NULL = "set-not-null"
    VALIDATE = "validate"
    RENAME_COLUMN = "rename-column"
    RENAME_TABLE = "rename-table"
    OTHER = "other"


class ConstraintKind(StrEnum):
    FOREIGN_KEY = "foreign-key"
    CHECK = "check"
    UNIQUE = "unique"
    PRIMARY_KEY = "primary-key"
    EXCLUDE = "exclude"


@dataclass(frozen=True)
class Action:
    """One comma-separated action of an ALTER TABLE."""

    kind: ActionKind
    token: Token  # where it starts
    column: str | None = None
    constraint: str | None = None
    constraint_kind: ConstraintKind | None = None
    not_valid: bool = False
    using_index: bool = False
    not_null_check: str | None = None  # CHECK (col IS NOT NULL): the column it proves
    if_exists: bool = False  # IF [NOT] EXISTS
    not_null: bool = False
    default: tuple[Token, ...] | None = None
    generated_stored: bool = False
    filled: str | None = None  # what fills every existing row of an ADD COLUMN: an identity or a serial type
    inline: tuple[ConstraintKind, ...] = ()  # constraints written in an ADD COLUMN
    type_text: str = ""


@dataclass(frozen=True)
class AlterTable:
    table: TableRef | None
    actions: tuple[Action, ...]


class TransactionOp(StrEnum):
    BEGIN = "begin"
    END = "end"  # COMMIT, END, ROLLBACK, ABORT, PREPARE TRANSACTION


@dataclass(frozen=True)
class Transaction:
    op: TransactionOp


@dataclass(frozen=True)
class Setting:
    """A change of a setting: SET / SET LOCAL / RESET / set_config(name, value, is_local)."""

    name: str
    value: str | None  # None: RESET / DEFAULT
    local: bool


@dataclass(frozen=True)
class Settings:
    changes: tuple[Setting, ...]


@dataclass(frozen=True)
class Other:
    verb: tuple[str, ...] = field(default=())


Shape = CreateIndex | DropIndex | CreateTable | DropTable | AlterTable | Transaction | Settings | Other

_CONSTRAINT_WORDS = {"FOREIGN": ConstraintKind.FOREIGN_KEY, "CHECK": ConstraintKind.CHECK,
                     "UNIQUE": ConstraintKind.UNIQUE, "PRIMARY": ConstraintKind.PRIMARY_KEY,
                     "EXCLUDE": ConstraintKind.EXCLUDE}
_INLINE_WORDS = {"REFERENCES": ConstraintKind.FOREIGN_KEY, "CHECK": ConstraintKind.CHECK,
                 "UNIQUE": ConstraintKind.UNIQUE, "PRIMARY": ConstraintKind.PRIMARY_KEY}
_COLUMN_CLAUSE_ENDS = frozenset({"NOT", "NULL", "CONSTRAINT", "CHECK", "UNIQUE", "PRIMARY", "REFERENCES", "GENERATED",
                                 "COLLATE", "DEFAULT"})


def _not_null_check(body: tuple[Token, ...]) -> str | None:
    """`CHECK (col IS NOT NULL)`: the column; any other check: None."""
    close = next((i for i, t in enumerate(body) if t.is_punct(")")), len(body))
    words = [t for t in body[:close] if not t.is_punct("(")]
    if len(words) == 5 and words[0].is_word("CHECK") and [w.value for w in words[2:]] == ["IS", "NOT", "NULL"]:
        return words[1].name
    return None


def _add_column(tokens: tuple[Token, ...], index: int, start: Token) -> Action:
    index = _skip(tokens, index, "COLUMN")
    if_not_exists = _has_words(tokens[index:index + 3], "IF", "NOT", "EXISTS")
    if if_not_exists:
        index += 3
    column = tokens[index].name if index < len(tokens) else None
    rest = tokens[index + 1:]
    default: tuple[Token, ...] | None = None
    depth = 0
    inline: list[ConstraintKind] = []
    for position, token in enumerate(rest):
        if token.is_punct("("):
            depth += 1
        elif token.is_punct(")"):
            depth -= 1
        if depth or token.kind is not TokenKind.WORD:
            continue
        if token.value == "DEFAULT":
            end = position + 1
            nested = 0
            while end < len(rest):
                if rest[end].is_punct("("):
                    nested += 1
                elif rest[end].is_punct(")"):
                    nested -= 1
                elif nested == 0 and rest[end].is_word(*_COLUMN_CLAUSE_ENDS):
                    break
                end += 1
            default = rest[position + 1:end]
        elif token.value in _INLINE_WORDS:
            inline.append(_INLINE_WORDS[token.value])
    words = [t.value for t in rest if t.kind is TokenKind.WORD]
    not_null = any(words[i:i + 2] == ["NOT", "NULL"] for i in range(len(words))) or "PRIMARY" in words
    stored = "GENERATED" in words and "STORED" in words
    filled = "an identity column" if "GENERATED" in words and "IDENTITY" in words else None
    if rest and rest[0].is_word("SERIAL", "BIGSERIAL", "SMALLSERIAL", "SERIAL2", "SERIAL4", "SERIAL8"):
        filled = f"the {rest[0].text.lower()} type (a nextval() default)"
    type_end = next((i for i, t in enumerate(rest) if t.is_word(*_COLUMN_CLAUSE_ENDS)), len(rest))
    return Action(ActionKind.ADD_COLUMN, start, column=column, if_exists=if_not_exists, not_null=not_null,
                  default=default, generated_stored=stored, filled=filled, inline=tuple(inline),
                  type_text=join_tokens(rest[:type_end]))


def _add_constraint(tokens: tuple[Token, ...], index: int, start: Token) -> Action:
    name = None
    if index < len(tokens) and tokens[index].is_word("CONSTRAINT"):
        name = tokens[index + 1].name if index + 1 < len(tokens) else None
        index += 2
    kind = _CONSTRAINT_WORDS.get(tokens[index].value) if index < len(tokens) else None
    body = tokens[index:]
    return Action(ActionKind.ADD_CONSTRAINT, start, constraint=name, constraint_kind=kind,
                  not_valid=_has_words(body, "NOT", "VALID"), using_index=_has_words(body, "USING", "INDEX"),
                  not_null_check=_not_null_check(body) if kind is ConstraintKind.CHECK else None)


def _action(tokens: tuple[Token, ...]) -> Action:
    start = tokens[0]
    first = start.value if start.kind is TokenKind.WORD else ""
    second = tokens[1].value if len(tokens) > 1 and tokens[1].kind is TokenKind.WORD else ""
    if first == "ADD":
        if second in ("CONSTRAINT", *_CONSTRAINT_WORDS):
            return _add_constraint(tokens, 1, start)
        return _add_column(tokens, 1, start)
    if first == "DROP":
        if second == "CONSTRAINT":
            index = _skip(tokens, 2, "IF", "EXISTS")
            return Action(ActionKind.DROP_CONSTRAINT, start,
                          constraint=tokens[index].name if index < len(tokens) else None)
        index = _skip(tokens, 1, "COLUMN")
        if_exists = _has_words(tokens[index:index + 2], "IF", "EXISTS")
        index = _skip(tokens, index, "IF", "EXISTS")
        return Action(ActionKind.DROP_COLUMN, start, column=tokens[index].name if index < len(tokens) else None,
                      if_exists=if_exists)
    if first == "ALTER":
        index = _skip(tokens, 1, "COLUMN")
        column = tokens[index].name if index < len(tokens) else None
        rest = tokens[index + 1:]
        if rest and (rest[0].is_word("TYPE") or _has_words(rest[:3], "SET", "DATA", "TYPE")):
            type_start = 1 if rest[0].is_word("TYPE") else 3
            type_end = next((i for i, t in enumerate(rest) if i >= type_start and t.is_word("USING", "COLLATE")),
                            len(rest))
            return Action(ActionKind.COLUMN_TYPE, start, column=column,
                          type_text=join_tokens(rest[type_start:type_end]))
        if _has_words(rest[:3], "SET", "NOT", "NULL"):
            return Action(ActionKind.SET_NOT_NULL, start, column=column)
        return Action(ActionKind.OTHER, start, column=column)
    if first == "VALIDATE":
        return Action(ActionKind.VALIDATE, start, constraint=tokens[2].name if len(tokens) > 2 else None)
    if first == "RENAME":
        if second == "TO":
            return Action(ActionKind.RENAME_TABLE, start)
        if second == "CONSTRAINT":
            return Action(ActionKind.OTHER, start)
        index = _skip(tokens, 1, "COLUMN")
        return Action(ActionKind.RENAME_COLUMN, start, column=tokens[index].name if index < len(tokens) else None)
    return Action(ActionKind.OTHER, start)


def _alter_table(tokens: tuple[Token, ...]) -> AlterTable:
    index = _skip(tokens, 2, "IF", "EXISTS")
    index = _skip(tokens, index, "ONLY")
    table, index = _name(tokens, index)
    if index < len(tokens) and tokens[index].text == "*":
        index += 1
    actions = tuple(_action(part) for part in split_top_level(tokens[index:], ","))
    return AlterTable(table, actions)


def _create_index(tokens: tuple[Token, ...]) -> CreateIndex:
    unique = tokens[1].is_word("UNIQUE")
    index = 3 if unique else 2
    concurrently = index < len(tokens) and tokens[index].is_word("CONCURRENTLY")
    index += concurrently
    if_not_exists = _has_words(tokens[index:index + 3], "IF", "NOT", "EXISTS")
    index += 3 if if_not_exists else 0
    name = None
    if index < len(tokens) and not tokens[index].is_word("ON"):
        name = tokens[index].name
        index += 1
    index = _skip(tokens, index, "ON", "ONLY")
    table, _ = _name(tokens, index)
    return CreateIndex(table, concurrently, if_not_exists, unique, name)


def _settings(tokens: tuple[Token, ...]) -> Settings | None:
    """SET [SESSION | LOCAL] name {TO | =} value, RESET name, and set_config('name', 'value', is_local) calls."""
    first = tokens[0].value if tokens[0].kind is TokenKind.WORD else ""
    if first == "SET" and len(tokens) >= 3:
        local = tokens[1].is_word("LOCAL")
        index = 2 if tokens[1].is_word("LOCAL", "SESSION") else 1
        if index + 2 <= len(tokens) and (tokens[index + 1].is_word("TO") or tokens[index + 1].text == "="):
            value = join_tokens(tokens[index + 2:]) if index + 2 < len(tokens) else None
            literal = tokens[index + 2] if index + 2 < len(tokens) else None
            if literal is not None and literal.kind is TokenKind.STRING:
                value = literal.value
            if literal is not None and literal.is_word("DEFAULT"):
                value = None
            return Settings((Setting(tokens[index].name, value, local),))
        return None
    if first == "RESET" and len(tokens) >= 2:
        return Settings((Setting(tokens[1].name, None, False),))
    changes = []
    for index, token in enumerate(tokens):
        if token.name != "set_config":
            continue
        call = tokens[index + 1:index + 8]
        shape = [t.text for t in call[::2]]
        if len(call) == 7 and shape[0] == "(" and shape[1:3] == [",", ","] and call[6].is_punct(")"):
            name_token, value_token, local_token = call[1], call[3], call[5]
            if name_token.kind is TokenKind.STRING:
                # a computed value (a parameter, an expression) is taken as set
                literal_kinds = (TokenKind.STRING, TokenKind.NUMBER)
                text = value_token.value if value_token.kind in literal_kinds else value_token.text
                changes.append(Setting(name_token.value.lower(), text, local_token.is_word("TRUE")))
    return Settings(tuple(changes)) if changes else None


_BEGIN = {("BEGIN",), ("START", "TRANSACTION")}
_END = {"COMMIT", "END", "ROLLBACK", "ABORT"}


def shape_of(statement: Statement) -> Shape:
    """What ``statement`` does, as far as the lint rules care."""
    tokens = statement.tokens
    words = statement.words(4)
    if statement.origin.value == "file" and (words[:1] in _BEGIN or words[:2] in _BEGIN):
        return Transaction(TransactionOp.BEGIN)
    if words[0] in _END and not _has_words(tokens, "TO") and not _has_words(tokens, "PREPARED"):
        return Transaction(TransactionOp.END)
    if words[:2] == ("PREPARE", "TRANSACTION"):
        return Transaction(TransactionOp.END)
    if words[:2] == ("CREATE", "INDEX") or words[:3] == ("CREATE", "UNIQUE", "INDEX"):
        return _create_index(tokens)
    if words[:2] == ("DROP", "INDEX"):
        concurrently = words[2] == "CONCURRENTLY"
        return DropIndex(concurrently, _has_words(tokens[:6], "IF", "EXISTS"))
    if words[:2] == ("CREATE", "TABLE") or (words[0] == "CREATE" and "TABLE" in words[1:4]):
        index = next(i for i, t in enumerate(tokens) if t.is_word("TABLE")) + 1
        if_not_exists = _has_words(tokens[index:index + 3], "IF", "NOT", "EXISTS")
        table, _ = _name(tokens, index + (3 if if_not_exists else 0))
        return CreateTable(table, if_not_exists)
    if words[:2] == ("DROP", "TABLE"):
        index = _skip(tokens, 2, "IF", "EXISTS")
        tables = tuple(ref for part in split_top_level(tokens[index:], ",") if (ref := _name(part, 0)[0]))
        return DropTable(tables, _has_words(tokens[:5], "IF", "EXISTS"))
    if words[:2] == ("ALTER", "TABLE"):
        return _alter_table(tokens)
    settings = _settings(tokens)
    if settings is not None:
        return settings
    return Other(words)
