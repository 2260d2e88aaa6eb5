"""A reader of the TypeScript that `supabase gen types typescript` emits: a tokenizer and a parser for the
type subset the generator writes, never a regular expression over the whole file. Pure: no database.

The subset: ``export type Database = {...}`` (or ``export interface Database {...}``), nested object literal
types with quoted or bare keys, optional members (``key?:``), members separated by newlines, ``;`` or ``,``,
index signatures and mapped types (``[_ in never]: never``), ``|`` unions (a leading ``|`` too), ``&``
intersections, arrays (``string[]``, ``(A | B)[]``, ``Array<T>``), tuples (``Relationships: [...]``), indexed
access (``Database["public"]["Enums"]["status"]``), generic references (``Record<string, unknown>``), string
and number literals, parentheses, line and block comments. The rest of the file (the helper generics
after ``Database``, ``Constants``) is tokenized, never interpreted.

Types compare by their canonical text (`canonical`): union members sorted and deduplicated, quotes and
parentheses normalised, ``Array<T>`` as ``T[]``, so ``null | string`` equals ``string | null``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from favmigrate.errors import UsageError


class TypesFileError(UsageError):
    """The file is not TypeScript of the generator's shape; the message gives the line and column."""


class TokenKind(StrEnum):
    NAME = "name"
    STRING = "string"
    NUMBER = "number"
    PUNCT = "punct"
    END = "end"


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # a string token's decoded value; otherwise the source text
    line: int
    column: int
    newline_before: bool  # a line break separates it from the previous token

    def is_punct(self, text: str) -> bool:
        return self.kind is TokenKind.PUNCT and self.text == text

    def where(self) -> str:
        return f"line {self.line}, column {self.column}"


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
_MULTI_PUNCT = ("...", "=>")


def tokenize(text: str) -> list[Token]:
    """Tokens of ``text`` (comments and whitespace dropped). Raises TypesFileError for an unterminated string
    or block comment."""
    tokens: list[Token] = []
    position, line, line_start = 0, 1, 0
    newline = False
    length = len(text)
    while position < length:
        char = text[position]
        if char == "\n":
            position, line, line_start, newline = position + 1, line + 1, position + 1, True
            continue
        if char.isspace():
            position += 1
            continue
        if text.startswith("//", position):
            end = text.find("\n", position)
            position = length if end < 0 else end
            continue
        if text.startswith("/*", position):
            end = text.find("*/", position + 2)
            if end < 0:
                raise TypesFileError(f"unterminated block comment at line {line}, column {position - line_start + 1}")
            breaks = text.count("\n", position, end)
            if breaks:
                line += breaks
                line_start = text.rfind("\n", position, end) + 1
                newline = True
            position = end + 2
            continue
        column = position - line_start + 1
        if char in "\"'`":
            value, position, breaks = _string(text, position, line, column)
            if breaks:
                line += breaks
                line_start = text.rfind("\n", 0, position) + 1
            tokens.append(Token(TokenKind.STRING, value, line - breaks, column, newline))
        elif char.isalpha() or char in "_$":
            end = position + 1
            while end < length and (text[end].isalnum() or text[end] in "_$"):
                end += 1
            tokens.append(Token(TokenKind.NAME, text[position:end], line, column, newline))
            position = end
        elif char.isdigit() or (char == "-" and position + 1 < length and text[position + 1].isdigit()):
            end = position + 1
            while end < length and (text[end].isalnum() or text[end] in "._"):
                end += 1
            tokens.append(Token(TokenKind.NUMBER, text[position:end], line, column, newline))
            position = end
        else:
            punct = next((p for p in _MULTI_PUNCT if text.startswith(p, position)), char)
            tokens.append(Token(TokenKind.PUNCT, punct, line, column, newline))
            position += len(punct)
        newline = False
    tokens.append(Token(TokenKind.END, "", line, position - line_start + 1, newline))
    return tokens


def _string(text: str, start: int, line: int, column: int) -> tuple[str, int, int]:
    """The decoded value of the string literal at ``start``, the position after it, and the line breaks in it."""
    quote = text[start]
    parts: list[str] = []
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == quote:
            return "".join(parts), position + 1, text.count("\n", start, position)
        if char == "\\" and position + 1 < len(text):
            escaped = text[position + 1]
            parts.append(_ESCAPES.get(escaped, escaped))
            position += 2
            continue
        if char == "\n" and quote != "`":
            break
        parts.append(char)
        position += 1
    raise TypesFileError(f"unterminated string at line {line}, column {column}")


# ---------------------------------------------------------------- the type tree


@dataclass(frozen=True)
class TypeNode:
    """A parsed type; ``canonical`` is its normalised text, the form types are compared in."""

    def canonical(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Member:
    type: TypeNode
    optional: bool


@dataclass(frozen=True)
class ObjectType(TypeNode):
    members: dict[str, Member]
    signatures: tuple[str, ...] = ()  # index signatures and mapped types, canonical text

    def canonical(self) -> str:
        parts = [*self.signatures]
        parts += [f"{_key(name)}{'?' if m.optional else ''}: {m.type.canonical()}" for name, m in self.members.items()]
        return "{ " + "; ".join(parts) + " }" if parts else "{}"


@dataclass(frozen=True)
class UnionType(TypeNode):
    options: tuple[TypeNode, ...]

    def canonical(self) -> str:
        return " | ".join(sorted({option.canonical() for option in self.options}, key=_union_order))


@dataclass(frozen=True)
class IntersectionType(TypeNode):
    parts: tuple[TypeNode, ...]

    def canonical(self) -> str:
        return " & ".join(_wrapped(part) for part in self.parts)


@dataclass(frozen=True)
class ArrayType(TypeNode):
    element: TypeNode

    def canonical(self) -> str:
        return f"{_wrapped(self.element)}[]"


@dataclass(frozen=True)
class TupleType(TypeNode):
    elements: tuple[TypeNode, ...]

    def canonical(self) -> str:
        return "[" + ", ".join(e.canonical() for e in self.elements) + "]"


@dataclass(frozen=True)
class IndexedType(TypeNode):
    base: TypeNode
    index: TypeNode

    def canonical(self) -> str:
        return f"{_wrapped(self.base)}[{self.index.canonical()}]"


@dataclass(frozen=True)
class NamedType(TypeNode):
    """A type name (``string``, ``Json``, ``Database``), with its generic arguments."""

    name: str
    arguments: tuple[TypeNode, ...] = ()

    def canonical(self) -> str:
        if not self.arguments:
            return self.name
        return f"{self.name}<{', '.join(a.canonical() for a in self.arguments)}>"


@dataclass(frozen=True)
class LiteralType(TypeNode):
    value: str
    is_string: bool

    def canonical(self) -> str:
        return _quoted(self.value) if self.is_string else self.value


@dataclass(frozen=True)
class OtherType(TypeNode):
    """A construct outside the generator's subset (a function type, a conditional type), kept as its tokens."""

    text: str

    def canonical(self) -> str:
        return self.text


def _union_order(text: str) -> tuple[bool, str]:
    """Union members sorted, ``null`` and ``undefined`` last as the generator writes them (``string | null``)."""
    return text in ("null", "undefined"), text


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _key(name: str) -> str:
    bare = name and (name[0].isalpha() or name[0] in "_$") and all(c.isalnum() or c in "_$" for c in name)
    return name if bare else _quoted(name)


def _wrapped(node: TypeNode) -> str:
    text = node.canonical()
    return f"({text})" if isinstance(node, UnionType | IntersectionType) else text


# ---------------------------------------------------------------- the parser


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.position = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.position]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.position + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.current
        if token.kind is not TokenKind.END:
            self.position += 1
        return token

    def error(self, expected: str) -> TypesFileError:
        token = self.current
        found = "the end of the file" if token.kind is TokenKind.END else repr(token.text)
        return TypesFileError(f"expected {expected} at {token.where()}, found {found}")

    def expect(self, punct: str) -> Token:
        if not self.current.is_punct(punct):
            raise self.error(repr(punct))
        return self.advance()

    def accept(self, punct: str) -> bool:
        if self.current.is_punct(punct):
            self.advance()
            return True
        return False

    # type := ['|' | '&'] intersection ('|' intersection)*
    def type(self) -> TypeNode:
        self.accept("|") or self.accept("&")
        options = [self.intersection()]
        while self.accept("|"):
            options.append(self.intersection())
        if len(options) == 1:
            return options[0]
        flat: list[TypeNode] = []
        for option in options:
            flat.extend(option.options if isinstance(option, UnionType) else (option,))
        return UnionType(tuple(flat))

    def intersection(self) -> TypeNode:
        parts = [self.postfix()]
        while self.accept("&"):
            parts.append(self.postfix())
        return parts[0] if len(parts) == 1 else IntersectionType(tuple(parts))

    # postfix := primary ('[' ']' | '[' type ']')*  -- a '[' on a new line starts the next member
    def postfix(self) -> TypeNode:
        node = self.primary()
        while self.current.is_punct("[") and not self.current.newline_before:
            self.advance()
            if self.accept("]"):
                node = ArrayType(node)
                continue
            node = IndexedType(node, self.type())
            self.expect("]")
        return node

    def primary(self) -> TypeNode:
        token = self.current
        if token.is_punct("{"):
            return self.object()
        if token.is_punct("["):
            return self.tuple()
        if token.is_punct("("):
            self.advance()
            inner = self.type()
            self.expect(")")
            return inner
        if token.kind is TokenKind.STRING:
            self.advance()
            return LiteralType(token.text, is_string=True)
        if token.kind is TokenKind.NUMBER:
            self.advance()
            return LiteralType(token.text, is_string=False)
        if token.kind is TokenKind.NAME:
            if token.text in ("keyof", "typeof", "readonly", "unique"):
                self.advance()
                return OtherType(f"{token.text} {self.postfix().canonical()}")
            return self.named()
        raise self.error("a type")

    def named(self) -> TypeNode:
        parts = [self.advance().text]
        while self.current.is_punct(".") and self.peek().kind is TokenKind.NAME:
            self.advance()
            parts.append(self.advance().text)
        name = ".".join(parts)
        arguments: list[TypeNode] = []
        if self.accept("<"):
            arguments.append(self.type())
            while self.accept(","):
                arguments.append(self.type())
            self.expect(">")
        if name == "Array" and len(arguments) == 1:
            return ArrayType(arguments[0])
        return NamedType(name, tuple(arguments))

    def tuple(self) -> TypeNode:
        self.expect("[")
        elements: list[TypeNode] = []
        while not self.current.is_punct("]"):
            elements.append(self.type())
            if not self.accept(","):
                break
        self.expect("]")
        return TupleType(tuple(elements))

    # object := '{' (member (';' | ',' | newline))* '}'
    def object(self) -> ObjectType:
        opening = self.expect("{")
        members: dict[str, Member] = {}
        signatures: list[str] = []
        while not self.current.is_punct("}"):
            if self.current.kind is TokenKind.END:
                raise TypesFileError(f"the object type opened at {opening.where()} is never closed")
            if self.current.is_punct("["):
                signatures.append(self.signature())
            else:
                key = self.key()
                optional = self.accept("?")
                self.expect(":")
                members[key] = Member(self.type(), optional)
            if not (self.accept(";") or self.accept(",") or self.current.is_punct("}")
                    or self.current.newline_before):
                raise self.error("';', ',', a new line or '}' after a member")
        self.expect("}")
        return ObjectType(members, tuple(signatures))

    def key(self) -> str:
        token = self.current
        if token.kind in (TokenKind.NAME, TokenKind.STRING, TokenKind.NUMBER):
            self.advance()
            return token.text
        raise self.error("a member name")

    # '[' name (':' type | 'in' type) ']' ['?'] ':' type  -- an index signature or a mapped type
    def signature(self) -> str:
        self.expect("[")
        if self.current.kind is not TokenKind.NAME:
            raise self.error("a name in an index signature")
        name = self.advance().text
        if self.current.kind is TokenKind.NAME and self.current.text == "in":
            self.advance()
            head = f"[{name} in {self.type().canonical()}]"
        else:
            self.expect(":")
            head = f"[{name}: {self.type().canonical()}]"
        self.expect("]")
        optional = "?" if self.accept("?") else ""
        self.expect(":")
        return f"{head}{optional}: {self.type().canonical()}"


def parse_type(text: str) -> TypeNode:
    """One type expression (``string | null``). Raises TypesFileError."""
    parser = _Parser(tokenize(text))
    node = parser.type()
    if parser.current.kind is not TokenKind.END:
        raise parser.error("the end of the type")
    return node


def canonical_type(text: str) -> str:
    """The canonical text of a type expression (``null | string`` -> ``null | string``, sorted)."""
    return parse_type(text).canonical()


def parse_database(text: str) -> ObjectType:
    """The ``Database`` type of a generated types file: ``export type Database = {...}`` or
    ``export interface Database {...}`` at the top level. Raises TypesFileError when there is none or it
    does not parse."""
    tokens = tokenize(text)
    depth = 0
    for index, token in enumerate(tokens):
        if token.kind is TokenKind.PUNCT and token.text in "{([":
            depth += 1
        elif token.kind is TokenKind.PUNCT and token.text in "})]":
            depth -= 1
        elif depth == 0 and token.kind is TokenKind.NAME and token.text in ("type", "interface"):
            following = tokens[index + 1]
            if following.kind is TokenKind.NAME and following.text == "Database":
                parser = _Parser(tokens)
                parser.position = index + 2
                if token.text == "type":
                    parser.expect("=")
                    node = parser.type()
                else:
                    node = parser.object()
                if not isinstance(node, ObjectType):
                    raise TypesFileError(f"Database at {following.where()} is not an object type")
                return node
    raise TypesFileError("no `export type Database = {...}` in the file: is it the output of "
                         "`supabase gen types typescript`?")
