"""The language of the search box, parsed: a pure function of the text a user typed, to a tree.

```
query     := clause*                      every clause must hold (a space means AND; a bare AND is allowed)
clause    := term ("OR" term)*            OR, in capitals, binds tighter than the space between clauses
term      := "-" term                     the term must not hold
           | "(" query ")"                a group
           | '"' text '"'                 a phrase: its words next to each other, in this order
           | name ":" (value | phrase)    an operator (OPERATORS); value runs to the next space or parenthesis
           | anything else                its letters, digits and underscores are words; the rest separates them
```

No SQL here (gateway.graphql.search turns the tree into it), so the grammar is tested by tables. What does not
parse is a SearchSyntaxError (BAD_USER_INPUT) whose extensions name a `reason` and the `position` (0-based) of
the offending part of the text.

A colon makes an operator only when letters come before it and something after it: "Re: lunch" and "10:30"
are words, while "foo:bar" is an unknown operator (a typo of one, or text to put in quotes), never silently words.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import BadUserInput

MAX_QUERY_LENGTH = 500
MAX_TERMS = 32
MAX_DEPTH = 8
MAX_VALUE = 200  # as long as a filter's text may be (gateway.graphql.filters)

# Operators and the values they take (None: any text).
OPERATORS: dict[str, frozenset[str] | None] = {
    "from": None,
    "to": None,
    "cc": None,
    "bcc": None,
    "subject": None,
    "in": None,
    "label": None,
    "has": frozenset({"attachment"}),
    "is": frozenset({"unread", "read", "starred"}),
}

_WORD = re.compile(r"\w+")
_OPERATOR = re.compile(r"([A-Za-z]+):(.*)", re.DOTALL)
_RUN_END = re.compile(r'[\s()"]')


class Reason(StrEnum):
    TOO_LONG = "TOO_LONG"
    TOO_MANY_TERMS = "TOO_MANY_TERMS"
    TOO_DEEP = "TOO_DEEP"
    EMPTY_SEARCH = "EMPTY_SEARCH"
    NOTHING_SEARCHABLE = "NOTHING_SEARCHABLE"
    UNBALANCED_QUOTE = "UNBALANCED_QUOTE"
    UNBALANCED_PARENTHESIS = "UNBALANCED_PARENTHESIS"
    EMPTY_GROUP = "EMPTY_GROUP"
    MISPLACED_OR = "MISPLACED_OR"
    UNKNOWN_OPERATOR = "UNKNOWN_OPERATOR"
    MISSING_VALUE = "MISSING_VALUE"
    BAD_OPERATOR_VALUE = "BAD_OPERATOR_VALUE"


class SearchSyntaxError(BadUserInput):
    """A search the language cannot read: BAD_USER_INPUT, with `reason` and `position` in its extensions."""

    def __init__(self, reason: Reason, position: int, message: str) -> None:
        super().__init__(f"search: {message}", reason=reason.value, position=position)
        self.reason = reason
        self.position = position


# -- the tree ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Word:
    text: str


@dataclass(frozen=True, slots=True)
class Phrase:
    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # a key of OPERATORS
    value: str  # lower case where OPERATORS lists the values


@dataclass(frozen=True, slots=True)
class Not:
    term: Node


@dataclass(frozen=True, slots=True)
class AllOf:
    terms: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    terms: tuple[Node, ...]


Node = Word | Phrase | Field | Not | AllOf | AnyOf


# -- tokens --------------------------------------------------------------------------------------------------


class Kind(StrEnum):
    OPEN = "("
    CLOSE = ")"
    OR = "OR"
    NOT = "-"
    PHRASE = "phrase"
    FIELD = "field"
    WORDS = "words"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    position: int
    words: tuple[str, ...] = ()  # PHRASE and WORDS
    name: str = ""  # FIELD
    value: str = ""  # FIELD


_STARTS_A_TERM = frozenset({Kind.OPEN, Kind.NOT, Kind.PHRASE, Kind.FIELD, Kind.WORDS})


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The text between the quote at `start` and the next one, and the position after the closing quote."""
    end = text.find('"', start + 1)
    if end < 0:
        raise SearchSyntaxError(Reason.UNBALANCED_QUOTE, start, f"the quote at {start} is never closed")
    return text[start + 1 : end], end + 1


def _field(name: str, value: str, position: int) -> Token:
    allowed = OPERATORS[name]
    if not value.strip():
        raise SearchSyntaxError(
            Reason.MISSING_VALUE, position, f'{name}: needs a value (quote one with spaces: {name}:"a b")'
        )
    if len(value) > MAX_VALUE:
        raise SearchSyntaxError(Reason.BAD_OPERATOR_VALUE, position, f"{name}: takes at most {MAX_VALUE} characters")
    if allowed is not None:
        value = value.lower()
        if value not in allowed:
            choices = ", ".join(f"{name}:{v}" for v in sorted(allowed))
            raise SearchSyntaxError(Reason.BAD_OPERATOR_VALUE, position, f"{name}: takes one of {choices}")
    return Token(Kind.FIELD, position, name=name, value=value)


def _run(text: str, start: int) -> tuple[Token | None, int]:
    """The token of the bare run at `start` (None when it holds no word), and the position after it."""
    found = _RUN_END.search(text, start)
    end = found.start() if found else len(text)
    run = text[start:end]
    if run == "OR":
        return Token(Kind.OR, start), end
    if run == "AND":
        return None, end
    operator = _OPERATOR.fullmatch(run)
    if operator is not None and (operator.group(2) or text.startswith('"', end)):
        name = operator.group(1).lower()
        if name not in OPERATORS:
            known = " ".join(f"{n}:" for n in OPERATORS)
            raise SearchSyntaxError(
                Reason.UNKNOWN_OPERATOR,
                start,
                f'unknown operator "{operator.group(1)}:" (known: {known}); put text with a colon in quotes',
            )
        value = operator.group(2)
        if not value:
            value, end = _quoted(text, end)
        return _field(name, value, start), end
    if operator is not None and operator.group(1).lower() in OPERATORS:
        return _field(operator.group(1).lower(), "", start), end
    words = tuple(_WORD.findall(run))
    return (Token(Kind.WORDS, start, words=words) if words else None), end


def _lex(text: str) -> Iterator[Token]:
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "(":
            yield Token(Kind.OPEN, i)
            i += 1
        elif char == ")":
            yield Token(Kind.CLOSE, i)
            i += 1
        elif char == '"':
            inside, end = _quoted(text, i)
            words = tuple(_WORD.findall(inside))
            if words:
                yield Token(Kind.PHRASE, i, words=words)
            i = end
        elif char == "-" and i + 1 < len(text) and not text[i + 1].isspace() and text[i + 1] != ")":
            yield Token(Kind.NOT, i)
            i += 1
        else:
            token, i = _run(text, i)
            if token is not None:
                yield token


def tokens(text: str) -> list[Token]:
    """The tokens of a search; a minus that no term follows (its word was all punctuation) is dropped."""
    kept: list[Token] = []
    for token in reversed(list(_lex(text))):  # from the end, so that "--" before nothing goes too
        if token.kind is Kind.NOT and (not kept or kept[-1].kind not in _STARTS_A_TERM):
            continue
        kept.append(token)
    kept.reverse()
    return kept


# -- the parser ----------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, found: list[Token]) -> None:
        self.tokens = found
        self.at = 0
        self.terms = 0

    def peek(self) -> Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def query(self, depth: int) -> list[Node]:
        clauses: list[Node] = []
        while (token := self.peek()) is not None and token.kind is not Kind.CLOSE:
            clauses.append(self.clause(depth))
        return clauses

    def clause(self, depth: int) -> Node:
        alternatives = [self.term(depth)]
        while (token := self.peek()) is not None and token.kind is Kind.OR:
            self.take()
            after = self.peek()
            if after is None or after.kind not in _STARTS_A_TERM:
                raise SearchSyntaxError(Reason.MISPLACED_OR, token.position, "OR needs a term on both sides")
            alternatives.append(self.term(depth))
        return alternatives[0] if len(alternatives) == 1 else AnyOf(tuple(alternatives))

    def term(self, depth: int) -> Node:
        token = self.take()
        if token.kind is Kind.NOT:
            negated = True
            while (after := self.peek()) is not None and after.kind is Kind.NOT:  # "--x" is x
                self.take()
                negated = not negated
            inner = self.term(depth)
            return Not(inner) if negated else inner
        if token.kind is Kind.OR:
            raise SearchSyntaxError(Reason.MISPLACED_OR, token.position, "OR needs a term on both sides")
        if token.kind is Kind.CLOSE:
            raise SearchSyntaxError(Reason.UNBALANCED_PARENTHESIS, token.position, "this ) closes no (")
        if token.kind is Kind.OPEN:
            return self.group(token, depth + 1)
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise SearchSyntaxError(Reason.TOO_MANY_TERMS, token.position, f"at most {MAX_TERMS} terms")
        if token.kind is Kind.FIELD:
            return Field(token.name, token.value)
        if token.kind is Kind.PHRASE:
            return Phrase(token.words)
        words = tuple(Word(w) for w in token.words)
        return words[0] if len(words) == 1 else AllOf(words)

    def group(self, opening: Token, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise SearchSyntaxError(Reason.TOO_DEEP, opening.position, f"at most {MAX_DEPTH} nested parentheses")
        inside = self.query(depth)
        closing = self.peek()
        if closing is None:
            raise SearchSyntaxError(Reason.UNBALANCED_PARENTHESIS, opening.position, "this ( is never closed")
        self.take()
        if not inside:
            raise SearchSyntaxError(Reason.EMPTY_GROUP, opening.position, "() holds nothing to search for")
        return inside[0] if len(inside) == 1 else AllOf(tuple(inside))


def parse(text: str) -> Node:
    """The tree of a search; SearchSyntaxError when it does not parse or holds nothing to search for."""
    if len(text) > MAX_QUERY_LENGTH:
        raise SearchSyntaxError(Reason.TOO_LONG, 0, f"at most {MAX_QUERY_LENGTH} characters")
    parser = _Parser(tokens(text))
    clauses = parser.query(0)
    stray = parser.peek()
    if stray is not None:  # query() stops only at the end or at a ) that no ( opened
        raise SearchSyntaxError(Reason.UNBALANCED_PARENTHESIS, stray.position, "this ) closes no (")
    if not clauses:
        raise SearchSyntaxError(Reason.EMPTY_SEARCH, 0, "type a word, a phrase or an operator")
    return clauses[0] if len(clauses) == 1 else AllOf(tuple(clauses))
