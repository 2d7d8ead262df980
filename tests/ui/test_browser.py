"""The Dagster UI end to end, driven as a person would: ``make ui``, then headless Chromium.

The test starts the real command (``make ui``: ``dagster dev`` on 127.0.0.1 only) on a temporary data root
and Dagster home holding one small generated Delphes file, checks that nothing listens beyond localhost,
opens the global asset lineage in Debian's ``chromium`` (driven by Playwright, no browser download), checks
that every asset of the pipeline is drawn inside the box of its group, launches a materialization of the
file's partition from the ``raw_events`` page and waits until the run page shows the run succeeded; then the
Dagster instance confirms the run and the partition's materialization.

The file's partition is registered before the UI starts: ``new_delphes_files_sensor`` (on by default in
the daemon ``make ui`` starts) never requests a registered partition, so the only run is the one launched
from the UI.

Screenshots go to the test's temporary directory; with ``LHC_UPDATE_SCREENSHOTS=1`` they replace the ones
in ``docs/images/`` that the README shows. ``LHC_CHROMIUM`` overrides the browser (default
``/usr/bin/chromium``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus
from playwright.sync_api import Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from lhc_assets.physics.partition_keys import partition_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "images"
GROUPS = {"ingestion", "features", "datasets", "models", "evaluation", "deployment", "physics", "operations"}
CHROMIUM_ENV = "LHC_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1600, "height": 1000}

# Bounds, generous: two cores shared with other Spark jobs.
SERVER_START_S = 180  # `make ui` until /server_info answers
PAGE_S = 120  # first render of a page (the code location may still be loading)
RUN_S = 360  # the Spark run over one 800-event file (about a minute on an idle machine)
STOP_S = 30  # SIGTERM to the process group until everything has exited, then SIGKILL

# CSS-module class prefixes of the asset graph (dagster-webserver 1.13): group boxes and asset names.
GROUP_HEADER = "[class*='ExpandedGroupNode_groupNodeHeaderBox']"
GROUP_OUTLINE = "[class*='ExpandedGroupNode_groupOutlineBox']"
ASSET_NAME = "[class*='AssetNode_assetName']"


@dataclass
class UI:
    url: str
    port: int
    home: Path
    data_root: Path
    partition: str
    proc: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- last {lines} lines of {self.log} ---\n" + "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    # A shell that started pytest in the background may have made it ignore SIGINT; `dagster dev` maps SIGTERM
    # to its SIGINT handler, so an inherited "ignore" would make it deaf to the SIGTERM of the teardown.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stop(proc: subprocess.Popen, seen: list[psutil.Process]) -> None:
    """Stop everything `make ui` started: its process group, and any descendant that left the group."""
    procs = {p.pid: p for p in [*seen, *_tree(proc.pid)]}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        alive = [p for p in procs.values() if p.is_running()]
        if sig == signal.SIGKILL:
            for p in alive:  # only processes of this tree, by pid
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
        _, alive = psutil.wait_procs(alive, timeout=STOP_S)
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if not alive and proc.poll() is not None:
            return


def _wait_for_server(ui: UI) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if ui.proc.poll() is not None:
            pytest.fail(f"`make ui` exited with {ui.proc.returncode} before the UI answered\n{ui.log_tail()}")
        try:
            with urllib.request.urlopen(f"{ui.url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"the UI did not answer on {ui.url}/server_info within {SERVER_START_S} s\n{ui.log_tail()}")


def _listening_sockets(pid: int) -> set[tuple[str, int]]:
    out = set()
    for p in _tree(pid):
        try:
            conns = p.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


@pytest.fixture
def ui(tmp_path: Path, generated_files: dict[str, Path]) -> Iterator[UI]:
    """`make ui` on a temporary data root and Dagster home with one registered, not yet materialized file."""
    home, data_root = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # The "Join the Dagster community" dialog is shown once per instance, until someone dismisses it; this
    # is the file its Skip button writes ($DAGSTER_HOME/.nux/nux.yaml).
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")

    src = generated_files["ttbar"]
    incoming = data_root / "incoming" / "ttbar"
    incoming.mkdir(parents=True)
    shutil.copy2(src, incoming / src.name)
    key = partition_key("ttbar", src.name)
    instance = DagsterInstance.from_config(str(home))
    try:
        instance.add_dynamic_partitions("delphes_files", [key])
    finally:
        instance.dispose()

    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LHC_DATA_ROOT": str(data_root),
        "LHC_UI_PORT": str(port),
        "LHC_SPARK_MASTER": "local[2]",
        "PYSPARK_PYTHON": sys.executable,
    }
    log = tmp_path / "make_ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["make", "ui"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_default_signals)
    server = UI(f"http://127.0.0.1:{port}", port, home, data_root, key, proc, log)
    seen: list[psutil.Process] = []
    try:
        _wait_for_server(server)
        seen = _tree(proc.pid)
        yield server
        seen = [*seen, *_tree(proc.pid)]
    finally:
        _stop(proc, seen)


@pytest.fixture
def chromium() -> str:
    """Debian's chromium (or $LHC_CHROMIUM); checked before the UI is started, so a missing one fails fast."""
    exe = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    path = shutil.which(exe)
    if not path:
        pytest.fail(f"Chromium not found at {exe!r} (${CHROMIUM_ENV}). This test drives Debian's chromium with "
                    "Playwright and downloads no browser: install it with `sudo apt-get install -y chromium`, "
                    f"or point ${CHROMIUM_ENV} at a Chromium binary.")
    return path


def _screenshot_dir(tmp_path: Path) -> Path:
    out = SCREENSHOTS if os.environ.get("LHC_UPDATE_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _boxes(locator: Locator) -> list[dict]:
    return [b for b in (el.bounding_box() for el in locator.all()) if b]


def _wait_until_still(locator: Locator, timeout_s: float = 30) -> list[dict]:
    """Bounding boxes of the locator's elements once they stop moving (the graph zooms to fit after layout)."""
    deadline = time.monotonic() + timeout_s
    last = _boxes(locator)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _boxes(locator)
        if now == last:
            return now
        last = now
    return last


def _shows(label: str, name: str) -> bool:
    """Whether a node label shows the asset name: in full, or middle-truncated ('undersamp…_dataset')."""
    if label == name:
        return True
    head, ellipsis, tail = label.partition("…")
    return bool(ellipsis) and name.startswith(head) and name.endswith(tail) and len(head) + len(tail) < len(name)


def _inside(box: dict, rect: tuple[float, float, float, float]) -> bool:
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    return rect[0] <= x <= rect[2] and rect[1] <= y <= rect[3]


def _group_rects(page: Page) -> dict[str, tuple[float, float, float, float]]:
    """Each expanded group's box in the graph (its header and the outline below it), by group name."""
    outlines = _boxes(page.locator(GROUP_OUTLINE))
    rects = {}
    for header in page.locator(GROUP_HEADER).all():
        name, h = header.inner_text().strip().splitlines()[0].strip(), header.bounding_box()
        below = [o for o in outlines if abs(o["x"] - h["x"]) < 2 and abs(o["y"] - (h["y"] + h["height"])) < 2]
        assert len(below) == 1, f"no outline box under the header of group {name!r}"
        o = below[0]
        rects[name] = (h["x"], h["y"], h["x"] + h["width"], o["y"] + o["height"])
    return rects


def _expected_assets(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Asset name -> group, from the code location's definitions."""
    from lhc_assets.definitions import build_definitions

    monkeypatch.setenv("LHC_DATA_ROOT", str(data_root))
    graph = build_definitions().resolve_asset_graph()
    return {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}


def _check_asset_graph(page: Page, ui: UI, expected: dict[str, str], shots: Path) -> None:
    page.goto(ui.url)
    page.get_by_role("link", name=re.compile(r"(^|\s)Lineage$")).click()  # the main navigation
    expect(page.get_by_text("Global asset lineage")).to_be_visible(timeout=PAGE_S * 1000)
    page.get_by_role("button", name="Hide navigation").click()
    # With several groups the graph starts collapsed to one box per group: expand them all, as a person
    # would, from the graph's settings menu (the choice lands in the URL), then reload so it zooms to fit.
    page.locator("#zoom-slider-container button:has([aria-label='settings'])").click()
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    expect(page).to_have_url(re.compile(r"[?&]expanded="), timeout=30_000)
    page.reload()
    # The graph opens fitted to its width; two steps out, as a person would, so that all of its height shows
    # too (nodes far outside the view are not drawn).
    expect(page.locator(ASSET_NAME).first).to_be_visible(timeout=PAGE_S * 1000)
    for _ in range(2):
        page.locator("#zoom-slider-container button:has([aria-label='zoom_out'])").click()
    names = page.locator(ASSET_NAME)
    expect(names).to_have_count(len(expected), timeout=PAGE_S * 1000)
    expect(page.locator(GROUP_HEADER)).to_have_count(len(GROUPS), timeout=30_000)
    _wait_until_still(page.locator(f"{ASSET_NAME}, {GROUP_HEADER}"))

    rects = _group_rects(page)
    assert set(rects) == GROUPS, f"groups drawn in the graph: {sorted(rects)}"
    labels = [(el.inner_text().strip(), el.bounding_box()) for el in names.all()]
    for group, rect in rects.items():
        members = sorted(name for name, g in expected.items() if g == group)
        shown = sorted(label for label, box in labels if _inside(box, rect))
        matched = {name: [label for label in shown if _shows(label, name)] for name in members}
        # One label per asset and one asset per label: every asset of the group, and nothing else, in its box.
        assert all(len(found) == 1 for found in matched.values()) and sorted(
            found[0] for found in matched.values()) == shown, (
            f"group {group!r}: expected {members}, the graph shows {shown} in its box")
    for el in names.all():
        expect(el).to_be_visible()
    page.mouse.move(VIEWPORT["width"] - 5, VIEWPORT["height"] - 5)  # no hover highlight in the picture
    page.screenshot(path=str(shots / "asset_graph.png"), full_page=True)


def _launch_partition(page: Page, ui: UI, shots: Path) -> str:
    """Materialize raw_events for the one partition from its asset page; the run id from the toast's link."""
    page.goto(f"{ui.url}/assets/raw_events")
    page.get_by_role("button", name="Materialize…").click(timeout=PAGE_S * 1000)
    dialog = page.get_by_role("dialog")
    title = dialog.get_by_text("Launch runs to materialize raw_events")
    expect(title).to_be_visible(timeout=60_000)
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem", name=ui.partition).click()
    title.click()  # closes the partition list, keeps the dialog
    expect(page.get_by_role("menuitem", name=ui.partition)).to_have_count(0)
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    page.screenshot(path=str(shots / "launch_partition.png"))
    launch.click()

    expect(page.get_by_text("Launched run")).to_be_visible(timeout=120_000)
    view = page.get_by_role("link", name="View", exact=True)
    href = view.get_attribute("href", timeout=10_000)
    try:
        view.click(timeout=10_000)
    except PlaywrightTimeoutError:  # the toast went away first
        page.goto(f"{ui.url}{href}")
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"), timeout=60_000)
    return re.search(r"/runs/([0-9a-f-]{36})", page.url)[1]


def _wait_for_run(page: Page, ui: UI, run_id: str, shots: Path) -> None:
    """On the run page: until the run's status shows it ended; it must be Success."""
    success = page.get_by_text("Success", exact=True)
    ended = success.or_(page.get_by_text(re.compile(r"^(Failure|Canceled)$")))
    try:
        expect(ended.first).to_be_visible(timeout=RUN_S * 1000)
    except AssertionError:
        pytest.fail(f"run {run_id} did not end within {RUN_S} s in the UI\n{ui.log_tail()}")
    # Judge the element that ended the wait: a second "Success" on the page may be hidden or re-rendering, so
    # success.is_visible() once said False while this one said "Success" (a loaded machine).
    status = ended.first.inner_text().strip()
    if status != "Success":
        page.screenshot(path=str(ui.log.parent / "run_failed.png"))
        pytest.fail(f"the UI shows run {run_id} as {status}\n{ui.log_tail(120)}")
    expect(page.get_by_text("RUN_SUCCESS", exact=True).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text(f"partition: {ui.partition}")).to_be_visible()
    page.mouse.move(5, VIEWPORT["height"] - 5)
    page.screenshot(path=str(shots / "run_success.png"))


def test_ui_shows_the_asset_graph_and_materializes_a_partition(
        chromium: str, ui: UI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _expected_assets(ui.data_root, monkeypatch)
    assert set(expected.values()) == GROUPS
    assert "raw_events" in expected

    # `make ui` binds to localhost only: the UI's socket, and nothing of its process tree beyond loopback.
    sockets = _listening_sockets(ui.proc.pid)
    assert ("127.0.0.1", ui.port) in sockets, sockets
    assert not [s for s in sockets if s[1] == ui.port and s[0] != "127.0.0.1"], sockets
    assert all(_is_loopback(ip) for ip, _ in sockets), sockets

    shots = _screenshot_dir(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(60_000)
            # Should the community dialog show up anyway, dismiss it as a person would.
            page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda b: b.click())
            try:
                _check_asset_graph(page, ui, expected, shots)
                run_id = _launch_partition(page, ui, shots)
                _wait_for_run(page, ui, run_id, shots)
            except BaseException:
                page.screenshot(path=str(tmp_path / "failure.png"))
                print(f"screenshot of the page at the failure: {tmp_path / 'failure.png'}\n{ui.log_tail()}")
                raise
        finally:
            browser.close()

    # The instance agrees: the run succeeded and wrote raw_events for the partition.
    instance = DagsterInstance.from_config(str(ui.home))
    try:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS, run
        assert run.tags.get("dagster/partition") == ui.partition, run.tags
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("raw_events"), asset_partitions=[ui.partition]), limit=10
        ).records
        assert run_id in {r.run_id for r in records}, [r.run_id for r in records]
        assert ui.partition in instance.get_materialized_partitions(AssetKey("raw_events"))
    finally:
        instance.dispose()
