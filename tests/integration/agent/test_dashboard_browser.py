"""The dashboard in a real browser against real agents: three `sdmesh join` processes on
loopback (isolated test-driver hosts), Playwright driving Debian's chromium headless.

Open one agent's page, see the members, submit a pool from a template through the form, see
it running with its components on hosts, terminate it from the page. Every wait is on the
page's content. A screenshot of the running pool goes to ``$SDMESH_ARTIFACTS_DIR`` (default
``test-artifacts/`` at the repository root).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.testing.api import socket_call

from .test_pools_loopback import PoolMesh, pool_file

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = os.environ.get("SDMESH_CHROMIUM") or shutil.which("chromium")
NAMES = ("d0", "d1", "d2")
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium to drive: apt-get install chromium (or set SDMESH_CHROMIUM)",
    ),
]


def artifacts_dir() -> Path:
    directory = Path(os.environ.get("SDMESH_ARTIFACTS_DIR") or REPO / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[PoolMesh]:
    mesh = PoolMesh(tmp_path)
    try:
        for i, name in enumerate(NAMES):
            mesh.start_host(name, NAMES[0] if i else None, cpus=4, memory_mib=4096)
        mesh.wait(
            lambda: all(
                sorted(s for s in mesh.view(n).values() if s == "alive") == ["alive"] * 3
                for n in NAMES
            ),
            30,
            "the three agents never agreed",
        )
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture
def one_agent(tmp_path: Path) -> Iterator[PoolMesh]:
    mesh = PoolMesh(tmp_path)
    try:
        mesh.start_host("t0", None, cpus=2, memory_mib=2048)
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture
def page() -> Iterator[sync_api.Page]:
    """A fresh headless chromium page; the test fails if the page throws."""
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        except sync_api.Error as error:
            pytest.skip(f"chromium at {CHROMIUM} does not start: {error}")
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            sync_api.expect.set_options(timeout=TIMEOUT_MS)  # expect has its own 5 s default
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            assert errors == [], f"the page threw: {errors}"
        finally:
            browser.close()


def with_token(page: sync_api.Page, token: str) -> None:
    """The page starts with ``token`` stored, as after a user entered it once."""
    page.add_init_script(
        f"if (!sessionStorage.getItem('seeded')) {{ sessionStorage.setItem('seeded', '1'); "
        f"localStorage.setItem('sdmesh.token', {json.dumps(token)}); }}"
    )


def test_submit_watch_and_terminate_a_pool_from_the_dashboard(
    mesh: PoolMesh, page: sync_api.Page
) -> None:
    expect = sync_api.expect
    with_token(page, mesh.token)  # loopback TCP needs a token too (the mesh's admin token)
    page.goto(f"http://127.0.0.1:{mesh.ports['d1'][1]}/")
    assert page.url.endswith("/ui/")

    # The members, as the agent sees them, with their capacity.
    members = page.locator("#members tbody tr")
    expect(members).to_have_count(3)
    for name in NAMES:
        row = page.locator(f'#members tr[data-member="{name}"]')
        expect(row).to_contain_text("alive")
        expect(row).to_contain_text("4 GiB")  # the capacity it advertises
        expect(row.locator("meter")).to_have_attribute("max", "4096")
    expect(page.locator('#members tr[data-member="d1"]')).to_contain_text("this agent")

    # A pool from a template: fill in a few fields, the agent fills up the rest.
    page.select_option("#template-select", "virtual-pool")
    expect(page.locator("#template-description")).to_contain_text("booted all at once")
    page.get_by_label("Pool name").fill("web")
    page.get_by_label("Number of VMs").fill("3")
    page.get_by_label("Memory (MiB)").fill("128")

    # A bad value is refused before anything is created, naming the field.
    page.get_by_label("Virtual CPUs").fill("0")
    page.get_by_role("button", name="Preview placement").click()
    expect(page.locator("#field-vcpus-error")).to_contain_text("at least 1")
    expect(page.locator("#field-vcpus")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Virtual CPUs").fill("")  # back to the default

    # Dry run: where each VM would go; the descriptor stays hidden unless asked for.
    page.get_by_role("button", name="Preview placement").click()
    preview = page.locator("#preview-table tbody tr")
    expect(preview).to_have_count(3)
    planned = {preview.nth(i).locator("td.host").inner_text() for i in range(3)}
    assert planned <= set(NAMES), planned
    expect(page.locator("#descriptor")).not_to_be_visible()
    page.get_by_text("Advanced: show descriptor").click()
    expect(page.locator("#descriptor")).to_contain_text("memory 128;")
    expect(page.locator("#descriptor")).to_contain_text("Qcow2OverlayBackend")
    assert all(mesh.domains(n) == [] for n in NAMES)  # a dry run creates nothing

    page.get_by_role("button", name="Submit pool").click()
    expect(page.locator("#form-status")).to_contain_text("Pool web submitted")

    # Running, every component on a host of the mesh: three VMs on three hosts (spread).
    card = page.locator('article.pool[data-pool="web"]')
    expect(card.locator(".pool-state")).to_have_text("running")
    rows = card.locator("tbody tr")
    expect(rows).to_have_count(6)  # three disks, three VMs
    vm_rows = card.locator('tbody tr:has(td:text-is("VirtualMachine"))')
    expect(vm_rows).to_have_count(3)
    expect(vm_rows.locator(".component-state")).to_have_text(["running"] * 3)
    hosts = [vm_rows.nth(i).locator("td.host").inner_text() for i in range(3)]
    assert sorted(hosts) == sorted(NAMES), hosts
    domains = [vm_rows.nth(i).locator("td.domain").inner_text() for i in range(3)]
    assert all(domains), domains
    assert sorted(d for n in NAMES for d in mesh.domains(n)) == sorted(domains)
    shot = artifacts_dir() / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0

    # Terminate from the page (after the confirmation dialog): gone, or shown terminated.
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Terminate pool web").click()
    page.wait_for_function(
        """() => {
            const card = document.querySelector('article.pool[data-pool="web"]');
            return !card || card.dataset.state === "terminated";
        }""",
        timeout=TIMEOUT_MS,
    )
    mesh.wait(lambda: all(mesh.domains(n) == [] for n in NAMES), 30, "VMs left after terminate")


def test_the_page_asks_for_a_token_keeps_it_and_sends_it(
    one_agent: PoolMesh, page: sync_api.Page
) -> None:
    """The agent answers the page's requests 401 until it has a token (loopback TCP is no
    credential); once given, the token is kept and sent, the stream's in the query."""
    expect = sync_api.expect
    page.goto(f"http://127.0.0.1:{one_agent.ports['t0'][1]}/ui/")
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#members tbody tr")).to_have_count(0)
    expect(page.locator("#new-pool")).to_be_hidden()

    page.get_by_label("Token", exact=True).fill(one_agent.token)
    with page.expect_request(lambda r: "/v1/events" in r.url and "access_token=" in r.url):
        page.get_by_role("button", name="Use token").click()
    expect(page.locator('#members tr[data-member="t0"]')).to_contain_text("alive")
    expect(page.locator("#token-panel")).to_be_hidden()
    expect(page.locator("#template-select option")).not_to_have_count(0)
    expect(page.locator("#whoami")).to_contain_text("token:api-token-file (admin)")
    expect(page.locator("#new-pool")).to_be_visible()
    assert page.evaluate("localStorage.getItem('sdmesh.token')") == one_agent.token

    page.reload()  # remembered: no question this time
    expect(page.locator('#members tr[data-member="t0"]')).to_contain_text("alive")
    expect(page.locator("#token-panel")).to_be_hidden()

    page.evaluate("localStorage.setItem('sdmesh.token', 'wrong')")
    page.reload()  # a refused token: asked again, saying so
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#token-reason")).to_contain_text("refused")


def test_a_read_token_sees_pools_but_is_offered_no_action(
    one_agent: PoolMesh, page: sync_api.Page
) -> None:
    """The page asks /v1/whoami and hides what the role cannot do: a read token gets no
    form and no Terminate button (the agent would refuse them with a 403 anyway)."""
    expect = sync_api.expect
    status, made = socket_call(
        one_agent.root / "t0" / "api.sock", "POST", "/v1/tokens", {"name": "viewer", "role": "read"}
    )
    assert status == 201
    one_agent.cli("t0", "submit", pool_file(one_agent.root, 1, memory=128), "--name", "seen")
    with_token(page, str(made["token"]))
    page.goto(f"http://127.0.0.1:{one_agent.ports['t0'][1]}/")
    expect(page.locator("#whoami")).to_contain_text("token:viewer (read)")
    card = page.locator('article.pool[data-pool="seen"]')
    expect(card).to_be_visible()
    expect(card.get_by_role("button", name="Terminate pool seen")).to_be_hidden()
    expect(page.locator("#new-pool")).to_be_hidden()


def test_without_the_event_stream_the_page_polls(one_agent: PoolMesh, page: sync_api.Page) -> None:
    """The stream down (an old agent, a proxy that buffers): the page says so and still
    follows a pool to running by polling."""
    expect = sync_api.expect
    with_token(page, one_agent.token)
    page.route("**/v1/events*", lambda route: route.abort())
    page.goto(f"http://127.0.0.1:{one_agent.ports['t0'][1]}/")
    expect(page.locator("#connection")).to_contain_text("unavailable")
    expect(page.locator('#members tr[data-member="t0"]')).to_contain_text("alive")
    page.select_option("#template-select", "scheduled-pool")
    page.get_by_label("Pool name").fill("polled")
    page.get_by_label("Number of VMs").fill("2")
    page.get_by_role("button", name="Submit pool").click()
    card = page.locator('article.pool[data-pool="polled"]')
    expect(card.locator(".pool-state")).to_have_text("running")
    expect(card.locator('tbody tr:has(td:text-is("VM")) td.host')).to_have_text(["t0", "t0"])
    expect(page.locator("#events li")).to_have_count(0)
