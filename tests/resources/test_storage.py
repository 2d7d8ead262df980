from __future__ import annotations

import pytest

from lhc_assets.physics.schema import SAMPLES
from resources.storage import StorageResource, storage_from_env


def test_root_comes_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LHC_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert storage_from_env().root_path == (tmp_path / "elsewhere").resolve()


def test_default_root_is_data_under_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("LHC_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert storage_from_env().root_path == tmp_path / "data"


def test_layout(tmp_path):
    s = StorageResource(root=str(tmp_path))
    s.ensure_layout()
    for sample in SAMPLES:
        assert s.incoming_dir(sample) == tmp_path / "incoming" / sample
        assert s.incoming_dir(sample).is_dir()
    assert s.asset_dir("raw_events") == tmp_path / "warehouse" / "raw_events"
    assert (tmp_path / "models").is_dir() and (tmp_path / "reports").is_dir()
    s.ensure_layout()  # idempotent


@pytest.mark.parametrize("bad", ["", "../x", ".hidden", "a/b"])
def test_asset_names_cannot_escape_the_warehouse(tmp_path, bad):
    with pytest.raises(ValueError, match="invalid asset name"):
        StorageResource(root=str(tmp_path)).asset_dir(bad)


def test_unknown_sample_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown sample 'zjets'"):
        StorageResource(root=str(tmp_path)).incoming_dir("zjets")
