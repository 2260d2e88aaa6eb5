"""Migration SQL as a list of statements with file positions.

Split with sqlparse's lexer, so a `;` inside a string, a dollar-quoted body or a comment never ends a
statement. The body of a `DO` block is opened and split too (PL/pgSQL control words such as
`IF ... THEN` are stepped over), and so is a constant `EXECUTE '...'` string inside it. `{name}`
template placeholders and `%(name)s` / `$1` parameters are single placeholder tokens, so favmigrate's
own templates parse. Ignore comments (`-- squawk-ignore ...`, `-- favmigrate:ignore ...`) are
collected with their positions.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlparse import lexer
from sqlparse import tokens as T


class TokenKind(StrEnum):
    WORD = "word"  # keyword or unquoted name
    QUOTED = "quoted"  # "Quoted" identifier
    STRING = "string"  # '...' literal
    DOLLAR = "dollar"  # $tag$...$tag$ literal
    NUMBER = "number"
    PUNCT = "punct"  # ( ) , ; . ::
    PLACEHOLDER = "placeholder"  # {name}, %(name)s, $1
    OTHER = "other"  # operators and the rest


@dataclass(frozen=True)
class Token:
    """A significant token: ``value`` is upper-cased for words, the unquoted content for strings and
    quoted names; ``offset`` is its position in the file and ``content_offset`` where its content starts."""

    kind: TokenKind
    text: str
    value: str
    offset: int
    content_offset: int

    def is_word(self, *words: str) -> bool:
        return self.kind is TokenKind.WORD and (not words or self.value in words)

    def is_punct(self, *marks: str) -> bool:
        return self.kind is TokenKind.PUNCT and (not marks or self.value in marks)

    @property
    def name(self) -> str:
        """The token as an identifier: unquoted names fold to lower case, quoted ones keep theirs."""
        if self.kind is TokenKind.WORD:
            return self.text.lower()
        return self.value if self.kind is TokenKind.QUOTED else self.text


class Origin(StrEnum):
    FILE = "file"
    DO_BLOCK = "do-block"  # a statement of a DO block's body (it runs inside a transaction)
    EXECUTE = "execute"  # the constant string of an EXECUTE inside a DO block


@dataclass(frozen=True)
class Statement:
    """One statement: its significant tokens (no comments or whitespace) and where it starts."""

    tokens: tuple[Token, ...]
    origin: Origin = Origin.FILE
    ignored: frozenset[str] = frozenset()  # rule ids an ignore comment turns off ("*": all)
    parent: Statement | None = None  # the DO statement a body statement belongs to

    @property
    def offset(self) -> int:
        return self.tokens[0].offset

    def words(self, count: int) -> tuple[str, ...]:
        """The upper-cased values of the first ``count`` tokens ("" for a token that is not a word, or missing)."""
        values = [t.value if t.kind is TokenKind.WORD else "" for t in self.tokens[:count]]
        return tuple(values + [""] * (count - len(values)))


class IgnoreScope(StrEnum):
    NEXT = "next"
    FILE = "file"


@dataclass(frozen=True)
class IgnoreComment:
    """`-- squawk-ignore r1, r2`, `-- favmigrate:ignore r1` (the next statement) or their `-file` forms."""

    offset: int
    scope: IgnoreScope
    rules: frozenset[str]  # empty: every rule
    syntax: str  # "squawk" or "favmigrate"


_IGNORE = re.compile(r"^\s*(?:--|/\*)\s*(squawk-ignore|favmigrate:ignore)(-file)?\b\s*(.*?)\s*(?:\*/)?\s*$",
                     re.IGNORECASE | re.DOTALL)
_DOLLAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_STATEMENT_START = frozenset({
    "ALTER", "CREATE", "DROP", "SET", "RESET", "EXECUTE", "PERFORM", "SELECT", "UPDATE", "INSERT", "DELETE",
    "COMMENT", "VACUUM", "CLUSTER", "REINDEX", "LOCK", "TRUNCATE", "GRANT", "REVOKE", "COMMIT", "ROLLBACK",
    "WITH", "ANALYZE", "REFRESH", "CALL",
})
_PLPGSQL_OPENERS = frozenset({"THEN", "ELSE", "LOOP", "BEGIN"})


def parse_ignore(comment: str, offset: int) -> IgnoreComment | None:
    """The ignore directive a comment holds, if any."""
    match = _IGNORE.match(comment)
    if not match:
        return None
    syntax = "squawk" if match.group(1).lower().startswith("squawk") else "favmigrate"
    rules = frozenset(r.strip().lower() for r in re.split(r"[,\s]+", match.group(3)) if r.strip())
    scope = IgnoreScope.FILE if match.group(2) else IgnoreScope.NEXT
    if syntax == "squawk" and scope is IgnoreScope.NEXT and not rules:
        return None  # as squawk: a bare `-- squawk-ignore` turns nothing off (favmigrate:ignore turns off all)
    return IgnoreComment(offset, scope, rules, syntax)


def _kind_of_type(ttype: object) -> TokenKind | None:
    if ttype in T.Comment or ttype in T.Whitespace or ttype in T.Newline:
        return None
    if ttype in T.Literal.String.Single:
        return TokenKind.STRING
    if ttype in T.Literal.String.Symbol:
        return TokenKind.QUOTED
    if ttype in T.Literal.Number:
        return TokenKind.NUMBER
    if ttype in T.Literal:
        return TokenKind.DOLLAR  # when the value is a dollar quote (checked per token)
    if ttype in T.Name.Placeholder:
        return TokenKind.PLACEHOLDER
    if ttype in T.Punctuation:
        return TokenKind.PUNCT
    if ttype in T.Keyword or ttype in T.Name:
        return TokenKind.WORD
    return TokenKind.OTHER


_KINDS: dict[object, TokenKind | None] = {}  # sqlparse token type -> kind: the type tests are slow, the types few


def _classify(ttype: object, value: str) -> TokenKind | None:
    if ttype not in _KINDS:
        _KINDS[ttype] = _kind_of_type(ttype)
    kind = _KINDS[ttype]
    if kind is TokenKind.DOLLAR and not _DOLLAR.match(value):
        return TokenKind.OTHER
    return kind


def _token(kind: TokenKind, text: str, offset: int) -> Token:
    if kind is TokenKind.STRING:
        quote = text.index("'")
        return Token(kind, text, text[quote + 1:-1].replace("''", "'"), offset, offset + quote + 1)
    if kind is TokenKind.QUOTED:
        return Token(kind, text, text[1:-1].replace('""', '"'), offset, offset + 1)
    if kind is TokenKind.DOLLAR:
        tag = _DOLLAR.match(text)
        assert tag is not None
        width = len(tag.group(0))
        return Token(kind, text, text[width:-width], offset, offset + width)
    return Token(kind, text, text.upper() if kind is TokenKind.WORD else text, offset, offset)


@dataclass
class Lexed:
    tokens: list[Token]
    comments: list[IgnoreComment]


def content_positions(literal: Token) -> list[int] | None:
    """The file offset of each character of a string literal's ``value``, then of its end: a doubled quote is
    one character of the value, so past it the value's own offsets fall behind the file's. None where they
    do not (a dollar-quoted string, or one without a doubled quote)."""
    if literal.kind is not TokenKind.STRING or "''" not in literal.text[literal.content_offset - literal.offset:-1]:
        return None
    raw = literal.text[literal.content_offset - literal.offset:-1]
    positions: list[int] = []
    index = 0
    while index < len(raw):
        positions.append(literal.content_offset + index)
        index += 2 if raw.startswith("''", index) else 1
    return [*positions, literal.content_offset + len(raw)]


def lex(text: str, base: int = 0, positions: Sequence[int] | None = None) -> Lexed:
    """Significant tokens of ``text`` (positions shifted by ``base``, or each character's taken from
    ``positions``, see content_positions) and the ignore comments in it."""
    tokens: list[Token] = []
    comments: list[IgnoreComment] = []
    index = 0
    brace: list[tuple[str, int]] = []  # an open {placeholder}: its text so far and start
    for ttype, value in lexer.tokenize(text):  # type: ignore[no-untyped-call]
        at, index = index, index + len(value)
        start = positions[at] if positions is not None else base + at
        if ttype in T.Comment:
            directive = parse_ignore(value, start)
            if directive:
                comments.append(directive)
            continue
        kind = _classify(ttype, value)
        if brace:
            brace[-1] = (brace[-1][0] + value, brace[-1][1])
            if value == "}":
                joined, begin = brace.pop()
                tokens.append(Token(TokenKind.PLACEHOLDER, joined, joined, begin, begin))
            continue
        if kind is None:
            continue
        if value == "{":
            brace.append((value, start))
            continue
        if kind is TokenKind.WORD and re.search(r"\s", value.strip()):
            # sqlparse lexes "IF NOT EXISTS" or "NOT NULL" as one keyword: one token per word
            for word in re.finditer(r"\S+", value):
                tokens.append(_token(TokenKind.WORD, word.group(0), start + word.start()))
            continue
        tokens.append(_token(kind, value, start))
    return Lexed(tokens, comments)


def split_top_level(tokens: Sequence[Token], separator: str) -> list[tuple[Token, ...]]:
    """Tokens cut at ``separator`` punctuation outside parentheses and outside a SQL-standard function body
    (`BEGIN ATOMIC ... END`, whose statements end with semicolons too; a CASE inside it ends with END as well)
    (empty parts dropped)."""
    parts: list[list[Token]] = [[]]
    depth = 0
    atomic = False
    cases = 0
    for index, token in enumerate(tokens):
        if token.is_punct("("):
            depth += 1
        elif token.is_punct(")"):
            depth = max(0, depth - 1)
        elif token.is_word("ATOMIC") and index > 0 and tokens[index - 1].is_word("BEGIN"):
            atomic, cases = True, 0
        elif atomic and token.is_word("CASE"):
            cases += 1
        elif atomic and token.is_word("END"):
            atomic, cases = cases > 0, max(0, cases - 1)
        if depth == 0 and not atomic and token.is_punct(separator):
            parts.append([])
        else:
            parts[-1].append(token)
    return [tuple(part) for part in parts if part]


def _ignored_by(comments: list[IgnoreComment], pieces: list[tuple[Token, ...]]) -> list[frozenset[str]]:
    """For each statement, the rules turned off by an ignore comment before it, or inside it (as squawk, whose
    comment covers the line below it)."""
    starts = [piece[0].offset for piece in pieces]
    ends = [piece[-1].offset + len(piece[-1].text) for piece in pieces]
    ignored: list[set[str]] = [set() for _ in pieces]
    for comment in comments:
        if comment.scope is not IgnoreScope.NEXT:
            continue
        index = bisect.bisect_right(starts, comment.offset)
        if index > 0 and comment.offset < ends[index - 1]:
            index -= 1  # inside that statement
        if index < len(pieces):
            ignored[index] |= comment.rules or {"*"}
    return [frozenset(rules) for rules in ignored]


def _body_statement(piece: tuple[Token, ...]) -> tuple[Token, ...]:
    """A PL/pgSQL piece without its leading control words (`IF ... THEN`, `BEGIN`, `ELSE`, `LOOP`)."""
    depth = 0
    for index, token in enumerate(piece):
        starts_here = index == 0 or (depth == 0 and piece[index - 1].is_word(*_PLPGSQL_OPENERS))
        if starts_here and token.is_word(*_STATEMENT_START):
            return piece[index:]
        if token.is_punct("("):
            depth += 1
        elif token.is_punct(")"):
            depth = max(0, depth - 1)
    return ()


def _do_body(statement: Statement) -> Token | None:
    """The literal holding a DO block's body when its language is PL/pgSQL (the default)."""
    body = None
    language = "plpgsql"
    tokens = statement.tokens
    for index, token in enumerate(tokens[1:], start=1):
        if token.kind in (TokenKind.DOLLAR, TokenKind.STRING) and body is None:
            body = token
        elif tokens[index - 1].is_word("LANGUAGE"):
            language = token.name
    return body if language == "plpgsql" else None


def _execute_literal(tokens: tuple[Token, ...]) -> Token | None:
    """The SQL of `EXECUTE 'constant'` (possibly followed by INTO / USING); None when it is computed."""
    constant = len(tokens) >= 2 and tokens[0].is_word("EXECUTE") and tokens[1].kind in (TokenKind.STRING,
                                                                                           TokenKind.DOLLAR)
    if constant and (len(tokens) == 2 or tokens[2].is_word("INTO", "USING", "STRICT")):
        return tokens[1]
    return None


def split_statements(text: str, base: int = 0, origin: Origin = Origin.FILE, parent: Statement | None = None,
                     positions: Sequence[int] | None = None) -> tuple[list[Statement], list[IgnoreComment]]:
    """Statements of ``text`` in order, DO-block bodies and constant EXECUTE strings opened after their DO.
    ``base`` or ``positions`` place ``text`` in the file (see lex).

    Returns the statements and every ignore comment found (at any depth).
    """
    lexed = lex(text, base, positions)
    comments = list(lexed.comments)
    pieces = split_top_level(lexed.tokens, ";")
    if origin is not Origin.FILE:
        pieces = [stripped for piece in pieces if (stripped := _body_statement(piece))]
    inherited = parent.ignored if parent else frozenset()
    ignored = _ignored_by(comments, pieces)
    statements: list[Statement] = []
    for piece, rules in zip(pieces, ignored, strict=True):
        literal = _execute_literal(piece) if origin is not Origin.FILE else None
        if literal is not None:
            inner, inner_comments = split_statements(literal.value, literal.content_offset, Origin.EXECUTE,
                                                     Statement(piece, origin, rules | inherited, parent),
                                                     content_positions(literal))
            statements += inner
            comments += inner_comments
            continue
        statement = Statement(piece, origin, rules | inherited, parent)
        statements.append(statement)
        if piece[0].is_word("DO"):
            body = _do_body(statement)
            if body is not None:
                inner, inner_comments = split_statements(body.value, body.content_offset, Origin.DO_BLOCK,
                                                         statement, content_positions(body))
                statements += inner
                comments += inner_comments
    return statements, comments


class LineIndex:
    """1-based line and column of a character offset in a text."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [index + 1 for index, char in enumerate(text) if char == "\n"]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1] + 1
