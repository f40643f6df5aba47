"""The settings the packages rely on, without building anything: the container's refusal to make a secret key,
the gateway's address from the environment, and what the image's HEALTHCHECK asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from inboxql.cli import _build_parser
from inboxql.healthcheck import url_to_check
from schema import keyring
from schema.settings import Settings, SettingsError


def test_a_required_key_ring_that_is_missing_is_refused_with_how_to_provide_one_and_none_is_made(
    tmp_path: Path,
) -> None:
    ring = tmp_path / "keys" / "secret.key"
    env = {"INBOXQL_SECRET_KEY_FILE": str(ring), "INBOXQL_SECRET_KEY_REQUIRED": "1"}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert "no secret key" in message
    assert str(ring) in message
    assert "INBOXQL_SECRET_KEY" in message
    assert not ring.exists()
    assert not ring.parent.exists()


def test_a_required_key_given_as_a_file_or_a_variable_is_used(tmp_path: Path) -> None:
    ring = tmp_path / "secret.key"
    ring.write_text("1 the-mounted-key\n")
    env = {"INBOXQL_SECRET_KEY_FILE": str(ring), "INBOXQL_SECRET_KEY_REQUIRED": "1"}
    assert Settings.from_env(env).secret_key == "the-mounted-key"
    assert Settings.from_env({"INBOXQL_SECRET_KEY": "given", "INBOXQL_SECRET_KEY_REQUIRED": "1"}).secret_key == "given"


def test_without_the_requirement_a_missing_key_ring_is_made(tmp_path: Path) -> None:
    ring = tmp_path / "secret.key"
    settings = Settings.from_env({"INBOXQL_SECRET_KEY_FILE": str(ring)})
    assert [k.secret for k in keyring.read(ring)] == [settings.secret_key]


def test_the_gateway_listens_where_the_environment_says_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INBOXQL_GATEWAY_HOST", raising=False)
    monkeypatch.delenv("INBOXQL_GATEWAY_PORT", raising=False)
    default = _build_parser().parse_args(["gateway"])
    assert (default.host, default.port) == ("127.0.0.1", 8000)
    monkeypatch.setenv("INBOXQL_GATEWAY_HOST", "0.0.0.0")
    monkeypatch.setenv("INBOXQL_GATEWAY_PORT", "8123")
    container = _build_parser().parse_args(["gateway"])
    assert (container.host, container.port) == ("0.0.0.0", 8123)
    told = _build_parser().parse_args(["gateway", "--host", "127.0.0.1", "--port", "9000"])
    assert (told.host, told.port) == ("127.0.0.1", 9000)


def test_the_healthcheck_asks_the_gateway_on_its_port_and_the_sync_process_only_for_metrics() -> None:
    env = {"INBOXQL_GATEWAY_PORT": "8000"}
    assert url_to_check(["/opt/inboxql/bin/python3", "/opt/inboxql/bin/inboxql", "gateway"], env) == (
        "http://127.0.0.1:8000/healthz"
    )
    assert url_to_check(["inboxql", "gateway", "--port", "9001"], env) == "http://127.0.0.1:9001/healthz"
    assert url_to_check(["inboxql", "sync"], env) is None
    assert url_to_check(["inboxql", "sync", "--metrics-port=9102"], env) == "http://127.0.0.1:9102/metrics"
    assert url_to_check(["inboxql", "sync"], {"INBOXQL_METRICS_PORT": "9103"}) == "http://127.0.0.1:9103/metrics"
