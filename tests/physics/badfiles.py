"""Broken input files, each a different way a Delphes file can be wrong."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import uproot

from lhc_assets.physics.generators.rootio import write_delphes_file
from lhc_assets.physics.generators.toy import generate_file_batches


def _batch(sample: str = "ttbar", n: int = 50):
    return next(generate_file_batches(sample, n, seed=99, file_index=0))


def zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def truncated(path: Path, good: Path) -> Path:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def not_root(path: Path) -> Path:
    path.write_text("event,pt\n1,20.5\n" * 100)
    return path


def without_delphes_tree(path: Path) -> Path:
    with uproot.recreate(path) as f:
        f.mktree("Events", {"x": np.float32}).extend({"x": np.arange(5, dtype=np.float32)})
    return path


def missing_branches(path: Path) -> Path:
    b = _batch()
    fields = {c: dict(v) for c, v in b.fields.items()}
    del fields["Jet"]["BTag"]
    del fields["MuonTight"]
    counts = {c: v for c, v in b.counts.items() if c != "MuonTight"}
    write_delphes_file(path, [replace(b, fields=fields, counts=counts)])
    return path


def empty_tree(path: Path) -> Path:
    b = _batch()
    types = {c: b.to_awkward()[c][:0].type for c in b.fields}
    with uproot.recreate(path) as f:
        f.mktree("Delphes", {c: t.content for c, t in types.items()},
                 counter_name=lambda c: f"{c}_size", field_name=lambda c, x: f"{c}.{x}")
    return path


def with_nan(path: Path) -> Path:
    b = _batch()
    fields = {c: {f: a.copy() for f, a in v.items()} for c, v in b.fields.items()}
    fields["EFlowPhoton"]["ET"][7] = np.nan
    fields["EFlowTrack"]["Eta"][3] = np.inf
    write_delphes_file(path, [replace(b, fields=fields)])
    return path


def all_fail_selection(path: Path) -> Path:
    b = _batch("qcd", 40)
    fields = {c: {f: a.copy() for f, a in v.items()} for c, v in b.fields.items()}
    fields["Electron"]["PT"][:] = 5.0
    fields["MuonTight"]["PT"][:] = 5.0
    write_delphes_file(path, [replace(b, fields=fields)])
    return path


def renamed_collections(path: Path, renames: dict[str, str], sample: str = "ttbar", n: int = 50) -> Path:
    """A valid file as another Delphes card would write it: collections renamed (``{"MuonTight": "Muon"}``)."""
    b = _batch(sample, n)
    fields = {renames.get(c, c): v for c, v in b.fields.items()}
    counts = {renames.get(c, c): v for c, v in b.counts.items()}
    write_delphes_file(path, [replace(b, fields=fields, counts=counts)])
    return path
