"""The search box through the real gateway over HTTP: words (stopwords and short words do not empty the
search), phrases, OR, exclusion, groups, operators, and typed errors for what does not parse.

Dana's mailbox is written through the schema's write API, as the other gateway tests' mail is; MariaDB's
InnoDB FULLTEXT index with its default stopword list and token sizes does the searching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event

from gateway.errors import CODES
from gateway.ids import to_global
from gateway.testing import BASE_TIME, PDF, Client, Mail, ServerThread, add_folder, deliver, hours
from schema import accounts, tokens
from schema.crypto import CredentialBox
from schema.models import Account as AccountRow
from schema.unit import Store

DANA = "dana@example.test"
SEARCH = """query($a: ID!, $q: String!, $after: String) {
    search(accountId: $a, query: $q, first: 50, after: $after) { totalCount nodes { subject } } }"""

# Dana's mail, by a short name; each test names the mails it expects by these.
MAILS = {
    "invoice": Mail(
        "The invoice for March",
        "Billing <billing@shop.test>",
        [f"Dana <{DANA}>"],
        "Please pay the invoice by Friday.",
        when=BASE_TIME,
        attachments=[("invoice.pdf", "application/pdf", PDF)],
    ),
    "lunch": Mail(
        "Lunch on Friday",
        "Carol <carol@example.test>",
        [DANA],
        "See you at noon in the park.",
        cc=["Erin <erin@example.test>"],
        when=BASE_TIME + hours(1),
    ),
    "reply": Mail(
        "Re: billing question",
        f"Dana <{DANA}>",
        ["billing@shop.test"],
        "The invoices are attached to this mail.",
        when=BASE_TIME + hours(2),
    ),
    "fable": Mail(
        "Quick brown fox",
        "Fox Tales <tales@fables.test>",
        [DANA],
        "The quick brown fox jumps over the lazy dog.",
        when=BASE_TIME + hours(3),
    ),
    "notes": Mail(
        "Meeting notes",
        "Dave <dave@corp.test>",
        [DANA],
        "Notes of the quick meeting: brown paper, a red fox, and 100% of the budget_2026.",
        when=BASE_TIME + hours(4),
    ),
}
SUBJECTS = {key: mail.subject for key, mail in MAILS.items()}


@dataclass
class Mailbox:
    client: Client
    account: str


@pytest.fixture(scope="module")
async def dana(http: httpx.AsyncClient, gw_store: Store, credential_box: CredentialBox) -> Mailbox:
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "dana")
    account = await accounts.create(gw_store, credential_box, DANA, endpoint, "pw")
    inbox = await add_folder(gw_store, account, "INBOX", "inbox")
    sent = await add_folder(gw_store, account, "Sent", "sent")
    archive = await add_folder(gw_store, account, "Old Stories", "archive")
    await deliver(
        gw_store,
        account,
        inbox,
        [
            (MAILS["invoice"].raw(), []),
            (MAILS["lunch"].raw(), ["\\Seen", "\\Flagged"]),
            (MAILS["notes"].raw(), []),
        ],
    )
    await deliver(gw_store, account, sent, [(MAILS["reply"].raw(), ["\\Seen"])])
    await deliver(gw_store, account, archive, [(MAILS["fable"].raw(), ["\\Seen", "fables"])])
    async with gw_store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [account])
    return Mailbox(Client(http, token), to_global("Account", account))


async def found(box: Mailbox, query: str) -> list[str]:
    """The short names of the mails a search finds, in the order it gives them."""
    data = await box.client.data(SEARCH, {"a": box.account, "q": query})
    names = {subject: key for key, subject in SUBJECTS.items()}
    page = data["search"]
    assert page["totalCount"] == len(page["nodes"])
    return [names[n["subject"]] for n in page["nodes"]]


async def error(box: Mailbox, query: str) -> dict[str, Any]:
    response = await box.client.post(SEARCH, {"a": box.account, "q": query})
    assert response.status_code < 500, response.text
    answer = response.json()
    assert answer["data"] is None or answer["data"].get("search") is None, answer
    (only,) = answer["errors"]
    assert only["extensions"]["code"] == "BAD_USER_INPUT", only
    extensions: dict[str, Any] = only["extensions"]
    return extensions


async def test_a_stopword_or_a_short_word_does_not_empty_the_search(dana: Mailbox) -> None:
    # "the" is on InnoDB's stopword list and never indexed: required, it matched nothing at all.
    assert sorted(await found(dana, "the invoice")) == ["invoice", "reply"]
    # "by" is a stopword and "of" too short; "invoice" matches the start of "invoices" too.
    assert sorted(await found(dana, "pay by the invoice")) == ["invoice"]
    assert sorted(await found(dana, "notes of a quick meeting")) == ["notes"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # Words: all required, each matching the start of a word, in subject, addresses or body.
        ("quick brown", ["fable", "notes"]),
        ("fox friday", []),
        ("shop.test", ["invoice", "reply"]),
        ("erin", ["lunch"]),
        ("budget_2026", ["notes"]),
        # Phrases: the words next to each other, in this order (stopwords inside keep their place).
        ('"quick brown"', ["fable"]),
        ('"brown quick"', []),
        ('"pay the invoice"', ["invoice"]),
        ('"over the lazy dog"', ["fable"]),
        # OR between terms; it binds tighter than the space between them.
        ("lunch OR dog", ["fable", "lunch"]),
        ("quick OR lunch", ["fable", "lunch", "notes"]),
        ("fox paper OR lazy", ["fable", "notes"]),
        ('"red fox" OR noon', ["lunch", "notes"]),
        # A lower-case "or" is a word (a stopword, so it drops out).
        ("lunch or friday", ["lunch"]),
        # Exclusion.
        ("fox -lazy", ["notes"]),
        ('fox -"lazy dog"', ["notes"]),
        ('"at noon" -lunch', []),
        ('-"at noon" friday', ["invoice"]),
        ('"brown fox" OR noon OR "red fox"', ["fable", "lunch", "notes"]),
        ("invoice -is:unread", ["reply"]),
        ("-fox -invoice", ["lunch"]),
        # Groups.
        ("(lunch OR invoice) -pay", ["lunch", "reply"]),
        ("-(fox OR invoice)", ["lunch"]),
        ("(quick lazy) OR (noon park)", ["fable", "lunch"]),
        # Boolean-mode operators typed by the user are only separators: they do not change the search.
        ("+lunch ~friday", ["lunch"]),
        ("lunch* <friday> @8", ["lunch"]),
    ],
)
async def test_words_phrases_or_and_exclusion(dana: Mailbox, query: str, expected: list[str]) -> None:
    assert sorted(await found(dana, query)) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("from:billing", ["invoice"]),
        ('from:"fox tales"', ["fable"]),
        ("from:me", ["reply"]),
        ("FROM:Carol", ["lunch"]),
        ("to:billing@shop.test", ["reply"]),
        ("to:erin", ["lunch"]),  # a Cc is a recipient too
        ("cc:erin", ["lunch"]),
        ("cc:dana", []),
        ("to:me -from:carol", ["fable", "invoice", "notes"]),
        ("subject:invoice", ["invoice"]),
        ('subject:"for march"', ["invoice"]),
        ("subject:100%", []),  # LIKE's wildcards are the user's characters, not wildcards
        ("has:attachment", ["invoice"]),
        ("is:unread", ["invoice", "notes"]),
        ("is:read", ["fable", "lunch", "reply"]),
        ("is:starred", ["lunch"]),
        ("-is:starred -is:unread", ["fable", "reply"]),
        ("in:sent", ["reply"]),
        ("in:inbox", ["invoice", "lunch", "notes"]),
        ('in:"Old Stories"', ["fable"]),
        ("label:fables", ["fable"]),
        ("from:carol OR from:dave", ["lunch", "notes"]),
        ("quick is:unread", ["notes"]),
        ("the is:unread", ["invoice", "notes"]),  # the stopword drops out, the operator still holds
        ("fox OR is:starred", ["fable", "lunch", "notes"]),
        ("in:inbox -(from:carol OR from:billing)", ["notes"]),
    ],
)
async def test_operators(dana: Mailbox, query: str, expected: list[str]) -> None:
    assert sorted(await found(dana, query)) == expected


async def test_operators_alone_list_newest_first_and_words_rank(dana: Mailbox) -> None:
    assert await found(dana, "to:me") == ["notes", "fable", "lunch", "invoice"]
    # The subject and the body both say invoice: ranked above the reply that says it once.
    assert await found(dana, "invoice") == ["invoice", "reply"]


@pytest.mark.parametrize(
    ("query", "reason", "position"),
    [
        ("foo:bar", "UNKNOWN_OPERATOR", 0),
        ("lunch http://example.test", "UNKNOWN_OPERATOR", 6),
        ('lunch "friday', "UNBALANCED_QUOTE", 6),
        ("(lunch OR fox", "UNBALANCED_PARENTHESIS", 0),
        ("lunch)", "UNBALANCED_PARENTHESIS", 5),
        ("()", "EMPTY_GROUP", 0),
        ("OR fox", "MISPLACED_OR", 0),
        ("fox OR", "MISPLACED_OR", 4),
        ("is:bogus", "BAD_OPERATOR_VALUE", 0),
        ("has:cheese", "BAD_OPERATOR_VALUE", 0),
        ("from: carol", "MISSING_VALUE", 0),
        ("", "EMPTY_SEARCH", 0),
        ("+-*", "EMPTY_SEARCH", 0),
        ("the of a", "NOTHING_SEARCHABLE", 0),
        ("-the", "NOTHING_SEARCHABLE", 0),
        ("x" * 600, "TOO_LONG", 0),
        ("(" * 20 + "fox" + ")" * 20, "TOO_DEEP", 8),
    ],
)
async def test_bad_syntax_is_a_typed_error(dana: Mailbox, query: str, reason: str, position: int) -> None:
    extensions = await error(dana, query)
    assert (extensions["reason"], extensions["position"]) == (reason, position)


async def test_many_terms_are_refused_not_cut(dana: Mailbox) -> None:
    assert (await error(dana, " ".join(["fox"] * 40)))["reason"] == "TOO_MANY_TERMS"


# What a user might type: words, the syntax of the search box, MariaDB's boolean-mode operators, SQL.
TYPED = st.lists(
    st.one_of(
        st.sampled_from(["fox", "the", "a", "OR", "-", '"', "(", ")", "from:", "is:", "in:", "me", "+", "*", "~"]),
        st.sampled_from(["@", "<", ">", "'", "\\", "%", "_", ":", "' OR 1=1 --", "\x00", "ß", "日本語"]),
        st.text(max_size=6),
    ),
    max_size=12,
).map(lambda parts: "".join(parts))


@pytest.mark.slow
def test_whatever_is_typed_gets_results_or_a_typed_error(gateway: ServerThread, dana: Mailbox) -> None:
    headers = {"authorization": f"Bearer {dana.client.token}"}
    with httpx.Client(base_url=gateway.url, timeout=30, headers=headers) as http:

        @settings(
            max_examples=150,
            derandomize=True,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            database=None,
        )
        @given(query=TYPED)
        def run(query: str) -> None:
            response = http.post("/graphql", json={"query": SEARCH, "variables": {"a": dana.account, "q": query}})
            assert response.status_code < 500, response.text
            for e in response.json().get("errors") or ():
                assert e["extensions"]["code"] in CODES - {"INTERNAL"}, e

        run()


async def test_the_account_is_read_only_when_the_search_needs_it(gateway: ServerThread, dana: Mailbox) -> None:
    """Its address, for `me`; or whether it still exists, when the search finds nothing or fails: a search that
    finds mail had the account."""
    read: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM accounts" in statement:
            read.append(statement)

    engine = gateway.app.state.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", watch)
    try:
        assert await found(dana, "fox") == ["fable", "notes"]  # the token's grant is cached from here on
        read.clear()
        assert await found(dana, "quick fox") == ["fable", "notes"]
        assert read == []
        assert await found(dana, "from:me") == ["reply"]
        assert len(read) == 1
        read.clear()
        assert await found(dana, "zebras") == []
        assert len(read) == 1
    finally:
        event.remove(engine, "before_cursor_execute", watch)


async def test_a_removed_account_is_not_found_whatever_it_searches(
    http: httpx.AsyncClient, gw_store: Store, credential_box: CredentialBox
) -> None:
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "gone")
    account = await accounts.create(gw_store, credential_box, "gone@example.test", endpoint, "pw")
    inbox = await add_folder(gw_store, account, "INBOX", "inbox")
    await deliver(gw_store, account, inbox, [(MAILS["fable"].raw(), [])])
    async with gw_store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [account])
    box = Mailbox(Client(http, token), to_global("Account", account))
    assert await found(box, "fox") == ["fable"]  # the token's grant is cached: it outlives the account a while
    async with gw_store.sessions() as session, session.begin():
        await session.execute(delete(AccountRow).where(AccountRow.id == account))
    for query in ("fox", "from:me", "zebras", '"unbalanced'):
        answer = (await box.client.post(SEARCH, {"a": box.account, "q": query})).json()
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["NOT_FOUND"], (query, answer)


PAGED = """query($a: ID!, $q: String!, $f: MessageFilter, $first: Int, $after: String, $last: Int, $before: String) {
    search(accountId: $a, query: $q, filter: $f, first: $first, after: $after, last: $last, before: $before) {
        totalCount edges { cursor node { subject } } pageInfo { hasNextPage hasPreviousPage } } }"""


async def pages_of(box: Mailbox, query: str, backward: bool, f: dict[str, Any] | None = None) -> list[list[str]]:
    """The short names of a search's results, a page of one at a time, by cursors: forward from the first, or
    backward from the last."""
    names = {subject: key for key, subject in SUBJECTS.items()}
    found: list[list[str]] = []
    cursor: str | None = None
    while True:
        side = {"last": 1, "before": cursor} if backward else {"first": 1, "after": cursor}
        data = await box.client.data(PAGED, {"a": box.account, "q": query, "f": f, **side})
        page = data["search"]
        found.append([names[e["node"]["subject"]] for e in page["edges"]])
        more = page["pageInfo"]["hasPreviousPage" if backward else "hasNextPage"]
        if not more:
            return found
        cursor = page["edges"][0]["cursor"]


@pytest.mark.parametrize(
    ("query", "f", "expected"),
    [
        ("quick OR lunch", None, ["fable", "lunch", "notes"]),  # by relevance: the cursors hold a score
        ("to:me", None, ["notes", "fable", "lunch", "invoice"]),  # newest first: the cursors hold a time
        ("to:me", {"unread": False}, ["fable", "lunch"]),
    ],
)
async def test_pages_by_cursor_read_the_whole_search_in_its_order(
    dana: Mailbox, query: str, f: dict[str, Any] | None, expected: list[str]
) -> None:
    whole = await dana.client.data(PAGED, {"a": dana.account, "q": query, "f": f, "first": 50})
    names = {subject: key for key, subject in SUBJECTS.items()}
    assert [names[e["node"]["subject"]] for e in whole["search"]["edges"]] == expected
    assert await pages_of(dana, query, False, f) == [[n] for n in expected]
    assert await pages_of(dana, query, True, f) == [[n] for n in reversed(expected)]


async def test_the_same_search_of_another_account_finds_only_its_mail(
    dana: Mailbox, http: httpx.AsyncClient, gw_store: Store, credential_box: CredentialBox
) -> None:
    """A search's statement is kept for the next one of the same text, filter and page (whoever asks): the
    account is a parameter of it, never part of what is kept."""
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "frank")
    account = await accounts.create(gw_store, credential_box, "frank@example.test", endpoint, "pw")
    inbox = await add_folder(gw_store, account, "INBOX", "inbox")
    await deliver(gw_store, account, inbox, [(MAILS["fable"].raw(), []), (MAILS["lunch"].raw(), [])])
    async with gw_store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [account])
    frank = Mailbox(Client(http, token), to_global("Account", account))
    names = {subject: key for key, subject in SUBJECTS.items()}
    expected = {  # (query, only unread): what dana finds, what frank finds (all his mail is unread)
        ("fox", False): ({"fable", "notes"}, {"fable"}),
        ("fox", True): ({"notes"}, {"fable"}),
        ("quick OR lunch", False): ({"fable", "lunch", "notes"}, {"fable", "lunch"}),
        ("quick OR lunch", True): ({"notes"}, {"fable", "lunch"}),
        ("is:unread", False): ({"invoice", "notes"}, {"fable", "lunch"}),
        ("from:me OR fox", False): ({"reply", "fable", "notes"}, {"fable"}),
    }
    for turn in range(2):  # dana first, then frank first
        for (query, unread), wanted in expected.items():
            f = {"unread": True} if unread else None
            boxes = [dana, frank] if turn == 0 else [frank, dana]
            for box in boxes:
                data = await box.client.data(PAGED, {"a": box.account, "q": query, "f": f, "first": 50})
                got = {names[e["node"]["subject"]] for e in data["search"]["edges"]}
                assert got == wanted[0 if box is dana else 1], (query, unread, box.account)
                assert data["search"]["totalCount"] == len(got)
    assert sorted(name for page in await pages_of(frank, "fox OR lunch", False) for name in page) == ["fable", "lunch"]


async def test_a_search_asked_again_runs_the_statement_built_the_first_time(
    gateway: ServerThread, dana: Mailbox
) -> None:
    """Building a search's statement, and SQLAlchemy's work on a statement it has not met (its cache key, its
    result columns), cost more CPU than running it: a search of the same text, filter and page shape runs the
    statement built the first time, with its account and cursor as parameters."""
    ran: list[Any] = []

    def watch(conn: Any, clause: Any, *args: Any) -> None:
        if "MATCH" in str(clause.compile(dialect=conn.dialect)):
            ran.append(clause)

    engine = gateway.app.state.services.engine.sync_engine
    event.listen(engine, "before_execute", watch)
    try:
        for _ in range(2):
            assert await found(dana, "quick brown") == ["fable", "notes"]
        page = await dana.client.data(PAGED, {"a": dana.account, "q": "quick brown", "first": 1})
        after = page["search"]["edges"][0]["cursor"]
        for _ in range(2):
            await dana.client.data(PAGED, {"a": dana.account, "q": "quick brown", "first": 1, "after": after})
    finally:
        event.remove(engine, "before_execute", watch)
    # Both queries ask for totalCount: a page's statement, then its count's, each time.
    first, first_count, again, again_count, one, _, second, _, second_again, _ = ran
    assert again is first
    assert again_count is first_count
    assert one is not first  # a page of another size
    assert second_again is second  # a page after a cursor, whatever the cursor
    assert second is not one
