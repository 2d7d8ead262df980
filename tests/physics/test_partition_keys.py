from __future__ import annotations

import pytest

from lhc_assets.physics.partition_keys import UnsupportedFileName, key_path, parse_key, partition_key


def test_plain_names_keep_their_stem():
    assert partition_key("ttbar", "ttbar_seed42_0001.root") == "ttbar/ttbar_seed42_0001"


@pytest.mark.parametrize(
    "name", ["run #1 (copy).root", "a..b.root", "ünïcødé.root", "x" * 300 + ".root", "-.root"]
)
def test_odd_names_become_safe_unique_keys(tmp_path, name):
    key = partition_key("qcd", name)
    sample, stem = parse_key(key)
    assert sample == "qcd"
    assert ".." not in key and not stem.startswith(".") and len(stem) <= 120
    # Used as a path, the key stays inside the directory it is joined to.
    resolved = (tmp_path / key_path(key)).resolve()
    assert resolved.is_relative_to(tmp_path.resolve())


def test_distinct_files_get_distinct_keys():
    names = ["a b.root", "a_b.root", "a-b.root", "a?b.root", "a*b.root"]
    keys = {partition_key("wjets", n) for n in names}
    assert len(keys) == len(names)


@pytest.mark.parametrize(
    ("sample", "name"),
    [("zjets", "a.root"), ("qcd", "a.txt"), ("qcd", ".hidden.root"), ("qcd", ".a.root.partial"), ("qcd", "../x.root")],
)
def test_unsupported_files_are_refused(sample, name):
    with pytest.raises(UnsupportedFileName):
        partition_key(sample, name)


@pytest.mark.parametrize("key", ["qcd/../../etc", "../qcd/x", "qcd/.x", "zjets/a", "qcd/a/b", "qcd/", "qcd"])
def test_keys_that_could_escape_are_rejected(key):
    with pytest.raises(ValueError, match="invalid partition key"):
        key_path(key)
