"""The published Python vRO clients, unmodified, against a live server: `vmwvro` (which
speaks HTTPS only, so it goes through a TLS front, as vRO is served) and `vmwvro2`.

Neither client cancels nor retries a run; those calls are plain REST, in test_dialect_vro.py.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import vmwvro
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from vmwvro.workflows import WorkflowParameters
from vmwvro2.sessions import Session as Session2
from vmwvro2.settings import ConfigVMWvro
from vmwvro2.workflow import Workflow as Workflow2
from vmwvro2.workflow import WorkflowRun as WorkflowRun2

from tests.test_attacks_live import Live
from tests.test_dialect_vro import FAILS

pytestmark = pytest.mark.slow

GREET: dict[str, Any] = {
    "name": "greet",
    "description": "Say hello",
    "parameters": {
        "who": {"type": "string", "default": "world", "description": "whom to greet"},
        "times": {"type": "integer", "default": 1},
        "tags": {"type": "array", "default": []},
    },
    "tasks": {
        "hello": {
            "action": "echo",
            "with": {
                "text": "hello ${{ params.who }} x${{ params.times }}",
                "tags": "${{ params.tags }}",
            },
        }
    },
    "outputs": {
        "text": "${{ tasks.hello.output.text }}",
        "times": "${{ params.times }}",
        "tags": "${{ tasks.hello.output.tags }}",
    },
}


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its file and its key's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


# hop-by-hop headers, and those the front writes itself
_SKIP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


class TlsFront:
    """HTTPS in front of a live server, as a deployment puts a TLS proxy before execflow:
    each request is passed on over HTTP with `X-Forwarded-Proto: https` and its own `Host`,
    so the links the server writes (`Location`, `href`) are this front's https URLs."""

    def __init__(self, backend: str, folder: Path) -> None:
        upstream = httpx.Client(base_url=backend, timeout=30)
        self.upstream = upstream

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIP}
                headers["X-Forwarded-Proto"] = "https"
                r = upstream.request(self.command, self.path, content=body, headers=headers)
                self.send_response(r.status_code)
                for name, value in r.headers.multi_items():
                    if name.lower() not in _SKIP | {"content-encoding"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the server behind keeps the access log

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate(folder))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        self.upstream.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server for both clients (each starts runs of its own)."""
    server = Live(tmp_path_factory.mktemp("vro") / "data")
    try:
        for definition in (GREET, FAILS):
            r = server.client.put(f"/api/v1/workflows/{definition['name']}", json=definition)
            assert r.status_code == 201, r.text
        yield server
    finally:
        server.stop()


def access_key(live: Live) -> tuple[str, str]:
    """An operator's access key: vRO's clients send it as HTTP Basic user and password."""
    r = live.client.post(
        "/api/v1/projects/default/access-keys", json={"role": "operator", "description": "vro"}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["secret"]


def workflow_id(live: Live, name: str) -> str:
    r = live.client.get(f"/vco/api/workflows/{name}")
    assert r.status_code == 200, r.text
    ident: str = r.json()["id"]
    return ident


def test_vmwvro_gets_a_workflow_starts_it_and_waits_for_its_end(live: Live, tmp_path: Path) -> None:
    front = TlsFront(live.url, tmp_path)
    try:
        user, password = access_key(live)
        client = vmwvro.Client(vmwvro.Session(url=front.url, username=user, password=password))
        wf = client.get_workflow(workflow_id(live, "greet"))
        assert (wf.name, wf.description, wf.version) == ("greet", "Say hello", "1.0.0")
        described = {p.name: (p.type, p.description) for p in wf.input_parameters}
        assert described == {
            "who": ("string", "whom to greet"),
            "times": ("number", ""),
            "tags": ("Array/Any", ""),
        }
        params = WorkflowParameters()
        params.add("who", "ada")
        params.add("times", 3, _type="number")  # sent as text: {"number": {"value": "3"}}
        run = wf.start(params)
        assert run.href.startswith(f"{front.url}/vco/api/workflows/{wf.id}/executions/")
        run.wait_until_complete(timeout=30, poll=1)
        assert run.state == "completed"
        assert run.name == "greet" and run.started_by == user
        assert run.end_date >= run.start_date
        done = httpx.get(run.href, auth=(user, password), verify=False).json()
        outputs = {p["name"]: p["value"] for p in done["output-parameters"]}
        assert outputs["text"] == {"string": {"value": "hello ada x3"}}
        # a failed run ends the wait too
        failing = client.get_workflow(workflow_id(live, "fails")).start()
        failing.wait_until_complete(timeout=30, poll=1)
        assert failing.state == "failed"
    finally:
        front.stop()


def test_vmwvro2_runs_a_workflow_and_reads_its_outputs(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the client's configuration is a class attribute it otherwise reads from /etc/vmwvro2
    monkeypatch.setattr(ConfigVMWvro, "config", {"vro-links": {"redirect": False}})
    user, password = access_key(live)
    session = Session2(url=live.url, username=user, password=password, alias="execflow")
    written: list[Path] = []
    try:
        wf = Workflow2(id=workflow_id(live, "greet"), name="greet")
        wf.param(name="who", value="grace")
        wf.param(name="times", value=2, _type="number")
        wf.param(name="tags", value=["a", "b"], _type="Array/string")
        run = WorkflowRun2(wf, session)
        assert run.run() == 0, run.exception
        # the client saves each answer under /tmp, by the run's id
        written.append(Path("/tmp") / run.href.rstrip("/").rsplit("/", 1)[1])
        run.wait()
        assert (run.state, run.exception) == ("completed", None)
        assert run.out("text") == "hello grace x2"
        assert run.out("times") == 2 and run.out("tags") == ["a", "b"]
        assert run.input_parameters["who"].value == "grace"

        failing = WorkflowRun2(Workflow2(id=workflow_id(live, "fails"), name="fails"), session)
        assert failing.run() == 0, failing.exception
        written.append(Path("/tmp") / failing.href.rstrip("/").rsplit("/", 1)[1])
        failing.wait()
        assert failing.state == "failed" and "disk full" in failing.exception
    finally:
        for path in written:
            if path.exists():
                os.remove(path)
