"""`lhc trigger-menu` on a stored event_scores table: cuts, rates per class, JSON, and clear usage errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lhc_assets.cli.lhc import main
from resources.publisher import publish
from resources.storage import StorageResource


def _store_scores(root, models: dict[str, list[float]], labels: list[int]) -> None:
    """An event_scores version as the warehouse IO manager publishes it: identity, label, probabilities per model."""
    storage = StorageResource(root=str(root))
    n = len(labels)
    columns = {"sample": pa.array(["s"] * n), "file": pa.array(["f"] * n), "entry": pa.array(range(n), pa.int64()),
               "label": pa.array(labels, pa.int32())}
    for name, ttbar in models.items():
        s = np.asarray(ttbar, np.float32)
        columns[name] = pa.array(np.stack([(1 - s) / 2, s, (1 - s) / 2], axis=1).tolist(), pa.list_(pa.float32()))
    publish(storage.asset_dir("event_scores"), "v-20261204T000000-test",
            lambda d: pq.write_table(pa.table(columns), d / "part-00000.parquet"))


@pytest.fixture
def scores_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LHC_DATA_ROOT", str(tmp_path))
    # 10 ttbar scored 0.91..1.00; 10 QCD 0.05..0.95; 4 W+jets.
    ttbar = [0.91 + 0.01 * i for i in range(10)]
    qcd = [0.05 + 0.1 * i for i in range(10)]
    wjets = [0.1, 0.2, 0.93, 0.99]
    _store_scores(tmp_path, {"good": ttbar + qcd + wjets, "flat": [0.5] * 24}, [1] * 10 + [0] * 10 + [2] * 4)
    return tmp_path


def test_menu_prints_rates_per_class_and_the_headline(scores_root, capsys):
    rc = main(["trigger-menu", "--model", "good", "--efficiency", "0.9", "--input-rate-hz", "200",
               "--composition", "qcd=30,ttbar=10,wjets=60"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "input stream: 200 Hz (QCD 30 %, ttbar 10 %, W+jets 60 %)" in out
    # Cut 0.92 keeps 9 of 10 ttbar, 1 of 10 QCD (0.95), 2 of 4 W+jets: 18 + 6 + 60 = 84 Hz.
    assert "| good | 0.90 | 0.92 | 0.1000 | 0.9000 | 0.5000 | 6 | 18 | 60 | 84 | 2.38x |" in out
    assert "good: keep 90.0 % of ttbar at 84 Hz instead of 200 Hz" in out


def test_json_lists_every_model_and_efficiency_with_the_study_stream_by_default(scores_root, capsys):
    assert main(["trigger-menu", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((r["model"], r["target_efficiency"]) for r in rows) == sorted(
        (m, e) for m in ("good", "flat") for e in (0.99, 0.95, 0.90))
    assert all(r["source"] == "event_scores" and r["total_input_hz"] == pytest.approx(1000.0) for r in rows)
    assert rows[0]["input_hz"] == pytest.approx({"QCD": 362.0, "ttbar": 4.0, "W+jets": 634.0})
    flat = next(r for r in rows if r["model"] == "flat")  # a model that cannot tell classes apart keeps everything
    assert flat["total_output_hz"] == pytest.approx(1000.0)


def test_usage_problems_are_one_line_naming_the_cause(scores_root, tmp_path, capsys, monkeypatch):
    assert main(["trigger-menu", "--model", "nope"]) == 2
    assert "no scores of nope in event_scores; it has good, flat" in capsys.readouterr().err
    assert main(["trigger-menu", "--composition", "qcd=1,ttbar"]) == 2
    assert "class=weight, got 'ttbar'" in capsys.readouterr().err
    assert main(["trigger-menu", "--source", "onnx"]) == 2
    assert "onnx_models has not been materialized" in capsys.readouterr().err
    assert main(["trigger-menu", "--source", "fpga"]) == 2
    assert "fpga_hlf_classifier has not been materialized" in capsys.readouterr().err
    monkeypatch.setenv("LHC_DATA_ROOT", str(tmp_path / "empty"))
    assert main(["trigger-menu"]) == 2
    assert "event_scores has not been materialized" in capsys.readouterr().err
