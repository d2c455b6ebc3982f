"""Attacks on the HTTP layer of a running server: heads too large to parse are refused with
431 before anyone logs in, without the server's memory following them; the access log
logs requests but never a credential."""

# The `servers` fixture is imported from test_server: arguments named so "redefine" it.
# ruff: noqa: F811

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from execflow import __version__
from execflow.serving import MAX_HEAD_BYTES, MAX_HEADERS, redact_path
from tests.test_server import Server, free_port, poll, servers, start_server  # noqa: F401

pytestmark = pytest.mark.slow


def _rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _send_head(port: int, filler: int, chunk: int = 64 * 1024) -> bytes:
    """Send a request whose one header holds `filler` bytes, in pieces, and return what
    the server answered (reading stops when it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /api/v1/workflows HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        sent = 0
        try:
            while sent < filler:
                conn.sendall(b"a" * min(chunk, filler - sent))
                sent += chunk
            conn.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent: the point
        answer = b""
        try:
            while data := conn.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
        return answer


@pytest.fixture
def node(tmp_path: Path, servers: list[Server]) -> Server:
    server = start_server(tmp_path / "node", free_port(), "--access-log")
    servers.append(server)
    return server


def test_a_huge_head_is_refused_with_431_before_login_and_memory_stays_flat(
    node: Server,
) -> None:
    before = _rss(node.proc.pid)
    for _ in range(10):
        answer = _send_head(node.port, 40 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"headers_too_large" in answer
    grown = _rss(node.proc.pid) - before
    assert grown < 20 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MiB"
    # the server serves on (the 431 answered before authentication: no token was sent)
    assert node.client.get("/livez").status_code == 200


def test_header_count_and_size_caps(node: Server) -> None:
    headers = {f"x-field-{i}": "1" for i in range(MAX_HEADERS + 1)}
    r = httpx.get(f"http://127.0.0.1:{node.port}/api/v1/workflows", headers=headers)
    assert r.status_code == 431 and r.json()["error"]["id"] == "headers_too_large"
    # just under the caps is served as usual (401: no credentials, but parsed)
    headers = {f"x-field-{i}": "1" for i in range(MAX_HEADERS - 10)}
    r = httpx.get(f"http://127.0.0.1:{node.port}/api/v1/workflows", headers=headers)
    assert r.status_code == 401, r.text
    r = node.client.get("/api/v1/workflows", headers={"x-big": "b" * (MAX_HEAD_BYTES // 2)})
    assert r.status_code == 200, r.text
    # a large body is not a large head
    body = {"name": "big", "description": "d" * 500_000, "tasks": {"a": {"action": "echo"}}}
    r = node.client.put("/api/v1/workflows/big", json=body)
    assert r.status_code != 431, r.text
    # keep-alive: many requests on one connection are each counted on their own
    with httpx.Client(base_url=f"http://127.0.0.1:{node.port}") as client:
        for _ in range(50):
            assert client.get("/livez", headers={"x-pad": "p" * 8000}).status_code == 200


def test_the_access_log_logs_requests_and_never_a_credential(node: Server) -> None:
    secret = "s3cr3t-value-0123456789"
    node.client.get(f"/api/v1/workflows?Signature={secret}&AccessKeyId=EFKEY&limit=5")
    node.client.get(f"/api/v1/executions?access_token={secret}")
    node.client.get("/livez")
    poll("the access log", lambda: "/livez" in node.output(), timeout=5)
    # (the admin token is printed once, at first start, above the access lines)
    log = node.output().split(f"execflow {__version__} on", 1)[-1]
    assert "GET /api/v1/workflows?Signature=" in log and "limit=5" in log
    assert secret not in log
    assert (node.data_dir / "admin-token").read_text().strip() not in log
    assert "Authorization" not in log


def test_redacting_a_path_keeps_what_is_not_a_credential() -> None:
    assert redact_path("/a?x=1&token=abc") == "/a?x=1&token=***"
    assert redact_path("/a") == "/a"
    assert "xyz" not in redact_path("/?Action=Run&Signature=xyz&SignatureNonce=n")
