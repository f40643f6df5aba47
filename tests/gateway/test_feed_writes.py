"""The change feed follows what mutations ask of the server, over a real websocket (Python's gql client): a move
into a folder deleted on the server meanwhile shows its action PENDING, then the undo of the mirror, then the
action FAILED with the server's reason; a send through the real Postfix shows its outbox entry QUEUED, SENDING,
SENT with the server's reply. A `types` filter narrows the subscription to those objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from gateway.ids import from_global
from gateway.testing import ServerThread
from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from schema.crypto import CredentialBox
from schema.unit import Store
from tests.conftest import new_user
from tests.gateway.test_mutations import make_mailbox, mutation
from tests.gateway.test_sending import make_sender, soon
from tests.gateway.test_subscriptions import follow, seq_of

FOLLOW = """subscription($a: ID!, $after: String, $types: [ChangeObjectType!]) {
  changes(accountId: $a, after: $after, types: $types) {
    cursor operation objectType objectId state
    object {
      __typename
      ... on Action { kind actionState: state error }
      ... on OutboxEntry { outboxState: state smtpResponse }
    }
  }
}"""
CURSOR = "query($a: ID!) { changesCursor(accountId: $a) }"


async def until(
    stream: AsyncIterator[Any], last: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> list[dict[str, Any]]:
    """The stream's changes up to and with the first one `last` accepts."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not out or not last(out[-1]):
            out.append((await anext(stream))["changes"])
    return out


async def close(*streams: AsyncIterator[Any]) -> None:
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]


def pk(gid: str) -> int:
    return from_global(gid)[1]


async def test_a_refused_move_shows_its_action_pending_then_the_undo_then_failed(
    gateway: ServerThread,
    gw_store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    http: httpx.AsyncClient,
) -> None:
    mailbox = await make_mailbox(gw_store, credential_box, dovecot, http)
    mailbox.imap.run("create", "Doomed")
    await mailbox.sync()
    [first, *_] = await mailbox.messages()
    folders = await mailbox.folders()
    inbox, doomed = pk(folders["INBOX"]["id"]), pk(folders["Doomed"]["id"])
    start = await mailbox.cursor()
    token = mailbox.client.token or ""
    everything = follow(gateway, token, FOLLOW, {"a": mailbox.gid, "after": start})
    actions_only = follow(gateway, token, FOLLOW, {"a": mailbox.gid, "after": start, "types": ["ACTION"]})
    try:
        moved = await mailbox.client.data(
            mutation("moveMessages"), {"input": {"ids": [first["id"]], "folderId": folders["Doomed"]["id"]}}
        )
        [queued] = moved["moveMessages"]["actions"]
        assert queued["state"] == "PENDING"
        mailbox.imap.run("delete", "Doomed")
        await mailbox.sync()  # the executor's MOVE is refused: the action fails

        def ended(change: dict[str, Any]) -> bool:
            return bool(change["objectType"] == "ACTION" and change["state"]["state"] != "pending")

        seen = await until(everything, ended)
        filtered = await until(actions_only, ended)
    finally:
        await close(everything, actions_only)

    assert [seq_of(c["cursor"]) for c in seen] == list(range(seq_of(start) + 1, seq_of(start) + 1 + len(seen)))
    action_changes = [c for c in seen if c["objectType"] == "ACTION"]
    assert [(c["operation"], c["objectId"], c["state"]["state"]) for c in action_changes] == [
        ("CREATE", queued["id"], "pending"),
        ("UPDATE", queued["id"], "failed"),
    ]
    created, failed = action_changes
    assert (created["state"]["kind"], created["state"]["folder_id"]) == ("move", doomed)
    assert created["state"]["message_id"] == pk(first["id"])
    reason = failed["state"]["error"]
    assert reason  # the server's: Dovecot names the missing mailbox
    assert failed["state"]["finished_at"] is not None
    assert failed["object"] == {"__typename": "Action", "kind": "move", "actionState": "FAILED", "error": reason}
    # Right before the failure, in the same transaction: the undo, the message back in INBOX.
    undo = seen[seen.index(failed) - 1]
    assert (undo["objectType"], undo["objectId"]) == ("MESSAGE", first["id"])
    assert undo["state"]["folder_ids"] == [inbox]
    # The optimistic move came right before the action's creation.
    optimistic = seen[seen.index(created) - 1]
    assert (optimistic["objectType"], optimistic["objectId"], optimistic["state"]["folder_ids"]) == (
        "MESSAGE",
        first["id"],
        [doomed],
    )
    # Filtered by type: the same two changes with the same cursors, and nothing else.
    assert filtered == action_changes


async def test_a_send_shows_its_outbox_entry_queued_sending_then_sent(
    gateway: ServerThread,
    gw_store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    postfix: PostfixServer,
    http: httpx.AsyncClient,
) -> None:
    sender = await make_sender(gw_store, credential_box, dovecot, http, postfix.port)
    recipient, _ = new_user(dovecot)
    start = (await sender.client.data(CURSOR, {"a": sender.gid}))["changesCursor"]
    sends = follow(gateway, sender.token, FOLLOW, {"a": sender.gid, "after": start, "types": ["OUTBOX"]})
    try:
        payload = await sender.sent(
            to=[{"address": dovecot.address(recipient)}], subject="Followed", text="to the end", sendAt=soon()
        )
        assert payload["state"] == "QUEUED"
        await sender.drain()  # the account's executor submits it to the Postfix
        seen = await until(sends, lambda c: c["state"]["state"] not in ("queued", "sending"))
    finally:
        await close(sends)

    assert [(c["objectType"], c["operation"], c["state"]["state"]) for c in seen] == [
        ("OUTBOX", "CREATE", "queued"),
        ("OUTBOX", "UPDATE", "sending"),
        ("OUTBOX", "UPDATE", "sent"),
    ]
    assert {c["objectId"] for c in seen} == {payload["id"]}
    queued, sending, sent = (c["state"] for c in seen)
    assert queued["recipients"] == [dovecot.address(recipient)]
    assert queued["message_id"] == pk(payload["message"]["id"])  # the Sent copy the mirror shows at once
    assert sending["attempts"] == 1
    assert sent["smtp_response"].startswith("250")
    assert sent["sent_at"] is not None
    assert seen[-1]["object"] == {
        "__typename": "OutboxEntry",
        "outboxState": "SENT",
        "smtpResponse": sent["smtp_response"],
    }
