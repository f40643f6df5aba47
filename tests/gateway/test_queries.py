"""Reading the mirror: types, keyset connections, filters, search, node lookups."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event

from gateway.ids import to_global
from gateway.testing import (
    ALICE,
    BASE_TIME,
    NEWSLETTERS,
    Client,
    Mail,
    SeededAccount,
    ServerThread,
    World,
    add_folder,
    deliver,
    hours,
)
from schema import accounts
from schema.crypto import CredentialBox
from schema.unit import Store

THREADS_OF_ALICE = NEWSLETTERS + 3  # the quarterly thread, the umlaut mail, the malformed one
MESSAGES_OF_ALICE = NEWSLETTERS + 5


def acc(world: World) -> str:
    return to_global("Account", world.alice.id)


async def walk(client: Client, field: str, args: str, variables: dict[str, Any], backward: bool = False) -> list[str]:
    """Every node id of a connection, page by page."""
    seen: list[str] = []
    cursor: str | None = None
    direction = "last: 7, before: $cursor" if backward else "first: 7, after: $cursor"
    query = f"""query($a: ID!, $cursor: String) {{ {field}(accountId: $a{args}, {direction}) {{
        edges {{ cursor node {{ id }} }} pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }}"""
    for _ in range(100):
        page = (await client.data(query, {**variables, "cursor": cursor}))[field]
        ids = [e["node"]["id"] for e in page["edges"]]
        seen = ids + seen if backward else seen + ids
        if page["edges"]:
            assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
            assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        more = page["pageInfo"]["hasPreviousPage"] if backward else page["pageInfo"]["hasNextPage"]
        if not more:
            return seen
        cursor = page["pageInfo"]["startCursor"] if backward else page["pageInfo"]["endCursor"]
    raise AssertionError("the pages never ended")


async def test_accounts_are_the_tokens_accounts(alice: Client, bob: Client, world: World, http: Any) -> None:
    mine = await alice.data("{ accounts { totalCount edges { node { id address syncState } } } }")
    assert mine["accounts"]["totalCount"] == 1
    assert [e["node"]["address"] for e in mine["accounts"]["edges"]] == [ALICE]
    both = await Client(http, world.token_both).data("{ accounts { nodes { address } } }")
    assert sorted(n["address"] for n in both["accounts"]["nodes"]) == sorted([ALICE, world.bob.address])


async def test_folders_with_roles_and_counts(alice: Client, world: World) -> None:
    data = await alice.data(
        "query($a: ID!) { folders(accountId: $a) { totalCount nodes { name role messageCount unreadCount } } }",
        {"a": acc(world)},
    )
    folders = {f["name"]: f for f in data["folders"]["nodes"]}
    assert data["folders"]["totalCount"] == 3
    assert folders["INBOX"]["role"] == "inbox"
    assert folders["INBOX"]["messageCount"] == NEWSLETTERS + 4
    # unread: q2, the malformed one, the umlaut one (flagged, not seen), the odd newsletters
    assert folders["INBOX"]["unreadCount"] == 3 + NEWSLETTERS // 2
    assert folders["Sent"] == {"name": "Sent", "role": "sent", "messageCount": 1, "unreadCount": 0}


async def test_threads_page_forward_and_backward_by_keyset(alice: Client, world: World) -> None:
    forward = await walk(alice, "threads", "", {"a": acc(world)})
    backward = await walk(alice, "threads", "", {"a": acc(world)}, backward=True)
    assert len(forward) == len(set(forward)) == THREADS_OF_ALICE
    assert backward == forward
    data = await alice.data(
        "query($a: ID!) { threads(accountId: $a, first: 100) { totalCount nodes { lastMessageAt } } }",
        {"a": acc(world)},
    )
    times = [t["lastMessageAt"] for t in data["threads"]["nodes"]]
    assert data["threads"]["totalCount"] == THREADS_OF_ALICE
    assert times == sorted(times, reverse=True)


async def test_a_page_continues_where_it_stopped_when_mail_arrives(
    http: Any, gw_store: Store, credential_box: CredentialBox, world: World
) -> None:
    """Keyset cursors, not offsets: a message arriving between two pages neither repeats nor hides one."""
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "carol")
    carol = SeededAccount(await accounts.create(gw_store, credential_box, "carol@example.test", endpoint, "pw"), "")
    inbox = await add_folder(gw_store, carol.id, "INBOX", "inbox")
    mails = [
        Mail(f"Note {i}", "x@example.test", ["carol@example.test"], "hi", when=BASE_TIME + hours(i)) for i in range(6)
    ]
    await deliver(gw_store, carol.id, inbox, [(m.raw(), []) for m in mails])
    from schema import tokens

    async with gw_store.sessions() as session, session.begin():
        client = Client(http, await tokens.create_token(session, [carol.id]))
    query = """query($a: ID!, $after: String) { messages(accountId: $a, first: 3, after: $after) {
        nodes { subject } pageInfo { endCursor } } }"""
    variables = {"a": to_global("Account", carol.id), "after": None}
    first = (await client.data(query, variables))["messages"]
    newest = Mail("Note new", "x@example.test", ["carol@example.test"], "hi", when=BASE_TIME + hours(100))
    await deliver(gw_store, carol.id, inbox, [(newest.raw(), [])], first_uid=100)
    second = (await client.data(query, {**variables, "after": first["pageInfo"]["endCursor"]}))["messages"]
    assert [n["subject"] for n in first["nodes"]] == ["Note 5", "Note 4", "Note 3"]
    assert [n["subject"] for n in second["nodes"]] == ["Note 2", "Note 1", "Note 0"]


async def test_a_thread_with_its_messages_attachments_folders_and_labels(alice: Client, world: World) -> None:
    data = await alice.data(
        """query($a: ID!) { threads(accountId: $a, filter: {subject: "quarterly"}) { nodes {
            subject participants { name address } unread starred messageCount folders { name role } labels { name }
            lastMessage { subject from { address } }
            messages { nodes {
                subject from { name address } to { name address } cc { address } date unread starred
                textBody htmlBody malformed hasAttachments
                attachments { filename contentType size }
                folders { name } labels { name } thread { subject }
            } }
        } } }""",
        {"a": acc(world)},
    )
    [thread] = data["threads"]["nodes"]
    assert thread["subject"] == "Quarterly report"
    assert thread["messageCount"] == 3
    assert thread["unread"]
    assert not thread["starred"]
    assert {f["name"] for f in thread["folders"]} == {"INBOX", "Sent", "Archive"}
    assert [lab["name"] for lab in thread["labels"]] == ["work"]
    assert thread["lastMessage"]["from"] == [{"address": ALICE}]
    assert {p["address"] for p in thread["participants"]} == {"bob@partner.test", ALICE, "carol@example.test"}
    q1, q2, q3 = thread["messages"]["nodes"]
    assert q1["from"] == [{"name": "Bob Partner", "address": "bob@partner.test"}]
    assert q1["to"] == [{"name": "Alice", "address": ALICE}]
    assert q1["cc"] == [{"address": "carol@example.test"}]
    assert q1["date"] == "2026-03-01T09:00:00+00:00"
    assert q1["attachments"] == [
        {"filename": "report.pdf", "contentType": "application/pdf", "size": q1["attachments"][0]["size"]}
    ]
    assert q1["attachments"][0]["size"] > 0
    assert {f["name"] for f in q1["folders"]} == {"INBOX", "Archive"}
    assert q1["labels"] == [{"name": "work"}]
    assert not q1["unread"]
    assert q2["unread"]
    assert q2["htmlBody"] == "<p>Looks <b>good</b> to me.</p>\n"
    assert q2["textBody"] == "Looks good to me.\n"
    assert q3["folders"] == [{"name": "Sent"}]
    assert q3["thread"]["subject"] == "Quarterly report"
    assert not any(m["malformed"] for m in (q1, q2, q3))


async def test_decoded_headers_and_the_malformed_flag(alice: Client, world: World) -> None:
    data = await alice.data(
        """query($a: ID!) { messages(accountId: $a, first: 100) { totalCount nodes {
            subject from { name address } malformed defects attachments { filename } } } }""",
        {"a": acc(world)},
    )
    by_subject = {m["subject"]: m for m in data["messages"]["nodes"]}
    assert data["messages"]["totalCount"] == MESSAGES_OF_ALICE
    umlauts = by_subject["Grüße aus München"]
    assert umlauts["from"] == [{"name": "Jürgen Müller", "address": "jm@example.de"}]
    assert umlauts["attachments"] == [{"filename": "Übersicht.txt"}]
    broken = by_subject["half a multipart"]
    assert broken["malformed"] is True
    assert broken["defects"]
    assert broken["from"] == [{"name": "Broken Sender", "address": "broken@example.test"}]


MESSAGE_FILTERS = [
    ("{unread: true}", 3 + NEWSLETTERS // 2),
    ("{starred: true}", 1),
    ('{from: "PARTNER"}', 1),
    ('{to: "bob@partner"}', 1),
    ('{cc: "carol"}', 1),
    ('{address: "carol@example.test"}', 3),
    ('{subject: "newsletter 1"}', 11),
    ('{subject: "100%_"}', 0),
    ("{hasAttachment: true}", 2),
    ("{hasAttachment: true, unread: false}", 1),
    ('{receivedAfter: "2026-03-01T08:30:00Z", receivedBefore: "2026-03-01T10:30:00+00:00"}', 2),
]


@pytest.mark.parametrize(("condition", "count"), MESSAGE_FILTERS)
async def test_message_filters(alice: Client, world: World, condition: str, count: int) -> None:
    query = f"""query($a: ID!) {{ messages(accountId: $a, filter: {condition}, first: 100) {{
        totalCount nodes {{ id }} }} }}"""
    data = (await alice.data(query, {"a": acc(world)}))["messages"]
    assert data["totalCount"] == len(data["nodes"]) == count


async def test_filters_by_folder_label_and_thread(alice: Client, world: World) -> None:
    folders = await alice.data(
        "query($a: ID!) { folders(accountId: $a) { nodes { id name } } labels(accountId: $a) { nodes { id name } } }",
        {"a": acc(world)},
    )
    ids = {f["name"]: f["id"] for f in folders["folders"]["nodes"]}
    work = folders["labels"]["nodes"][0]
    assert work["name"] == "work"
    query = """query($a: ID!, $f: MessageFilter) { messages(accountId: $a, filter: $f, first: 100) { nodes {
        subject thread { id } } } }"""
    sent = (await alice.data(query, {"a": acc(world), "f": {"folderId": ids["Sent"]}}))["messages"]["nodes"]
    assert [m["subject"] for m in sent] == ["Re: Quarterly report"]
    labelled = (await alice.data(query, {"a": acc(world), "f": {"labelId": work["id"]}}))["messages"]["nodes"]
    assert sorted(m["subject"] for m in labelled) == ["Quarterly report", "Re: Quarterly report"]
    thread = sent[0]["thread"]["id"]
    in_thread = (await alice.data(query, {"a": acc(world), "f": {"threadId": thread}}))["messages"]["nodes"]
    assert len(in_thread) == 3
    threads = (
        """query($a: ID!, $f: ThreadFilter) { threads(accountId: $a, filter: $f, first: 100) { nodes { subject } } }"""
    )
    archived = (await alice.data(threads, {"a": acc(world), "f": {"folderId": ids["Archive"]}}))["threads"]["nodes"]
    assert [t["subject"] for t in archived] == ["Quarterly report"]
    for f, expected in (
        ({"labelId": work["id"]}, ["Quarterly report"]),
        ({"starred": True}, ["Grüße aus München"]),
        ({"participant": "JM@example"}, ["Grüße aus München"]),
        ({"hasAttachment": True}, ["Grüße aus München", "Quarterly report"]),
        ({"subject": "half a"}, ["half a multipart"]),
    ):
        found = (await alice.data(threads, {"a": acc(world), "f": f}))["threads"]["nodes"]
        assert [t["subject"] for t in found] == expected, f
    unread = (await alice.data(threads, {"a": acc(world), "f": {"unread": False}}))["threads"]["nodes"]
    assert len(unread) == NEWSLETTERS // 2


async def test_search_is_ranked_local_and_paged(alice: Client, world: World) -> None:
    query = """query($a: ID!, $q: String!, $f: MessageFilter, $after: String) {
        search(accountId: $a, query: $q, filter: $f, first: 25, after: $after) {
        totalCount nodes { subject } pageInfo { hasNextPage endCursor } } }"""
    quarterly = (await alice.data(query, {"a": acc(world), "q": "quarterly"}))["search"]
    # Bob's mail says "Quarterly report follows" too: it is not Alice's to find.
    assert sorted(n["subject"] for n in quarterly["nodes"]) == ["Quarterly report", *["Re: Quarterly report"] * 2]
    assert quarterly["nodes"][0]["subject"] == "Quarterly report"  # the subject and the body both match: ranked first
    by_address = (await alice.data(query, {"a": acc(world), "q": "partner.test"}))["search"]
    assert sorted(n["subject"] for n in by_address["nodes"]) == ["Quarterly report", "Re: Quarterly report"]
    unread_only = (await alice.data(query, {"a": acc(world), "q": "quarter", "f": {"unread": True}}))["search"]
    assert [n["subject"] for n in unread_only["nodes"]] == ["Re: Quarterly report"]
    seen: list[str] = []
    after = None
    while True:
        page = (await alice.data(query, {"a": acc(world), "q": "gardening digest", "after": after}))["search"]
        seen += [n["subject"] for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(f"Newsletter {i}" for i in range(1, NEWSLETTERS + 1))
    assert page["totalCount"] == NEWSLETTERS
    nothing = await alice.run(
        'query($a: ID!) { search(accountId: $a, query: "+-*()") { totalCount } }', {"a": acc(world)}
    )
    assert nothing["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_node_and_nodes_round_trip(alice: Client, world: World) -> None:
    data = await alice.data(
        """query($a: ID!) { messages(accountId: $a, first: 3) { nodes { id subject thread { id }
            folders { id } } } }""",
        {"a": acc(world)},
    )
    messages = data["messages"]["nodes"]
    ids = [m["id"] for m in messages] + [messages[0]["thread"]["id"], messages[0]["folders"][0]["id"], acc(world)]
    looked = await alice.data(
        """query($ids: [ID!]!) { nodes(ids: $ids) { __typename id ... on Message { subject } } }""", {"ids": ids}
    )
    assert [n["id"] for n in looked["nodes"]] == ids
    assert [n["__typename"] for n in looked["nodes"]] == ["Message"] * 3 + ["Thread", "Folder", "Account"]
    assert [n["subject"] for n in looked["nodes"][:3]] == [m["subject"] for m in messages]
    one = await alice.data("query($id: ID!) { node(id: $id) { id } }", {"id": ids[0]})
    assert one == {"node": {"id": ids[0]}}
    missing = await alice.data("query($id: ID!) { node(id: $id) { id } }", {"id": to_global("Message", 10**12)})
    assert missing == {"node": None}


@pytest.mark.parametrize(
    "query",
    [
        '{ node(id: "not an id") { id } }',
        '{ node(id: "Zm9vOjE") { id } }',
        "{ accounts(first: 0) { totalCount } }",
        "{ accounts(first: 101) { totalCount } }",
        "{ accounts(first: 1, last: 1) { totalCount } }",
        '{ accounts(after: "garbage") { totalCount } }',
        '{ accounts(after: "WyJhIiwiYiJd") { totalCount } }',
        '{ folders(accountId: "Rm9sZGVyOjE=") { totalCount } }',
    ],
)
async def test_bad_input_is_bad_user_input(alice: Client, query: str) -> None:
    answer = await alice.run(query)
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["BAD_USER_INPUT"]


async def test_nodes_takes_at_most_100_ids(alice: Client, world: World) -> None:
    ids = [to_global("Message", i) for i in range(1, 102)]
    answer = await alice.run("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ids})
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    answer = await alice.run("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ids[:100]})
    assert "errors" not in answer


async def test_a_threads_messages_page_both_ways(alice: Client, world: World) -> None:
    data = await alice.data(
        'query($a: ID!) { threads(accountId: $a, filter: {subject: "quarterly"}) { nodes { id } } }', {"a": acc(world)}
    )
    thread = data["threads"]["nodes"][0]["id"]
    query = """query($t: ID!, $first: Int, $after: String, $last: Int, $before: String) { node(id: $t) {
        ... on Thread { messages(first: $first, after: $after, last: $last, before: $before) {
        totalCount nodes { subject from { address } }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } } }"""
    first = (await alice.data(query, {"t": thread, "first": 2}))["node"]["messages"]
    assert first["totalCount"] == 3
    assert [m["from"][0]["address"] for m in first["nodes"]] == ["bob@partner.test", "carol@example.test"]
    assert first["pageInfo"]["hasNextPage"]
    rest = (await alice.data(query, {"t": thread, "first": 2, "after": first["pageInfo"]["endCursor"]}))["node"]
    assert [m["from"][0]["address"] for m in rest["messages"]["nodes"]] == [ALICE]
    assert not rest["messages"]["pageInfo"]["hasNextPage"]
    last = (await alice.data(query, {"t": thread, "last": 2}))["node"]["messages"]
    assert [m["from"][0]["address"] for m in last["nodes"]] == ["carol@example.test", ALICE]
    assert last["pageInfo"]["hasPreviousPage"]
    before = last["pageInfo"]["startCursor"]
    earlier = (await alice.data(query, {"t": thread, "last": 2, "before": before}))["node"]["messages"]
    assert [m["from"][0]["address"] for m in earlier["nodes"]] == ["bob@partner.test"]
    assert not earlier["pageInfo"]["hasPreviousPage"]


async def test_prefetched_and_loaded_relations_agree(alice: Client, world: World) -> None:
    """A page of threads prefetches lastMessage and labels; node(id:) loads them one by one: same answers."""
    fields = "id subject lastMessage { id subject from { address } } labels { id name } folders { name }"
    listed = await alice.data(
        f"query($a: ID!) {{ threads(accountId: $a, first: 100) {{ nodes {{ {fields} }} }} }}", {"a": acc(world)}
    )
    threads = listed["threads"]["nodes"]
    fragment = f"query($ids: [ID!]!) {{ nodes(ids: $ids) {{ ... on Thread {{ {fields} }} }} }}"
    looked = (await alice.data(fragment, {"ids": [t["id"] for t in threads]}))["nodes"]
    assert looked == threads
    assert any(t["labels"] for t in threads)
    assert all(t["lastMessage"] for t in threads)


@pytest.mark.parametrize("field", ["messages", "threads"])
async def test_a_list_page_asked_again_runs_the_statement_built_the_first_time(
    gateway: ServerThread, alice: Client, bob: Client, world: World, field: str
) -> None:
    """A page of messages or threads runs a statement built once per filter and page shape, whoever asks, with
    the account and the cursor as parameters: a request builds no statement, and SQLAlchemy keys it once."""
    order = "ORDER BY messages.received_at DESC" if field == "messages" else "ORDER BY threads.last_message_at DESC"
    ran: list[Any] = []

    def watch(conn: Any, clause: Any, *args: Any) -> None:
        if order in str(clause.compile(dialect=conn.dialect)):
            ran.append(clause)

    kind = "MessageFilter" if field == "messages" else "ThreadFilter"
    query = f"""query($a: ID!, $f: {kind}, $after: String) {{
        {field}(accountId: $a, filter: $f, first: 2, after: $after) {{ edges {{ cursor node {{ id }} }} }} }}"""
    engine = gateway.app.state.services.engine.sync_engine
    event.listen(engine, "before_execute", watch)
    try:
        first = await alice.data(query, {"a": acc(world)})
        await bob.data(query, {"a": to_global("Account", world.bob.id)})
        again = await alice.data(query, {"a": acc(world)})
        assert again == first
        await alice.data(query, {"a": acc(world), "f": {"unread": True}})
        after = [first[field]["edges"][0]["cursor"], first[field]["edges"][1]["cursor"]]
        pages = [await alice.data(query, {"a": acc(world), "after": cursor}) for cursor in after]
    finally:
        event.remove(engine, "before_execute", watch)
    alices, bobs, alices_again, unread, beyond_one, beyond_two = ran
    assert bobs is alices
    assert alices_again is alices
    assert unread is not alices  # another filter
    assert beyond_one is not alices  # a page after a cursor
    assert beyond_two is beyond_one  # whatever the cursor
    # The cursor is a parameter, not a part of the statement: each page goes on from its own cursor.
    assert pages[0][field]["edges"][0] == first[field]["edges"][1]
    assert pages[1][field]["edges"][0] != pages[0][field]["edges"][0]


# A subselection for each object field of Message (any other object field: its __typename).
_SUBSELECTIONS = {
    "from": "{ name address }",
    "to": "{ name address }",
    "cc": "{ name address }",
    "bcc": "{ name address }",
    "replyTo": "{ name address }",
    "attachments": "{ id filename }",
    "folders": "{ id }",
    "labels": "{ id }",
    "thread": "{ id }",
    "account": "{ id }",
}


async def _message_fields(alice: Client) -> list[str]:
    described = await alice.data('{ __type(name: "Message") { fields { name } } }')
    return [f["name"] for f in described["__type"]["fields"]]


async def _listed_as_looked_up(
    alice: Client, world: World, field: str, arguments: str, kind: str, ids: list[str], selection: str
) -> None:
    """A page's objects with `selection` answer as the same objects looked up by `nodes(ids:)`."""
    page = f"query($a: ID!) {{ {field}(accountId: $a, {arguments}) {{ edges {{ node {{ id {selection} }} }} }} }}"
    listed = [e["node"] for e in (await alice.data(page, {"a": acc(world)}))[field]["edges"]]
    lookup = f"query($ids: [ID!]!) {{ nodes(ids: $ids) {{ ... on {kind} {{ id {selection} }} }} }}"
    assert listed == (await alice.data(lookup, {"ids": ids}))["nodes"], selection


@contextlib.contextmanager
def _statements(gateway: ServerThread, matches: Callable[[str], bool]) -> Iterator[list[str]]:
    """The SQL the gateway runs meanwhile that `matches`."""
    statements: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if matches(statement):
            statements.append(statement)

    engine = gateway.app.state.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", watch)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", watch)


@pytest.mark.parametrize("field", ["messages", "search"])
async def test_a_page_of_messages_reads_the_columns_its_selection_asks_for_and_answers_as_a_lookup(
    gateway: ServerThread, alice: Client, world: World, field: str
) -> None:
    """A page of messages (or a search's) reads only the columns of `messages` its selection asks for; each
    field of Message, asked for alone or by a fragment, answers as `nodes(ids:)` does, which reads whole rows."""
    names = await _message_fields(alice)
    assert len(names) >= 29
    arguments = 'query: "quarterly", first: 5' if field == "search" else "first: 5"
    listing = f"query($a: ID!) {{ {field}(accountId: $a, {arguments}) {{ nodes {{ id }} }} }}"
    ids = [n["id"] for n in (await alice.data(listing, {"a": acc(world)}))[field]["nodes"]]
    assert len(ids) >= 3
    for name in names:
        await _listed_as_looked_up(
            alice, world, field, arguments, "Message", ids, f"{name} {_SUBSELECTIONS.get(name, '')}"
        )
    with _statements(gateway, lambda sql: "FROM messages" in sql and "LIMIT" in sql) as statements:
        narrow = f"query($a: ID!) {{ {field}(accountId: $a, {arguments}) {{ nodes {{ id subject }} }} }}"
        await alice.data(narrow, {"a": acc(world)})
        by_fragment = f"""query($a: ID!) {{ {field}(accountId: $a, {arguments}) {{ ...Page }} }}
            fragment Page on MessageConnection {{ edges {{ node {{ ... on Message {{ ...Addressed }} }} }} }}
            fragment Addressed on Message {{ to {{ address }} }}"""
        await alice.data(by_fragment, {"a": acc(world)})
    narrow_sql, fragment_sql = statements
    assert "messages.subject" in narrow_sql
    for unasked in ("to_addrs", "from_addrs", "snippet"):
        assert unasked not in narrow_sql
    assert "to_addrs" in fragment_sql
    assert "snippet" not in fragment_sql


async def test_a_page_of_threads_reads_the_last_messages_columns_its_selection_asks_for(
    gateway: ServerThread, alice: Client, world: World
) -> None:
    """A page of threads reads its last messages' columns as its selection of `lastMessage` asks for them; each
    field of Message answers as a thread looked up alone (its loader reads whole rows) answers it."""
    names = await _message_fields(alice)
    arguments = "first: 8"
    listing = f"query($a: ID!) {{ threads(accountId: $a, {arguments}) {{ nodes {{ id }} }} }}"
    ids = [n["id"] for n in (await alice.data(listing, {"a": acc(world)}))["threads"]["nodes"]]
    for name in names:
        selection = f"lastMessage {{ id {name} {_SUBSELECTIONS.get(name, '')} }}"
        await _listed_as_looked_up(alice, world, "threads", arguments, "Thread", ids, selection)
    with _statements(gateway, lambda sql: "row_number()" in sql.lower()) as statements:
        narrow = "query($a: ID!) { threads(accountId: $a, first: 8) { nodes { lastMessage { id subject } } } }"
        await alice.data(narrow, {"a": acc(world)})
        by_fragment = """query($a: ID!) { threads(accountId: $a, first: 8) { nodes { ...Last } } }
            fragment Last on Thread { lastMessage { ... on Message { cc { address } } } }"""
        await alice.data(by_fragment, {"a": acc(world)})
    narrow_sql, fragment_sql = statements
    assert "messages.subject" in narrow_sql
    for unasked in ("to_addrs", "from_addrs", "snippet"):
        assert unasked not in narrow_sql
    assert "cc_addrs" in fragment_sql
    assert "messages.subject" not in fragment_sql
