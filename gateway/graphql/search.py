"""A parsed search (gateway.graphql.searchquery) as SQL conditions on messages, and its relevance.

Words and phrases run on the FULLTEXT index `ft_messages_search` in boolean mode; operators become the same
conditions as the filter inputs (gateway.graphql.filters). The parts of the tree made of words alone fold into
one boolean-mode expression, those made of phrases alone into another, which InnoDB answers from the index and
ranks by:

```
the invoice -paid              +invoice* -paid*          ("the" is a stopword: no index holds it)
(lunch friday) OR noon         +((+lunch* +friday*) noon*)
"pay the invoice" -receipt     +"pay the invoice"  AND NOT  receipt*
"pay the invoice" OR receipt   +"pay the invoice"  OR  +receipt*
fox OR is:starred              +fox*  OR  starred
```

Words and phrases never share an expression: MariaDB (10.11) answers wrongly for the optional and excluded
prefix terms of an expression that holds a phrase (`+"see you" -lunch*` keeps a message that says lunch).

An expression is a bound parameter, and words reach it only as runs of word characters, which hold none of
boolean mode's operators (+ - < > ( ) ~ * " @): nothing typed can change what it means. A word the index cannot
hold (a stopword, or shorter or longer than its token sizes: schema.fulltext) would match nothing, so it is
dropped from what is required: alone in an OR it makes the OR hold for every message; excluded, it excludes
nothing. A search left with nothing to search for is an error, never every message.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, assert_never

from sqlalchemy import ColumnElement, and_, bindparam, exists, func, literal, not_, or_, select
from sqlalchemy.dialects.mysql import match as fulltext_match

from gateway.graphql import pages
from gateway.graphql.filters import FilterKey, MessageFilter, address_matches, message_conditions, text_contains
from gateway.graphql.loaders import MESSAGE_KEYS, message_columns_of
from gateway.graphql.searchquery import (
    AllOf,
    AnyOf,
    Field,
    Node,
    Not,
    Phrase,
    Reason,
    SearchSyntaxError,
    Word,
    parse,
)
from schema.fulltext import Vocabulary
from schema.models import Folder, Label, Message, MessageLabel, MessagePlace

# The columns of the FULLTEXT index `ft_messages_search` (the same list, in the same order as the index).
SEARCH_COLUMNS: tuple[ColumnElement[str], ...] = (
    Message.subject.expression,
    Message.search_addresses.expression,
    Message.text_body.expression,
)


class Kind(StrEnum):
    WORDS = "words"
    PHRASES = "phrases"


@dataclass(frozen=True, slots=True)
class Piece:
    """A piece of a boolean-mode expression, made of words only or of phrases only."""

    text: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Part:
    """What a subtree requires: pieces that must all match, pieces none of which may match, and other
    conditions. Empty: it requires nothing (what it named cannot be searched)."""

    required: tuple[Piece, ...] = ()
    excluded: tuple[Piece, ...] = ()
    other: tuple[ColumnElement[bool], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.required or self.excluded or self.other)

    @property
    def textual(self) -> bool:
        """Whether one piece can say all of it."""
        kinds = {p.kind for p in (*self.required, *self.excluded)}
        return bool(self.required) and not self.other and len(kinds) == 1

    def piece(self) -> Piece:
        """The piece of a textual part."""
        if len(self.required) == 1 and not self.excluded:
            return self.required[0]
        return Piece("(" + _expression(self.required, self.excluded) + ")", self.required[0].kind)

    def matches(self) -> list[tuple[ColumnElement[Any], bool]]:
        """A condition per kind of piece, with whether it ranks (a MATCH that requires something)."""
        found: list[tuple[ColumnElement[Any], bool]] = []
        for kind in Kind:
            required = [p for p in self.required if p.kind is kind]
            excluded = [p for p in self.excluded if p.kind is kind]
            if required:
                found.append((_against(_expression(required, excluded)), True))
            elif excluded:  # without +: matches when any of them occurs
                found.append((not_(_against(" ".join(p.text for p in excluded))), False))
        return found


def _expression(required: Sequence[Piece], excluded: Sequence[Piece]) -> str:
    return " ".join([*(f"+{p.text}" for p in required), *(f"-{p.text}" for p in excluded)])


def _against(expression: str) -> ColumnElement[Any]:
    return fulltext_match(*SEARCH_COLUMNS, against=literal(expression)).in_boolean_mode()


def _condition(part: Part) -> ColumnElement[bool]:
    return and_(*(m for m, _ in part.matches()), *part.other)


class NeedsMe(Exception):
    """The search names `me` (from:me, to:me, cc:me, bcc:me) and was planned without the account's address."""


@dataclass
class Translator:
    vocabulary: Vocabulary
    # The account's own address: the value `me` of the address operators; None when not read (NeedsMe if asked).
    me: str | None
    dropped: list[str] = field(default_factory=list)

    def part(self, node: Node) -> Part:
        match node:
            case Word(text):
                if not self.vocabulary.indexed(text):
                    self.dropped.append(text)
                    return Part()
                return Part(required=(Piece(f"{text}*", Kind.WORDS),))  # a word matches the start of a word
            case Phrase(words):
                if not any(self.vocabulary.indexed(w) for w in words):
                    self.dropped.append('"' + " ".join(words) + '"')
                    return Part()
                # InnoDB keeps the places of the words it leaves out: "pay the invoice" still means those three.
                return Part(required=(Piece('"' + " ".join(words) + '"', Kind.PHRASES),))
            case Field():
                return Part(other=(self.field(node),))
            case Not(term):
                return self.negated(self.part(term))
            case AllOf(terms):
                parts = [self.part(t) for t in terms]
                return Part(
                    required=tuple(r for p in parts for r in p.required),
                    excluded=tuple(e for p in parts for e in p.excluded),
                    other=tuple(o for p in parts for o in p.other),
                )
            case AnyOf(terms):
                parts = [self.part(t) for t in terms]
                if not all(parts):
                    return Part()  # one alternative holds for every message
                pieces = [p.piece() for p in parts if p.textual]
                if len(pieces) == len(parts) and len({p.kind for p in pieces}) == 1:
                    return Part(required=(Piece("(" + " ".join(p.text for p in pieces) + ")", pieces[0].kind),))
                return Part(other=(or_(*(_condition(p) for p in parts)),))
            case _:
                assert_never(node)

    def negated(self, inner: Part) -> Part:
        if not inner:
            return Part()
        if inner.textual:
            return Part(excluded=(inner.piece(),))
        if not inner.required and not inner.other and len(inner.excluded) == 1:
            return Part(required=inner.excluded)
        return Part(other=(not_(_condition(inner)),))

    def field(self, node: Field) -> ColumnElement[bool]:
        value = node.value
        if value.lower() == "me" and node.name in ("from", "to", "cc", "bcc"):
            if self.me is None:
                raise NeedsMe
            value = self.me
        if node.name == "from":
            return address_matches(Message.from_addrs, value)
        if node.name == "to":  # any recipient, as a mail user means it
            return or_(*(address_matches(c, value) for c in (Message.to_addrs, Message.cc_addrs, Message.bcc_addrs)))
        if node.name == "cc":
            return address_matches(Message.cc_addrs, value)
        if node.name == "bcc":
            return address_matches(Message.bcc_addrs, value)
        if node.name == "subject":
            return text_contains(Message.subject, value)
        if node.name == "in":
            named = or_(Folder.role == value.lower(), func.lower(Folder.name) == value.lower())
            places = select(1).select_from(MessagePlace).join(Folder, Folder.id == MessagePlace.folder_id)
            return exists(places.where(MessagePlace.message_id == Message.id, named))
        if node.name == "label":
            labels = select(1).select_from(MessageLabel).join(Label, Label.id == MessageLabel.label_id)
            return exists(labels.where(MessageLabel.message_id == Message.id, func.lower(Label.name) == value.lower()))
        if node.name == "has":  # has:attachment, the one value the parser lets through
            return Message.has_attachments.is_(True)
        if value == "unread":
            return Message.unread.is_(True)
        if value == "read":
            return Message.unread.is_(False)
        return Message.starred.is_(True)  # is:starred, the last value the parser lets through


@dataclass(frozen=True, slots=True)
class SearchPlan:
    conditions: list[ColumnElement[bool]]
    # The relevance of a message when the search has words or phrases to rank by; None when it has only
    # operators or exclusions (its results then list newest first).
    score: ColumnElement[Any] | None


def plan(query: str, vocabulary: Vocabulary, me: str | None) -> SearchPlan:
    """The conditions a search puts on messages, and its relevance; SearchSyntaxError when it does not parse or
    names nothing the index can search for. `me`: the account's address, or None to read it only if the search
    names it (NeedsMe then)."""
    translator = Translator(vocabulary, me)
    top = translator.part(parse(query))
    if not top:
        dropped = ", ".join(translator.dropped)
        raise SearchSyntaxError(
            Reason.NOTHING_SEARCHABLE,
            0,
            f"nothing to search for: too common or too short to be indexed ({dropped}); add a longer word",
        )
    matches = top.matches()
    ranking = [m for m, ranks in matches if ranks]
    score = functools.reduce(operator.add, ranking) if ranking else None
    return SearchPlan([*(m for m, _ in matches), *top.other], score)


@functools.lru_cache(maxsize=256)
def _planned(query: str, vocabulary: Vocabulary) -> SearchPlan:
    return plan(query, vocabulary, None)


def checked(query: str, vocabulary: Vocabulary) -> None:
    """Raises what `plan(query, vocabulary, None)` raises (NeedsMe when the search names `me`); a search that
    plans is kept, for `statement`."""
    _planned(query, vocabulary)


def statement(
    query: str,
    vocabulary: Vocabulary,
    me: str | None,
    filter: MessageFilter | None,
    page: pages.PageArgs,
    columns: frozenset[str] | None,
) -> pages.KeptPage:
    """The statement of a search's page, with the filter's conditions (BAD_USER_INPUT for a filter's bad id),
    reading the `columns` of messages its selection reads (None: every column the API shows; see
    gateway.graphql.types.messages.message_columns). `me`: None for a search that does not name `me` (`checked`
    passed), whose statement is built once per search text, filter, page shape and columns and kept (256 at
    most); else the account's address, which makes it the account's own: built anew."""
    shape = pages.shape_of(page)
    if me is not None:
        return _statement(plan(query, vocabulary, me), FilterKey.of(filter), shape, columns)
    return _kept_statement(query, vocabulary, FilterKey.of(filter), shape, columns)


@functools.lru_cache(maxsize=256)
def _kept_statement(
    query: str,
    vocabulary: Vocabulary,
    filter: FilterKey[MessageFilter],
    shape: pages.Shape,
    columns: frozenset[str] | None,
) -> pages.KeptPage:
    return _statement(_planned(query, vocabulary), filter, shape, columns)


def _statement(
    found: SearchPlan, filter: FilterKey[MessageFilter], shape: pages.Shape, columns: frozenset[str] | None
) -> pages.KeptPage:
    conditions = [
        *found.conditions,
        Message.account_id == bindparam("account"),
        Message.orphaned_at.is_(None),
        *message_conditions(filter.filter),
    ]
    if found.score is None:
        base, keys = select(*message_columns_of(columns, MESSAGE_KEYS)), MESSAGE_KEYS
    else:
        keys = (pages.Key(found.score, True, "score"), pages.Key(Message.id, True, "id"))
        base = select(*message_columns_of(columns, keys), found.score.label("score"))
    base = base.where(*conditions)
    return pages.kept_page(base, keys, shape)
