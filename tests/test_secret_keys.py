"""Several nodes on one database: the keys that seal its values are recorded, by fingerprint."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.fernet import Fernet

from execflow import sealing
from execflow.cli import main
from execflow.runtime import Runtime, rotate_secret_keys
from execflow.sealing import SecretKeyError, fingerprint, read_key_file, write_key_file
from execflow.settings import Settings
from execflow.store import Store
from execflow.store import schema as s
from execflow.store.keys import MissingSecretKeys
from execflow.store.outbox import callback_secret

NOW = datetime(2026, 12, 8, 9, 30, tzinfo=UTC)


@pytest.fixture
def nodes(store: Store, tmp_path: Path) -> Any:
    """Runtimes over the `store` fixture's database, each with its own data directory."""
    url = store.engine.url.render_as_string(hide_password=False)
    built: list[Runtime] = []

    def node(name: str, keys: list[bytes] | None = None, **changes: Any) -> Runtime:
        data_dir = tmp_path / name
        if keys is not None:
            write_key_file(data_dir / "secret-keys", keys)
        settings = Settings(
            data_dir=data_dir,
            database_url=url,
            sqlite_synchronous="OFF",
            node_id=name,
            shutdown_grace=0,
            **changes,
        )
        runtime = Runtime.build(settings)
        built.append(runtime)
        return runtime

    yield node
    for runtime in built:
        runtime.store.close()


def recorded(store: Store) -> dict[str, bool]:
    """The database's fingerprints, each with whether it is retired."""
    k = s.secret_keys
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(k.c.fingerprint, k.c.retired_at)).all()
    return {r.fingerprint: r.retired_at is not None for r in rows}


def test_a_fingerprint_names_a_key_without_revealing_it() -> None:
    key = Fernet.generate_key()
    name = fingerprint(key)
    assert len(name) == 16 and int(name, 16) >= 0
    assert name not in key.decode() and fingerprint(Fernet.generate_key()) != name
    assert fingerprint(key.rstrip(b"=") + b"=") == name  # however the key is padded


def test_a_second_node_with_another_key_refuses_to_start_and_starts_with_both(
    store: Store, nodes: Any
) -> None:
    first = nodes("one")
    first.prepare()
    (one,) = first.store.sealer.keys
    callback_secret(first.store, "default")  # a value sealed with the first node's key
    second = nodes("two")
    (two,) = second.store.sealer.keys
    with pytest.raises(MissingSecretKeys) as refused:
        second.prepare()
    message = str(refused.value)
    assert f"(fingerprints {fingerprint(one)})" in message
    assert "EXECFLOW_SECRET_KEYS" in message and "EXECFLOW_SECRET_KEY_FILE" in message
    assert f"holds {fingerprint(two)} from the key file {second.settings.key_file}" in message
    assert one.decode() not in message and two.decode() not in message
    # the refused node recorded nothing: the first still lacks no key
    assert recorded(store) == {fingerprint(one): False}
    assert first.store.missing_keys() == []
    # with both keys it starts
    again = nodes("two", keys=[one])
    again.prepare()
    assert again.store.missing_keys() == []


def test_keys_from_the_environment_are_named_in_the_refusal(store: Store, nodes: Any) -> None:
    nodes("one").prepare()
    other = nodes("two", secret_keys=Fernet.generate_key().decode())
    with pytest.raises(MissingSecretKeys, match=r"from EXECFLOW_SECRET_KEYS\. Every node"):
        other.prepare()


def test_a_node_started_at_the_same_moment_waits_for_the_first_and_refuses(
    store: Store, nodes: Any
) -> None:
    first, second = nodes("one"), nodes("two")
    keys = first.store.secret_keys
    outcome: list[BaseException | None] = []

    def enroll() -> None:
        try:
            second.store.secret_keys.enroll(NOW)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=enroll)
    # the first node's enrollment, stopped between its record and its commit
    with keys._exclusive() as conn:
        keys._insert(conn, first.store.sealer.fingerprints(), NOW)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive()  # held until the first commits, or it would not see it
    worker.join()
    assert isinstance(outcome[0], MissingSecretKeys)
    assert recorded(store) == {first.store.sealer.fingerprints()[0]: False}


def test_a_running_node_finds_a_key_another_node_recorded(
    store: Store, nodes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealing, "RELOAD_SECONDS", 0.0)  # the key file is looked at each time
    first = nodes("one")
    first.prepare()
    (one,) = first.store.sealer.keys
    newer = Fernet.generate_key()
    # a node started later seals with a newer key, and holds the old one too
    nodes("two", keys=[newer, one]).prepare()
    assert first.store.missing_keys() == [fingerprint(newer)]
    assert first.store.missing_keys() == [fingerprint(newer)]  # until it has it
    # the operator adds it to the first node's key file: no restart needed
    write_key_file(first.settings.key_file, [one, newer])
    assert first.store.missing_keys() == []


def test_a_running_node_records_a_sealing_key_put_first_in_its_key_file(
    store: Store, nodes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealing, "RELOAD_SECONDS", 0.0)
    first, second = nodes("one"), nodes("two")
    first.prepare()
    (one,) = first.store.sealer.keys
    write_key_file(second.settings.key_file, [one])
    second = nodes("two")
    second.prepare()
    newer = Fernet.generate_key()
    write_key_file(first.settings.key_file, [newer, one])
    assert first.store.missing_keys() == []
    assert first.store.sealer.seal("v")  # sealed with `newer`, which the database now names
    assert second.store.missing_keys() == [fingerprint(newer)]


def test_a_database_that_predates_the_record_is_adopted(store: Store, nodes: Any) -> None:
    first = nodes("one")
    first.prepare()
    one = first.store.sealer.keys[0]
    callback_secret(first.store, "default")
    with store.engine.begin() as conn:  # as before the record existed: sealed values only
        conn.execute(s.secret_keys.delete())
    # keys that do not open its values are refused, and not recorded
    with pytest.raises(SecretKeyError, match="does not open with the configured secret keys"):
        nodes("two").prepare()
    assert recorded(store) == {}
    # keys that open them are recorded, all of them: which one sealed what is not known
    extra = Fernet.generate_key()
    nodes("three", keys=[extra, one]).prepare()
    assert recorded(store) == {fingerprint(extra): False, fingerprint(one): False}
    with pytest.raises(MissingSecretKeys, match=fingerprint(extra)):
        nodes("four", keys=[one]).prepare()


def test_a_database_without_sealed_values_records_only_the_sealing_key(
    store: Store, nodes: Any
) -> None:
    newest, older = Fernet.generate_key(), Fernet.generate_key()
    first = nodes("one", keys=[newest, older])
    first.prepare()
    assert recorded(store) == {fingerprint(newest): False}
    # restarted once it sealed values, it is no database to adopt
    callback_secret(first.store, "default")
    nodes("one").prepare()
    assert recorded(store) == {fingerprint(newest): False}


def test_rotation_retires_the_old_key_and_a_node_with_only_the_new_one_starts(
    store: Store, nodes: Any
) -> None:
    first = nodes("one")
    first.prepare()
    (old,) = first.store.sealer.keys
    callback_secret(first.store, "default")
    second = nodes("two", keys=[old])
    second.prepare()
    done = rotate_secret_keys(first.settings, pause=0)
    assert done.resealed == 1
    (new,) = read_key_file(first.settings.key_file)
    assert recorded(store) == {fingerprint(old): True, fingerprint(new): False}
    # a node that kept only the old key lacks the new one, running or starting
    assert second.store.missing_keys() == [fingerprint(new)]
    with pytest.raises(MissingSecretKeys, match=fingerprint(new)):
        nodes("two").prepare()
    # given only the new key, it starts: the old one is retired
    nodes("two", keys=[new]).prepare()
    # a node that still seals with the retired key is told to put the new key first
    with pytest.raises(MissingSecretKeys, match="which a rotation retired; put the newest"):
        nodes("three", keys=[old, new]).prepare()


def test_rotation_with_keys_from_the_environment_retires_the_others(
    store: Store, nodes: Any
) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    first = nodes("one", secret_keys=old.decode())
    first.prepare()
    callback_secret(first.store, "default")
    both = first.settings.with_(secret_keys=f"{new.decode()},{old.decode()}")
    nodes("one", secret_keys=both.secret_keys).prepare()
    assert recorded(store) == {fingerprint(old): False, fingerprint(new): False}
    done = rotate_secret_keys(both, pause=0)
    assert (done.resealed, done.key_file) == (1, None)
    assert recorded(store) == {fingerprint(old): True, fingerprint(new): False}
    nodes("two", secret_keys=new.decode()).prepare()


def test_the_cli_prints_the_fingerprints_of_held_and_recorded_keys(tmp_path: Path) -> None:
    runner = CliRunner(env={"EXECFLOW_SECRET_KEYS": None, "EXECFLOW_DATABASE_URL": None})
    settings = Settings(data_dir=tmp_path / "one", sqlite_synchronous="OFF", node_id="one")
    runtime = Runtime.build(settings)
    runtime.prepare()
    (old,) = runtime.store.sealer.keys
    runtime.store.close()
    new, mine = Fernet.generate_key(), Fernet.generate_key()
    keys = f"{new.decode()},{old.decode()}"
    later = Runtime.build(settings.with_(secret_keys=keys))
    later.prepare()
    later.store.close()
    write_key_file(settings.key_file, [mine, old])
    result = runner.invoke(main, ["--data-dir", str(settings.data_dir), "secrets", "fingerprints"])
    assert result.exit_code == 0, result.output
    lines = [line.split("  ")[:2] for line in result.output.splitlines()]
    assert [(name, here.strip()) for name, here in lines] == [
        (fingerprint(mine), "seals"),
        (fingerprint(old), "held"),
        (fingerprint(new), "missing"),
    ]
    assert "not recorded" in result.output.splitlines()[0]
    assert "recorded 20" in result.output.splitlines()[2]
