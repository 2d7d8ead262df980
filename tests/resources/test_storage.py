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


def _drop(root, sample: str, name: str):
    path = root / "incoming" / sample / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"root")
    return path


def test_input_file_of_a_plain_name_is_found_without_listing_incoming(tmp_path, monkeypatch):
    from lhc_assets.physics.partition_keys import partition_key

    s = StorageResource(root=str(tmp_path))
    path = _drop(tmp_path, "ttbar", "ttbar_0001.root")

    def no_listing():
        raise AssertionError("incoming/ was listed")

    monkeypatch.setattr(StorageResource, "input_files", lambda self: no_listing())
    key = partition_key("ttbar", path.name)
    assert s.locate_input_files([key]) == {key: ("ttbar", path)}


def test_the_file_named_by_the_sensor_resolves_an_odd_name_without_listing_incoming(tmp_path, monkeypatch):
    from lhc_assets.physics.partition_keys import partition_key

    s = StorageResource(root=str(tmp_path))
    path = _drop(tmp_path, "qcd", "run 7 [merged].root")  # a hashed key: not <sample>/<stem>.root
    key = partition_key("qcd", path.name)
    monkeypatch.setattr(StorageResource, "input_files", lambda self: (_ for _ in ()).throw(AssertionError("listed")))
    assert s.locate_input_files([key], "qcd/run 7 [merged].root") == {key: ("qcd", path)}
    # A tag naming another file is not trusted for this key.
    _drop(tmp_path, "qcd", "other.root")
    assert s.input_file(key, "qcd/other.root") is None


def test_odd_names_without_a_hint_are_found_by_one_listing(tmp_path):
    from lhc_assets.physics.partition_keys import partition_key

    s = StorageResource(root=str(tmp_path))
    odd = _drop(tmp_path, "wjets", "w (copy).root")
    plain = _drop(tmp_path, "wjets", "w_2.root")
    keys = [partition_key("wjets", odd.name), partition_key("wjets", plain.name), "wjets/absent"]
    assert s.locate_input_files(keys) == {keys[0]: ("wjets", odd), keys[1]: ("wjets", plain)}
