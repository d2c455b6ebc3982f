"""The console in a real headless Chromium (Debian's `chromium`, driven by Playwright) against
a real `execflow serve --examples`: sign in, start `purchase-order` from its form, follow it
live to its approval, approve it from the generated form, cancel and retry another; a viewer
sees no buttons and is refused; a script in a description or a task output stays text; no
page breaks its Content-Security-Policy. The screenshots go to docs/screenshots/."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_console_forms import CHECKED
from tests.test_server import REPO_ROOT, Server, free_port, start_server

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO_ROOT / "docs" / "screenshots"
XSS = "<script>alert(1)</script>"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 30_000

if not CHROMIUM.exists() and shutil.which("chromium") is None:
    pytest.skip("no chromium: apt-get install chromium (Debian's package)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="no playwright: pip install -e '.[dev]'"
)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    live = start_server(tmp_path_factory.mktemp("console"), free_port(), "--examples")
    try:
        yield live
    finally:
        live.stop()


class Tab:
    """One browser page, with what must never happen on it recorded: a dialog (a script
    that ran), an error in the console (a refused inline script or style)."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.set_default_timeout(WAIT_MS)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def go(self, path: str) -> None:
        self.page.goto(self.base + path)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def sign_in(self, token: str) -> None:
        self.go("/")
        assert "/console/login" in self.page.url
        self.page.fill("input[name=token]", token)
        self.page.click("#login button[type=submit]")
        self.page.wait_for_url(re.compile(r".*/console/executions$"))

    def state(self, state: str) -> None:
        """Wait until the page shows the execution in `state` (live: no reload)."""
        self.page.wait_for_selector(f"#live h1 .state.s-{state}")

    def clean(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=ARGS,
        )
        try:
            yield launched
        finally:
            launched.close()


def tab(browser: Any, server: Server) -> Tab:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    return Tab(context.new_page(), f"http://127.0.0.1:{server.port}")


def execution_id_of(t: Tab) -> str:
    found = re.search(r"/console/executions/([0-9a-f]+)$", t.page.url)
    assert found, t.page.url
    return found.group(1)


def test_purchase_order_from_start_form_to_approval_live(browser: Any, server: Server) -> None:
    admin_token = (server.data_dir / "admin-token").read_text().strip()
    t = tab(browser, server)
    t.go("/console/login")
    t.shot("login")
    t.sign_in(admin_token)

    t.go("/console/workflows/purchase-order")
    t.page.fill("input[name='in.order_id']", "PO-7")
    t.page.fill("textarea[name='in.lines']", '[{"sku": "A-1", "quantity": 2}]')
    t.shot("workflow")
    t.page.click("#start button[type=submit]")
    t.page.wait_for_url(re.compile(r".*/console/executions/[0-9a-f]+$"))
    # the page follows the execution live (SSE): its approval task waits on the graph
    t.state("WAITING_ON_SIGNAL")
    t.page.wait_for_selector(".dag g.node[data-task=approve][data-state=RUNNING]")
    t.page.wait_for_selector(".dag g.node[data-task=price][data-state=COMPLETED]")
    t.shot("execution")

    t.page.fill("form.signal input[name='in.by']", "ada")
    t.page.click("form.signal button[value=true]")  # one click approves
    t.state("COMPLETED")
    t.page.wait_for_selector(".dag g.node[data-task=summary][data-state=COMPLETED]")
    outputs = t.page.inner_text("#outputs")
    assert '"approved": true' in outputs and '"approved_by": "ada"' in outputs, outputs
    t.page.wait_for_selector("#log tr >> text=COMPLETED")
    t.go("/console/executions")
    t.page.wait_for_selector("#executions >> text=COMPLETED")
    t.shot("executions")
    t.clean()


def test_cancel_and_retry_another(browser: Any, server: Server) -> None:
    admin_token = (server.data_dir / "admin-token").read_text().strip()
    r = server.client.post(
        "/api/v1/workflows/purchase-order/executions",
        json={"inputs": {"order_id": "PO-8", "lines": [{"sku": "B-2", "quantity": 1}]}},
    )
    assert r.status_code == 202, r.text
    t = tab(browser, server)
    t.sign_in(admin_token)
    t.go(f"/console/executions/{r.json()['id']}")
    t.state("WAITING_ON_SIGNAL")
    t.page.click("#actions button[value=graceful]")
    t.state("CANCELED")
    t.page.click("#actions >> text=Retry")
    t.state("WAITING_ON_SIGNAL")  # the cancelled approval waits again; pricing is kept
    t.clean()


def test_a_viewer_sees_no_buttons_and_is_refused(browser: Any, server: Server) -> None:
    admin_token = (server.data_dir / "admin-token").read_text().strip()
    r = server.client.post(
        "/api/v1/workflows/purchase-order/executions",
        json={"inputs": {"order_id": "PO-9", "lines": [{"sku": "C-3", "quantity": 3}]}},
    )
    execution = r.json()["id"]
    admin = tab(browser, server)
    admin.sign_in(admin_token)
    admin.go("/console/admin")
    admin.shot("admin")
    admin.go("/console/admin/projects/default")
    admin.page.locator("form select[name=role]").first.select_option("viewer")
    admin.page.click("form >> text=Create token")
    viewer_token = admin.page.inner_text("#new-secret").strip()
    assert viewer_token.startswith("ef_")
    admin.clean()

    t = tab(browser, server)
    t.sign_in(viewer_token)
    t.go(f"/console/executions/{execution}")
    t.state("WAITING_ON_SIGNAL")
    assert t.page.locator("#actions").count() == 0
    assert t.page.locator("form.signal").count() == 0
    csrf = t.page.get_attribute("header form input[name=_csrf]", "value")
    answer = t.page.request.post(
        f"{t.base}/console/executions/{execution}/cancel",
        form={"_csrf": csrf or "", "mode": "force"},
        max_redirects=0,
    )
    assert answer.status == 403
    assert server.client.get(f"/api/v1/executions/{execution}").json()["state"] == (
        "WAITING_ON_SIGNAL"
    )
    t.clean()


def test_a_script_in_a_description_and_a_task_output_stays_text(
    browser: Any, server: Server
) -> None:
    definition = {
        "name": "xss",
        "description": XSS,
        "tasks": {"say": {"action": "echo", "with": {"text": XSS}}},
        "outputs": {"text": "${{ tasks.say.output.text }}"},
    }
    assert server.client.put("/api/v1/workflows/xss", json=definition).status_code == 201
    r = server.client.post("/api/v1/workflows/xss/executions", json={"inputs": {}})
    t = tab(browser, server)
    t.sign_in((server.data_dir / "admin-token").read_text().strip())
    t.go("/console/workflows/xss")
    assert t.page.inner_text(".description").strip() == XSS
    t.go(f"/console/executions/{r.json()['id']}")
    t.state("COMPLETED")
    assert XSS in t.page.inner_text("#outputs")
    t.go("/console/workflows")
    t.clean()


def test_a_live_refresh_keeps_a_signal_form_being_filled_in(browser: Any, server: Server) -> None:
    definition = {
        "name": "ask-while-ticking",
        "tasks": {
            "ask": {
                "action": "signal",
                "with": {
                    "name": "go",
                    "schema": {
                        "type": "object",
                        "required": ["approved"],
                        "properties": {"approved": {"type": "boolean"}, "note": {"type": "string"}},
                    },
                },
            },
            "tick": {"action": "sleep", "with": {"duration": "4s"}},
        },
        "outputs": {"note": "${{ tasks.ask.output.note }}"},
    }
    assert server.client.put("/api/v1/workflows/ask-while-ticking", json=definition).is_success
    r = server.client.post("/api/v1/workflows/ask-while-ticking/executions", json={"inputs": {}})
    t = tab(browser, server)
    t.sign_in((server.data_dir / "admin-token").read_text().strip())
    t.go(f"/console/executions/{r.json()['id']}")
    note = "form.signal input[name='in.note']"
    t.page.fill(note, "half typed")
    # typed while `tick` still sleeps: its end, an event of the stream, comes after
    assert t.page.locator(".dag g.node[data-task=tick][data-state=COMPLETED]").count() == 0
    t.page.wait_for_selector(".dag g.node[data-task=tick][data-state=COMPLETED]")
    assert t.page.input_value(note) == "half typed"
    assert t.page.evaluate("document.activeElement.name") == "in.note"
    t.page.keyboard.type(", and done")
    t.page.click("form.signal button[value=true]")
    t.state("COMPLETED")
    assert '"note": "half typed, and done"' in t.page.inner_text("#outputs")
    t.clean()


def test_a_signal_form_is_checked_in_the_page_and_again_by_the_server(
    browser: Any, server: Server
) -> None:
    assert server.client.put("/api/v1/workflows/checked", json=CHECKED).is_success
    r = server.client.post("/api/v1/workflows/checked/executions", json={"inputs": {}})
    t = tab(browser, server)
    t.sign_in((server.data_dir / "admin-token").read_text().strip())
    t.go(f"/console/executions/{r.json()['id']}")
    t.page.fill("form.signal input[name='in.amount']", "0")
    t.page.fill("form.signal input[name='in.code']", "x1")
    t.page.click("form.signal button.primary")
    # the browser refuses to send it: the same page, the fields marked invalid
    assert t.page.locator("form.signal input[name='in.amount']:invalid").count() == 1
    assert t.page.locator("form.signal input[name='in.code']:invalid").count() == 1
    assert t.page.url.endswith(r.json()["id"])
    # sent anyway (the page's check switched off): the server says why, field by field
    t.page.evaluate("document.querySelector('form.signal').noValidate = true")
    t.page.click("form.signal button.primary")
    t.page.wait_for_selector("label.invalid[data-field=amount] .field-error")
    assert "less than the minimum of 1" in t.page.inner_text("label[data-field=amount]")
    assert "does not match" in t.page.inner_text("label[data-field=code]")
    assert t.page.input_value("form.signal input[name='in.code']") == "x1"
    t.shot("signal-refused")
    t.errors = [e for e in t.errors if "status of 422" not in e]  # the refusal itself
    t.clean()
