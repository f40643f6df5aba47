"""The search box's language, without a database: the tree a text parses to, the errors it gives, and the
boolean-mode pieces a tree becomes (tests/gateway/test_search.py runs them on MariaDB)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.graphql.search import Part, Translator
from gateway.graphql.searchquery import (
    MAX_DEPTH,
    MAX_TERMS,
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
from schema.fulltext import INNODB_DEFAULT_STOPWORDS, Vocabulary


def words(*texts: str) -> tuple[Word, ...]:
    return tuple(Word(t) for t in texts)


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("invoice", Word("invoice")),
        ("the invoice", AllOf(words("the", "invoice"))),
        ("  spaced\tout\n", AllOf(words("spaced", "out"))),
        ("shop.test", AllOf(words("shop", "test"))),
        ("budget_2026 Grüße", AllOf(words("budget_2026", "Grüße"))),
        ('"pay the invoice"', Phrase(("pay", "the", "invoice"))),
        ('"o\'reilly, books"', Phrase(("o", "reilly", "books"))),
        ('say "hi there" now', AllOf((Word("say"), Phrase(("hi", "there")), Word("now")))),
        ("lunch OR dinner", AnyOf(words("lunch", "dinner"))),
        ("a OR b OR c", AnyOf(words("a", "b", "c"))),
        ("a b OR c d", AllOf((Word("a"), AnyOf(words("b", "c")), Word("d")))),
        ("lunch or dinner", AllOf(words("lunch", "or", "dinner"))),
        ("fox AND dog", AllOf(words("fox", "dog"))),
        ("-lazy", Not(Word("lazy"))),
        ("fox -lazy", AllOf((Word("fox"), Not(Word("lazy"))))),
        ('-"lazy dog"', Not(Phrase(("lazy", "dog")))),
        ("--fox", Word("fox")),
        ("---fox", Not(Word("fox"))),
        ("e-mail", AllOf(words("e", "mail"))),
        ("fox - dog", AllOf(words("fox", "dog"))),
        ("fox -", Word("fox")),
        ("fox -+", Word("fox")),
        ("a OR -b", AnyOf((Word("a"), Not(Word("b"))))),
        ("(a b) OR c", AnyOf((AllOf(words("a", "b")), Word("c")))),
        ("-(a OR b)", Not(AnyOf(words("a", "b")))),
        ("((a))", Word("a")),
        ("lunch(friday)", AllOf(words("lunch", "friday"))),
        ("from:bob@x.test", Field("from", "bob@x.test")),
        ('from:"Bob Smith"', Field("from", "Bob Smith")),
        ("FROM:Bob", Field("from", "Bob")),
        ("to:me cc:erin bcc:x", AllOf((Field("to", "me"), Field("cc", "erin"), Field("bcc", "x")))),
        ('subject:"for march"', Field("subject", "for march")),
        ("subject:100%", Field("subject", "100%")),
        ("has:attachment", Field("has", "attachment")),
        ("is:UNREAD is:read is:starred", AllOf((Field("is", "unread"), Field("is", "read"), Field("is", "starred")))),
        ("in:inbox", Field("in", "inbox")),
        ('in:"Old Stories"', Field("in", "Old Stories")),
        ("label:work", Field("label", "work")),
        ("-is:starred", Not(Field("is", "starred"))),
        ("from:a OR from:b", AnyOf((Field("from", "a"), Field("from", "b")))),
        ("(from:a)", Field("from", "a")),
        ("from:a)", None),  # the value stops at the parenthesis: an unbalanced one
        # A colon makes an operator only with letters before it and something after it.
        ("Re: lunch", AllOf(words("Re", "lunch"))),
        ("10:30", AllOf(words("10", "30"))),
        (":fox", Word("fox")),
        ("+fox ~dog <a> @8 *", AllOf(words("fox", "dog", "a", "8"))),
        ('fox "" dog', AllOf(words("fox", "dog"))),
        ("fox +-* dog", AllOf(words("fox", "dog"))),
    ],
)
def test_parses_to_a_tree(text: str, tree: Node | None) -> None:
    if tree is None:
        with pytest.raises(SearchSyntaxError):
            parse(text)
    else:
        assert parse(text) == tree


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("", Reason.EMPTY_SEARCH, 0),
        ("   ", Reason.EMPTY_SEARCH, 0),
        ("+-*", Reason.EMPTY_SEARCH, 0),
        ("AND", Reason.EMPTY_SEARCH, 0),
        ("foo:bar", Reason.UNKNOWN_OPERATOR, 0),
        ("lunch http://x.test", Reason.UNKNOWN_OPERATOR, 6),
        ('lunch x:"y"', Reason.UNKNOWN_OPERATOR, 6),
        ('lunch "friday', Reason.UNBALANCED_QUOTE, 6),
        ('from:"bob', Reason.UNBALANCED_QUOTE, 5),
        ("(lunch OR fox", Reason.UNBALANCED_PARENTHESIS, 0),
        ("a (b (c) d", Reason.UNBALANCED_PARENTHESIS, 2),
        ("lunch)", Reason.UNBALANCED_PARENTHESIS, 5),
        ("a) (b", Reason.UNBALANCED_PARENTHESIS, 1),
        ("()", Reason.EMPTY_GROUP, 0),
        ("a ( +* )", Reason.EMPTY_GROUP, 2),
        ("OR fox", Reason.MISPLACED_OR, 0),
        ("fox OR", Reason.MISPLACED_OR, 4),
        ("fox OR OR dog", Reason.MISPLACED_OR, 4),
        ("(fox OR) dog", Reason.MISPLACED_OR, 5),
        ("is:bogus", Reason.BAD_OPERATOR_VALUE, 0),
        ("fox has:cheese", Reason.BAD_OPERATOR_VALUE, 4),
        ("from:" + "x" * 201, Reason.BAD_OPERATOR_VALUE, 0),
        ("from: carol", Reason.MISSING_VALUE, 0),
        ('to:""', Reason.MISSING_VALUE, 0),
        ("x" * 501, Reason.TOO_LONG, 0),
        (" ".join(["fox"] * (MAX_TERMS + 1)), Reason.TOO_MANY_TERMS, 4 * MAX_TERMS),
        ("(" * (MAX_DEPTH + 1) + "fox" + ")" * (MAX_DEPTH + 1), Reason.TOO_DEEP, MAX_DEPTH),
    ],
)
def test_does_not_parse(text: str, reason: Reason, position: int) -> None:
    with pytest.raises(SearchSyntaxError) as raised:
        parse(text)
    assert (raised.value.reason, raised.value.position) == (reason, position)
    assert raised.value.extensions == {"reason": reason.value, "position": position}


def pieces(part: Part) -> tuple[list[str], list[str], int]:
    return [p.text for p in part.required], [p.text for p in part.excluded], len(part.other)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invoice", (["invoice*"], [], 0)),
        ("the invoice", (["invoice*"], [], 0)),
        ("pay by the invoice of a", (["pay*", "invoice*"], [], 0)),
        ("invoice -the", (["invoice*"], [], 0)),
        ("invoice OR the", ([], [], 0)),
        ("a OR b", ([], [], 0)),
        ('"pay the invoice"', (['"pay the invoice"'], [], 0)),
        ('"of the"', ([], [], 0)),
        ("fox -lazy", (["fox*"], ["lazy*"], 0)),
        ("lunch OR dinner", (["(lunch* dinner*)"], [], 0)),
        ("(lunch friday) OR noon", (["((+lunch* +friday*) noon*)"], [], 0)),
        ("(fox -lazy) OR noon", (["((+fox* -lazy*) noon*)"], [], 0)),
        ('"red fox" OR "lazy dog"', (['("red fox" "lazy dog")'], [], 0)),
        ("-(fox OR dog)", ([], ["(fox* dog*)"], 0)),
        ("-(fox dog)", ([], ["(+fox* +dog*)"], 0)),
        ("-(-fox)", (["fox*"], [], 0)),
        # Words and phrases never share a piece (see gateway.graphql.search).
        ('"see you" -lunch', (['"see you"'], ["lunch*"], 0)),
        ('"red fox" OR noon', ([], [], 1)),
        ("fox OR -dog", ([], [], 1)),
        ("fox OR is:starred", ([], [], 1)),
        ("fox is:starred", (["fox*"], [], 1)),
        ("-(fox is:starred)", ([], [], 1)),
        ("x" * 84, (["x" * 84 + "*"], [], 0)),
        ("x" * 85, ([], [], 0)),
    ],
)
def test_becomes_boolean_mode_pieces(text: str, expected: tuple[list[str], list[str], int]) -> None:
    assert pieces(Translator(Vocabulary(), "me@example.test").part(parse(text))) == expected


def test_the_vocabulary_drops_stopwords_and_words_outside_the_token_sizes() -> None:
    vocabulary = Vocabulary(min_length=3, max_length=10, stopwords=frozenset({"the", "with"}))
    assert [w for w in ("the", "THE", "With", "ox", "fox", "abcdefghij", "abcdefghijk") if vocabulary.indexed(w)] == [
        "fox",
        "abcdefghij",
    ]
    assert "the" in INNODB_DEFAULT_STOPWORDS


_PIECE_SYNTAX = re.compile(r'[+\-()*" ]')


@given(
    st.text(max_size=80)
    | st.lists(st.sampled_from(['"', "(", ")", "-", "OR", " ", "from:", "x", "+*~<>@"])).map("".join)
)
def test_no_text_reaches_boolean_mode_but_words(text: str) -> None:
    """Whatever is typed parses or is a SearchSyntaxError, and what reaches boolean mode is word characters
    between the syntax the translation writes itself."""
    try:
        part = Translator(Vocabulary(), "me@example.test").part(parse(text))
    except SearchSyntaxError:
        return
    for piece in (*part.required, *part.excluded):
        for run in _PIECE_SYNTAX.split(piece.text):
            assert re.fullmatch(r"\w*", run), (text, piece.text)
            assert run in text, (text, piece.text)
