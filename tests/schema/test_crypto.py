"""Credentials at rest: sealed with a key derived from a master key and the secret's purpose, tagged with the
master key's id, authenticated on opening; the key ring file (schema.keyring) created once however many processes
start at once."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schema import keyring
from schema.crypto import CredentialBox, CredentialError, KeyRing, Purpose
from schema.keyring import Key
from schema.settings import Settings

ACCOUNT, WEBHOOK = Purpose.ACCOUNT, Purpose.WEBHOOK


def test_sealed_credentials_do_not_contain_the_plaintext() -> None:
    password = "correct horse battery staple"
    sealed = CredentialBox("a secret key").seal(password, ACCOUNT)
    assert isinstance(sealed, bytes)
    assert password.encode() not in sealed
    assert sealed != password.encode()


def test_sealing_twice_gives_different_ciphertexts() -> None:
    box = CredentialBox("a secret key")
    assert box.seal("hunter2", ACCOUNT) != box.seal("hunter2", ACCOUNT)


@pytest.mark.parametrize("password", ["hunter2", "", "pässwörd ✓ 密码", "x" * 500])
@pytest.mark.parametrize("purpose", list(Purpose))
def test_open_round_trips_what_seal_sealed(password: str, purpose: Purpose) -> None:
    box = CredentialBox("a secret key")
    assert box.open(box.seal(password, purpose), purpose) == password


def test_a_box_with_the_same_secret_key_opens_it() -> None:
    sealed = CredentialBox("the key").seal("hunter2", ACCOUNT)
    assert CredentialBox("the key").open(sealed, ACCOUNT) == "hunter2"


def test_a_different_secret_key_raises_credential_error() -> None:
    sealed = CredentialBox("the right key").seal("hunter2", ACCOUNT)
    with pytest.raises(CredentialError):
        CredentialBox("the wrong key").open(sealed, ACCOUNT)


def test_a_tampered_credential_raises_credential_error() -> None:
    box = CredentialBox("the key")
    sealed = bytearray(box.seal("hunter2", ACCOUNT))
    sealed[-5] ^= 0x01
    with pytest.raises(CredentialError):
        box.open(bytes(sealed), ACCOUNT)


def test_an_empty_secret_key_is_refused() -> None:
    with pytest.raises(ValueError, match="secret key"):
        CredentialBox("")


def test_account_passwords_and_webhook_secrets_are_sealed_with_different_keys() -> None:
    """The same master key derives one key per purpose: a webhook secret's key opens no password, and neither
    is the key that the master alone derives (what sealed everything before purposes existed)."""
    box = CredentialBox("the key")
    password = box.seal("hunter2", ACCOUNT)
    with pytest.raises(CredentialError):
        box.open(password, WEBHOOK)
    with pytest.raises(CredentialError):
        box.open(box.seal("whsec_x", WEBHOOK), ACCOUNT)
    token = password.partition(b".")[2]
    for info in (b"inboxql credentials v1", b"inboxql v2: " + WEBHOOK.value.encode()):
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(b"the key")
        with pytest.raises(InvalidToken):
            Fernet(base64.urlsafe_b64encode(derived)).decrypt(token)


def test_a_sealed_value_names_its_key_and_the_newest_key_seals() -> None:
    box = CredentialBox(KeyRing([Key(1, "old"), Key(7, "new")]))
    sealed = box.seal("hunter2", ACCOUNT)
    assert sealed.startswith(b"iqk7.")
    assert box.key_id(sealed) == 7
    assert box.is_current(sealed)
    old = CredentialBox("old").seal("hunter2", ACCOUNT)
    assert box.key_id(old) == 1
    assert not box.is_current(old)
    assert box.open(old, ACCOUNT) == "hunter2"  # every key of the ring opens


def test_values_sealed_before_key_ids_still_open() -> None:
    """What the previous release stored: a bare Fernet token under HKDF(secret, "inboxql credentials v1")."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"inboxql credentials v1").derive(b"first")
    legacy = Fernet(base64.urlsafe_b64encode(derived)).encrypt(b"hunter2")
    box = CredentialBox(KeyRing([Key(1, "first"), Key(2, "second")]))
    assert box.key_id(legacy) is None
    assert not box.is_current(legacy)
    assert box.open(legacy, ACCOUNT) == "hunter2"
    assert box.open(legacy, WEBHOOK) == "hunter2"
    with pytest.raises(CredentialError):
        CredentialBox("second").open(legacy, ACCOUNT)


def test_a_box_reads_its_ring_file_again_after_a_rotation(tmp_path: Path) -> None:
    """A running process (its box built before the rotation) opens what the rotation sealed with the new key,
    and seals with the new key itself."""
    path = tmp_path / "secret.key"
    first = keyring.ensure(path)
    running = CredentialBox(KeyRing.load(path))
    keys = keyring.add_key(path)
    assert [k.id for k in keys] == [1, 2]
    assert keys[0] == first[0]
    rotated = CredentialBox(KeyRing.load(path)).seal("hunter2", WEBHOOK)
    assert CredentialBox.key_id(rotated) == 2
    assert running.open(rotated, WEBHOOK) == "hunter2"
    assert CredentialBox.key_id(running.seal("again", ACCOUNT)) == 2


def test_a_key_id_the_ring_lacks_is_a_credential_error() -> None:
    sealed = CredentialBox(KeyRing([Key(3, "k")])).seal("hunter2", ACCOUNT)
    with pytest.raises(CredentialError, match="key 3"):
        CredentialBox("k").open(sealed, ACCOUNT)


def test_a_ring_file_of_one_bare_key_is_key_1(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("the-old-single-key\n")
    assert keyring.read(path) == [Key(1, "the-old-single-key")]
    sealed = CredentialBox(KeyRing.load(path)).seal("x", ACCOUNT)
    assert CredentialBox("the-old-single-key").open(sealed, ACCOUNT) == "x"


def test_a_key_ring_file_is_written_private(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "secret.key"
    keyring.ensure(path)
    assert path.stat().st_mode & 0o777 == 0o600
    keyring.add_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret.key", "secret.key.lock"]


STARTER = """
import sys, time
from schema.settings import Settings
start = float(sys.argv[1])
while time.time() < start:
    pass
settings = Settings.from_env()
print(settings.secret_key_file, settings.secret_key)
"""


@pytest.mark.parametrize("round_", range(4))
def test_processes_starting_at_once_create_one_key_file_and_share_it(tmp_path: Path, round_: int) -> None:
    """Twelve processes read their settings at the same instant with no key file yet: every one starts, and all
    use the same key, the one in the file."""
    env = {"XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(start)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        for _ in range(12)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 12, [err for _, err in outputs]
    path = tmp_path / "inboxql" / "secret.key"
    (key,) = keyring.read(path)
    assert {out.strip() for out, _ in outputs} == {f"{path} {key.secret}"}


def test_a_key_file_caught_between_create_and_write_is_read_once_written(tmp_path: Path) -> None:
    """Another process has created the file (O_EXCL) and not yet written its key: settings wait for the key
    instead of starting with an empty one or a key of their own."""
    path = tmp_path / "inboxql" / "secret.key"
    path.parent.mkdir()
    path.touch(mode=0o600)
    writer = subprocess.Popen(
        [sys.executable, "-c", f"import time; time.sleep(0.5); open({str(path)!r}, 'w').write('late-key\\n')"]
    )
    try:
        settings = Settings.from_env({"XDG_CONFIG_HOME": str(tmp_path)})
    finally:
        writer.wait(timeout=30)
    assert settings.secret_key == "late-key"
    assert settings.secret_key_file == str(path)
