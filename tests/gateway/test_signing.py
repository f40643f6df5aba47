"""Download links across a key rotation: signed with the newest key of the ring, followed with any of its keys,
by a gateway process started before the rotation or after."""

from __future__ import annotations

from pathlib import Path

from gateway.signing import Signer
from schema import keyring
from schema.crypto import KeyRing


def _parts(link: str) -> tuple[str, int, int, str]:
    path, _, query = link.partition("?")
    fields = dict(p.split("=", 1) for p in query.split("&"))
    return path, int(fields["t"]), int(fields["e"]), fields["s"]


def test_links_made_on_either_side_of_a_rotation_are_followed_on_the_other(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    keyring.ensure(path)
    before = Signer(KeyRing.load(path), 60)  # a gateway started before the rotation
    old_link = before.sign("/attachments/QXQ6MQ", 7)
    keyring.add_key(path)
    after = Signer(KeyRing.load(path), 60)  # one started after it
    new_link = after.sign("/attachments/QXQ6MQ", 7)
    assert old_link != new_link
    assert after.verify(*_parts(old_link))
    assert before.verify(*_parts(new_link))
    tampered = _parts(new_link)
    assert not before.verify(tampered[0], 8, tampered[2], tampered[3])


def test_a_link_of_another_secret_is_refused() -> None:
    link = Signer("one secret", 60).sign("/messages/TWVzc2FnZTox/raw", 3)
    assert Signer("one secret", 60).verify(*_parts(link))
    assert not Signer("another secret", 60).verify(*_parts(link))
