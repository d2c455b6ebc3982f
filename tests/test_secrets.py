"""Secret parameter values at rest: sealed in the database, opened only for the task."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from execflow.masking import redact
from execflow.runtime import Runtime, rotate_secret_keys
from execflow.sealing import (
    SECRET_MASK,
    Sealed,
    Sealer,
    SecretKeyError,
    read_key_file,
    write_key_file,
)
from execflow.settings import Settings
from execflow.store import schema
from tests.test_api import Api, api  # noqa: F401

CARELESS = {
    "name": "careless",
    "parameters": {
        "password": {"type": "string", "secret": True},
        "pin": {"type": "integer", "secret": True},
        "user": {"type": "string"},
    },
    "tasks": {
        "use": {
            "action": "python",
            "with": {
                "function": "tests.fixtures.tasks:reveal",
                "args": {"value": "${{ params.password }}"},
            },
        },
        "echo": {
            "action": "echo",
            "needs": ["use"],
            "with": {"again": "${{ tasks.use.output.echo }}", "pin": "${{ params.pin }}"},
        },
    },
    "outputs": {
        "password": "${{ params.password }}",
        "sha256": "${{ tasks.use.output.sha256 }}",
        "pin": "${{ params.pin }}",
    },
}


# the sealer ---------------------------------------------------------------------------------


def test_a_sealed_value_reads_as_the_mask_and_opens_to_the_value() -> None:
    sealer = Sealer.ephemeral()
    for value in ["hunter2", 4242, {"k": ["v"]}, ""]:
        sealed = sealer.seal(value)
        assert sealed == SECRET_MASK and str(sealed) == SECRET_MASK
        assert json.dumps({"x": sealed}) == '{"x": "******"}'
        assert repr(sealed) == "Sealed('******')" and "hunter2" not in f"{sealed!r}{sealed}"
        assert "hunter2" not in sealed.token
        assert sealer.open(sealed) == value
    # the same value seals differently each time (random IV): nothing to compare tokens by
    assert sealer.seal("x").token != sealer.seal("x").token


def test_a_value_sealed_with_another_key_does_not_open() -> None:
    sealed = Sealer.ephemeral().seal("hunter2")
    with pytest.raises(SecretKeyError, match="does not open with the configured secret keys"):
        Sealer.ephemeral().open(sealed)


def test_a_tampered_token_does_not_open() -> None:
    sealer = Sealer.ephemeral()
    token = sealer.seal("hunter2").token
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    with pytest.raises(SecretKeyError):
        sealer.open(Sealed(flipped))


def test_the_key_file_is_made_private_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secret-keys"
    sealer = Sealer.from_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == sealer.keys and len(sealer.keys) == 1
    # the same file gives the same key next time
    assert Sealer.from_file(path).open(sealer.seal("v")) == "v"


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret-keys"
    Sealer.from_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(SecretKeyError, match=r"others may read this key file \(mode 0644\)"):
        Sealer.from_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "EXECFLOW_SECRET_KEYS: no key"),
        ("not-a-key", "EXECFLOW_SECRET_KEYS: not-… is not a key"),
        (f"{Fernet.generate_key().decode()},short", "EXECFLOW_SECRET_KEYS: shor… is not a key"),
    ],
)
def test_keys_that_are_not_keys_are_named(text: str, message: str) -> None:
    with pytest.raises(SecretKeyError, match=message):
        Sealer.from_keys(text)


def test_older_keys_open_and_the_first_seals() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed_before = Sealer([old]).seal("v")
    both = Sealer([new, old])
    assert both.open(sealed_before) == "v"
    assert not both.opens_with_newest(sealed_before.token)
    assert both.opens_with_newest(both.seal("v").token)
    assert Sealer([new]).open(Sealed(both.reseal(sealed_before.token))) == "v"


def test_a_sealer_on_a_key_file_sees_keys_added_to_it(tmp_path: Path) -> None:
    path = tmp_path / "secret-keys"
    running = Sealer.from_file(path)
    new = Fernet.generate_key()
    write_key_file(path, [new, *running.keys])
    # a value sealed by another process with the new key opens at once (reloaded on demand)
    assert running.open(Sealer([new]).seal("v")) == "v"
    assert running.keys[0] == new


# at rest ------------------------------------------------------------------------------------


def database_text(runtime: Runtime) -> str:
    """Every column of every row of every table, as text."""
    parts = []
    with runtime.store.engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


async def start_careless(api: Api, password: str, pin: int) -> str:
    r = await api.client.put("/api/v1/workflows/careless", json=CARELESS, headers=api.auth())
    assert r.status_code in (200, 201), r.text
    r = await api.client.post(
        "/api/v1/workflows/careless/executions",
        json={"inputs": {"password": password, "pin": pin, "user": "ada"}},
        headers=api.auth(),
    )
    assert r.status_code == 202, r.text
    execution_id: str = r.json()["id"]
    return execution_id


async def test_secret_inputs_are_sealed_in_the_database_and_opened_for_the_task(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password, pin = "pw-" + secrets.token_hex(12), 7_000_000 + secrets.randbelow(10**6)
    execution_id = await start_careless(api, password, pin)
    await api.idle()
    detail = (await api.client.get(f"/api/v1/executions/{execution_id}", headers=api.auth())).json()
    assert detail["state"] == "COMPLETED", detail
    # the task had the value itself: its digest could only come from it
    assert detail["outputs"]["sha256"] == hashlib.sha256(password.encode()).hexdigest()
    # and whatever it echoed of it is masked, in outputs and in what later tasks got
    assert detail["outputs"]["password"] == SECRET_MASK
    assert detail["outputs"]["pin"] == SECRET_MASK
    assert detail["inputs"] == {"password": SECRET_MASK, "pin": SECRET_MASK, "user": "ada"}
    echo = next(t for t in detail["tasks"] if t["task"] == "echo")
    assert echo["output"] == {"again": SECRET_MASK, "pin": SECRET_MASK}
    # at rest: nowhere in the database, the audit log (its printed and logged lines) included
    stored = database_text(api.runtime)
    assert password not in stored and str(pin) not in stored
    assert "the value is ******" in stored and "logging ******" in stored
    # the store hands out the sealed value, not the plaintext
    record = api.runtime.store.get_execution(execution_id)
    assert isinstance(record.inputs["password"], Sealed)
    assert api.runtime.store.sealer.open(record.inputs["password"]) == password
    assert record.inputs["user"] == "ada"
    # nor in execflow's own logs
    assert password not in caplog.text and str(pin) not in caplog.text
    # the SQLite files themselves never held it
    for name in ("execflow.db", "execflow.db-wal"):
        path = api.runtime.settings.data_dir / name
        if path.exists():
            assert password.encode() not in path.read_bytes()


FAILS = {
    "name": "fails",
    "parameters": {"token": {"type": "string", "secret": True}},
    "tasks": {
        "boom": {
            "action": "python",
            "with": {
                "function": "tests.fixtures.tasks:boom",
                "args": {"message": "bad token ${{ params.token }}"},
            },
        }
    },
}


async def test_a_failing_task_that_names_the_secret_has_it_masked(api: Api) -> None:
    token = "tk-" + secrets.token_hex(12)
    r = await api.client.put("/api/v1/workflows/fails", json=FAILS, headers=api.auth())
    assert r.status_code == 201, r.text
    r = await api.client.post(
        "/api/v1/workflows/fails/executions", json={"inputs": {"token": token}}, headers=api.auth()
    )
    await api.idle()
    detail = await api.client.get(f"/api/v1/executions/{r.json()['id']}", headers=api.auth())
    assert detail.json()["state"] == "FAILED"
    assert "bad token ******" in detail.json()["error"]["message"]
    events = await api.client.get(f"/api/v1/executions/{r.json()['id']}/events", headers=api.auth())
    assert "bad token ******" in events.text
    assert token not in detail.text + events.text
    assert token not in database_text(api.runtime)


async def test_a_rerun_and_a_retry_hand_the_task_the_sealed_value_again(api: Api) -> None:
    password = "pw-" + secrets.token_hex(12)
    execution_id = await start_careless(api, password, 1234567)
    await api.idle()
    r = await api.client.post(
        f"/api/v1/executions/{execution_id}/rerun", json={"from_task": "use"}, headers=api.auth()
    )
    assert r.status_code == 202, r.text
    await api.idle()
    again = (
        await api.client.get(f"/api/v1/executions/{r.json()['id']}", headers=api.auth())
    ).json()
    assert again["state"] == "COMPLETED"
    assert again["outputs"]["sha256"] == hashlib.sha256(password.encode()).hexdigest()
    # overriding a secret on a rerun seals the new value (a rerun that changes inputs is
    # given every secret again)
    other = "pw-" + secrets.token_hex(12)
    r = await api.client.post(
        f"/api/v1/executions/{execution_id}/rerun",
        json={"from_task": "use", "inputs": {"password": other, "pin": 7654321}},
        headers=api.auth(),
    )
    assert r.status_code == 202, r.text
    await api.idle()
    third = (
        await api.client.get(f"/api/v1/executions/{r.json()['id']}", headers=api.auth())
    ).json()
    assert third["outputs"]["sha256"] == hashlib.sha256(other.encode()).hexdigest()
    stored = database_text(api.runtime)
    assert password not in stored and other not in stored


async def test_a_secret_handed_to_a_child_is_sealed_in_the_child(api: Api) -> None:
    child = {
        "name": "child",
        "parameters": {"plain": {"type": "string"}},
        "tasks": {
            "use": {
                "action": "python",
                "with": {
                    "function": "tests.fixtures.tasks:reveal",
                    "args": {"value": "${{ params.plain }}"},
                },
            }
        },
        "outputs": {"sha256": "${{ tasks.use.output.sha256 }}"},
    }
    parent = {
        "name": "parent",
        "parameters": {"password": {"type": "string", "secret": True}},
        "tasks": {
            "call": {
                "action": "workflow",
                "with": {"workflow": "child", "inputs": {"plain": "${{ params.password }}"}},
            }
        },
        "outputs": {"sha256": "${{ tasks.call.output.sha256 }}"},
    }
    for wf in (child, parent):
        r = await api.client.put(f"/api/v1/workflows/{wf['name']}", json=wf, headers=api.auth())
        assert r.status_code == 201, r.text
    password = "pw-" + secrets.token_hex(12)
    r = await api.client.post(
        "/api/v1/workflows/parent/executions",
        json={"inputs": {"password": password}},
        headers=api.auth(),
    )
    await api.idle()
    detail = (
        await api.client.get(f"/api/v1/executions/{r.json()['id']}", headers=api.auth())
    ).json()
    assert detail["state"] == "COMPLETED", detail
    assert detail["outputs"]["sha256"] == hashlib.sha256(password.encode()).hexdigest()
    children = await api.client.get(
        "/api/v1/executions", params={"workflow": "child"}, headers=api.auth()
    )
    (kid,) = children.json()["items"]
    shown = await api.client.get(f"/api/v1/executions/{kid['id']}", headers=api.auth())
    assert shown.json()["inputs"] == {"plain": SECRET_MASK}
    assert password not in children.text + shown.text
    assert password not in database_text(api.runtime)


async def test_the_same_request_again_is_found_and_another_secret_is_a_conflict(
    api: Api,
) -> None:
    await api.client.put("/api/v1/workflows/careless", json=CARELESS, headers=api.auth())
    inputs = {"password": "pw-1", "pin": 1, "user": "ada"}
    for header, body in [
        ({"Idempotency-Key": "k-1"}, {}),
        ({}, {"name": "nightly"}),
    ]:
        first = await api.client.post(
            "/api/v1/workflows/careless/executions",
            json={"inputs": inputs, **body},
            headers={**api.auth(), **header},
        )
        assert first.status_code == 202, first.text
        same = await api.client.post(
            "/api/v1/workflows/careless/executions",
            json={"inputs": inputs, **body},
            headers={**api.auth(), **header},
        )
        assert (same.status_code, same.json()["id"]) == (200, first.json()["id"])
        other = await api.client.post(
            "/api/v1/workflows/careless/executions",
            json={"inputs": {**inputs, "password": "pw-2"}, **body},
            headers={**api.auth(), **header},
        )
        assert other.status_code == 409, other.text
        assert other.json()["error"]["details"] == [
            {"pointer": "/inputs/password", "reason": "differs from the existing execution's"}
        ]
        assert "pw-" not in other.text
    # the stored request digest is computed without the secret values
    with api.runtime.store.engine.connect() as conn:
        digest = conn.execute(sa.select(schema.idempotency_keys.c.request_digest)).scalar_one()
    assert len(digest) == 64


# keys across restarts, rotation -------------------------------------------------------------


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(
        data_dir=tmp_path, sqlite_synchronous="OFF", node_id="n", shutdown_grace=0, **changes
    )


async def run_careless(runtime: Runtime, password: str) -> str:
    await runtime.start(loop=False)
    try:
        admin = await runtime.service.authenticate(
            runtime.settings.admin_token_file.read_text().strip()
        )
        await runtime.service.put_workflow(admin, "careless", CARELESS)
        record = await runtime.service.start(
            admin, "careless", {"password": password, "pin": 5, "user": "u"}
        )
        await runtime.engine.run_until_idle()
        done = runtime.store.get_execution(record.id)
        assert done.outputs is not None, (done.state, done.error, done.task_runs)
        assert done.outputs["sha256"] == hashlib.sha256(password.encode()).hexdigest()
        return record.id
    finally:
        await runtime.stop()


async def test_a_wrong_key_is_refused_at_start_and_the_right_one_opens(tmp_path: Path) -> None:
    runtime = Runtime.build(settings_for(tmp_path))
    runtime.prepare()
    execution_id = await run_careless(runtime, "pw-abc")
    key_file = tmp_path / "secret-keys"
    right = key_file.read_text()
    write_key_file(key_file, [Fernet.generate_key()])
    with pytest.raises(SecretKeyError, match="this node lacks secret keys that seal values"):
        Runtime.build(settings_for(tmp_path)).prepare()
    key_file.write_text(right)
    again = Runtime.build(settings_for(tmp_path))
    again.prepare()
    record = again.store.get_execution(execution_id)
    assert again.store.sealer.open(record.inputs["password"]) == "pw-abc"
    again.store.close()


async def test_keys_from_the_environment_are_used_instead_of_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("EXECFLOW_SECRET_KEYS", f" {key} , {Fernet.generate_key().decode()}")
    settings = Settings.from_env(data_dir=tmp_path, sqlite_synchronous="OFF", node_id="n")
    assert key not in repr(settings)  # keys are not printed with the settings
    runtime = Runtime.build(settings)
    runtime.prepare()
    execution_id = await run_careless(runtime, "pw-env")
    assert not (tmp_path / "secret-keys").exists()
    record = Runtime.build(settings).store.get_execution(execution_id)
    assert Sealer.from_keys(key).open(record.inputs["password"]) == "pw-env"


async def test_rotation_seals_everything_with_a_new_key_and_retires_the_old(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    runtime = Runtime.build(settings)
    runtime.prepare()
    execution_id = await run_careless(runtime, "pw-rot")
    old = read_key_file(settings.key_file)
    done = rotate_secret_keys(settings, pause=0)
    assert (done.resealed, done.retired) == (2, 1)  # password and pin
    new = read_key_file(settings.key_file)
    assert len(new) == 1 and new != old
    assert stat.S_IMODE(settings.key_file.stat().st_mode) == 0o600
    after = Runtime.build(settings)
    after.prepare()
    record = after.store.get_execution(execution_id)
    assert Sealer(new).open(record.inputs["password"]) == "pw-rot"
    with pytest.raises(SecretKeyError):
        Sealer(old).open(record.inputs["password"])
    # and it still runs: a rerun hands the task the value sealed with the new key
    await after.start(loop=False)
    try:
        admin = await after.service.authenticate(settings.admin_token_file.read_text().strip())
        rerun = await after.service.rerun(admin, execution_id, "use")
        await after.engine.run_until_idle()
        outputs = after.store.get_execution(rerun.id).outputs or {}
        assert outputs["sha256"] == hashlib.sha256(b"pw-rot").hexdigest()
    finally:
        await after.stop()


async def test_rotation_seals_inputs_stored_before_sealing_existed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    runtime = Runtime.build(settings)
    runtime.prepare()
    execution_id = await run_careless(runtime, "pw-legacy")
    # as an older execflow stored it: the plain value, no sealed names
    e = schema.executions
    with runtime.store.engine.begin() as conn:
        conn.execute(
            e.update()
            .where(e.c.id == execution_id)
            .values(inputs={"password": "pw-legacy", "pin": 5, "user": "u"}, sealed_inputs=None)
        )
    shown = runtime.store.get_execution(execution_id)
    assert shown.inputs["password"] == "pw-legacy"  # plain, but still masked by its parameter
    runtime.store.close()
    done = rotate_secret_keys(settings, pause=0)
    assert done.resealed == 2
    store = Runtime.build(settings).store
    record = store.get_execution(execution_id)
    assert isinstance(record.inputs["password"], Sealed)
    assert store.sealer.open(record.inputs["pin"]) == 5
    with store.engine.connect() as conn:
        raw = conn.execute(sa.select(e.c.inputs).where(e.c.id == execution_id)).scalar_one()
    assert "pw-legacy" not in json.dumps(raw)


def test_the_cli_rotates_and_makes_keys(tmp_path: Path) -> None:
    env = {**os.environ, "EXECFLOW_DATA_DIR": str(tmp_path)}
    env.pop("EXECFLOW_SECRET_KEYS", None)
    made = subprocess.run(
        [sys.executable, "-m", "execflow.cli", "secrets", "new-key"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    Fernet(made.stdout.strip())
    rotated = subprocess.run(
        [sys.executable, "-m", "execflow.cli", "secrets", "rotate"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.startswith(f"sealed 0 values with a new key in {tmp_path}/secret-keys")
    bad = subprocess.run(
        [sys.executable, "-m", "execflow.cli", "secrets", "rotate"],
        capture_output=True,
        text=True,
        env={**env, "EXECFLOW_SECRET_KEYS": "nope"},
    )
    assert bad.returncode == 1
    assert "EXECFLOW_SECRET_KEYS: nope… is not a key" in bad.stderr


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("token pw-long-1 here", "token ****** here"),
        ({"pw-long-1": ["x pw-long-1"]}, {"******": ["x ******"]}),
        ("sha256", "sha256"),  # a short secret is not masked inside other text...
        ("5", "******"),  # ...only where it is the whole value
        (5, "******"),
        (55, 55),
        (True, True),
        (None, None),
    ],
)
def test_what_the_engine_masks(value: Any, masked: Any) -> None:
    assert redact(value, ["pw-long-1", "5"]) == masked
