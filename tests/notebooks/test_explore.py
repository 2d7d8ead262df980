"""``notebooks/explore.ipynb`` runs headless (nbclient) against the ``make run`` sample (``lhc-run --quick``) and
shows what it promises: what is materialized, HLF distributions per class, ROC curves and the model comparison."""

from __future__ import annotations

import base64
import os
import re
import struct
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

pytestmark = pytest.mark.slow  # starts a kernel (and, in the notebook, a Spark JVM)

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "explore.ipynb"
MODELS = ("hlf_classifier", "particle_sequence_classifier", "inclusive_classifier", "random_forest_baseline")
CLASSES = ("QCD", "ttbar", "W+jets")
CELL_TIMEOUT_S = 600
EXIT_WAIT_S = 60


def _session_processes(sid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a session: the kernel and everything it started."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (OSError, psutil.NoSuchProcess, psutil.AccessDenied):  # gone while we looked
            continue
    return found


def _stop_session(sids: set[int]) -> list[str]:
    """Wait up to EXIT_WAIT_S for the sessions' processes to exit; kill and describe those still running."""
    deadline = time.monotonic() + EXIT_WAIT_S
    while (alive := [p for sid in sids for p in _session_processes(sid)]) and time.monotonic() < deadline:
        time.sleep(1)
    leftovers = []
    for p in alive:
        try:
            leftovers.append(f"{p.pid}: {' '.join(p.cmdline())[:200]}")
            p.kill()
        except psutil.NoSuchProcess:
            continue
    return leftovers


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Run every cell in a fresh python3 kernel in notebooks/ (the environment is os.environ).

    A failing cell raises nbclient's CellExecutionError, whose message has the cell's source and traceback.
    jupyter_client starts the kernel in a new session, so everything it starts (the Spark JVM, the JVM's
    Python workers) shares the kernel's session id, even once orphaned: after the kernel has shut down,
    nothing of that session may remain (leftovers are killed, then the test fails).
    """
    before = set(psutil.Process().children())
    kernel_sid: list[int] = []

    def record_kernel(**_) -> None:  # the new child is the kernel, leader of its own session
        kernel_sid.extend(p.pid for p in set(psutil.Process().children()) - before if os.getsid(p.pid) == p.pid)

    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}, on_notebook_start=record_kernel)
    try:
        client.execute()
    finally:
        leftovers = _stop_session(set(kernel_sid))
    assert kernel_sid, "no kernel process leading its own session was found"
    assert not leftovers, f"processes the notebook's kernel started outlived it (killed now): {leftovers}"
    return nb


def _cell(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _text(cell: nbformat.NotebookNode) -> str:
    """Everything the cell printed or displayed as plain text."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream" and out.name == "stdout":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def _png_sizes(cell: nbformat.NotebookNode) -> list[tuple[int, int]]:
    """(width, height) of every PNG the cell displayed."""
    sizes = []
    for out in cell.outputs:
        if out.output_type in ("execute_result", "display_data") and "image/png" in out.data:
            png = base64.b64decode(out.data["image/png"])
            assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
            sizes.append(struct.unpack(">II", png[16:24]))
    return sizes


def _rows(text: str, names: tuple[str, ...]) -> dict[str, list[str]]:
    """Cells after each row name of pandas' text table, joined over the blocks a wide table wraps into."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        first, _, rest = line.partition(" ")
        if first in names:
            rows.setdefault(first, []).extend(rest.split())
    return rows


@pytest.mark.timeout(1700)  # quick_run's lhc-run may run in this test's setup
def test_explore_notebook_shows_the_make_run_sample(quick_run, monkeypatch):
    first = quick_run.first
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    for key, value in quick_run.env.items():  # the kernel inherits this process's environment
        monkeypatch.setenv(key, value)
    files = len(list((quick_run.data_root / "incoming").glob("*/*.root")))

    nb = execute(nbformat.read(NOTEBOOK, as_version=4))

    # The configuration came from the environment.
    assert f"LHC_DATA_ROOT = {quick_run.data_root}" in _text(nb.cells[1])
    assert f"DAGSTER_HOME = {quick_run.dagster_home}" in _text(nb.cells[1])

    # 1. What is materialized: every asset through model_evaluation; every input file's features.
    materialized = _rows(_text(_cell(nb, "materialized")), (
        "raw_events", "hlf_features", "llf_features", "feature_scalers", "train_set", "event_scores",
        "model_evaluation", *MODELS))
    assert len(materialized) == 7 + len(MODELS), materialized
    assert " ".join(materialized["hlf_features"][1:4]) == f"{files} / {files}", materialized["hlf_features"]
    assert all("None" not in cells and "NaT" not in cells for cells in materialized.values()), materialized

    # 2. Features per class: the three classes have selected events, and the histogram figure is drawn.
    summary = _rows(_text(_cell(nb, "class-summary")), CLASSES)
    assert set(summary) == set(CLASSES), _text(_cell(nb, "class-summary"))
    assert all(int(cells[0]) > 0 for cells in summary.values()), summary
    assert [w > 600 and h > 400 for w, h in _png_sizes(_cell(nb, "feature-distributions"))] == [True]
    assert "fitted on the train split" in _text(_cell(nb, "feature-scalers"))

    # 3. ROC curves (from the model_evaluation report), and event_scores reproduce its AUCs.
    assert [w > 600 and h > 300 for w, h in _png_sizes(_cell(nb, "roc-curves"))] == [True]
    scores = _text(_cell(nb, "event-scores"))
    difference = re.search(r"largest AUC difference to the report: (\S+)", scores)
    assert difference and float(difference.group(1)) < 1e-6, scores
    assert len(_png_sizes(_cell(nb, "event-scores"))) == 1

    # 4. The comparison table: the four models, three per-class AUCs and the accuracy each, all in [0, 1].
    table = _text(_cell(nb, "comparison-table"))
    assert all(f"AUC {c}" in table for c in CLASSES) and "accuracy" in table, table
    rows = _rows(table, MODELS)
    assert set(rows) == set(MODELS), table
    for model, cells in rows.items():
        values = [float(v) for v in cells]
        assert len(values) == len(CLASSES) + 1 and all(0.0 <= v <= 1.0 for v in values), (model, table)


@pytest.mark.timeout(300)
def test_a_failing_cell_fails_with_its_error():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise RuntimeError('no model_evaluation report')"),
        nbformat.v4.new_code_cell("print('not reached')"),
    ])
    with pytest.raises(CellExecutionError, match="no model_evaluation report") as error:
        execute(nb)
    assert "RuntimeError" in str(error.value)
    assert nb.cells[2].outputs == []  # execution stopped at the failing cell
