"""Per-file partition keys: ``<sample>/<safe file stem>``, e.g. ``ttbar/ttbar_seed42_0001``.

A key is a valid Dagster partition key and, used as a relative path, can never leave the directory
it is joined to: the sample is one of the known names and the stem keeps only ``[A-Za-z0-9_.-]``,
never starts with a dot and has no run of dots. When a file name had to be changed to get there (odd
characters, very long names), a short hash of the original name keeps keys of different files distinct.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath

from lhc_assets.physics.schema import SAMPLES

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_DOTS = re.compile(r"\.{2,}")
_KEY = re.compile(r"^(?P<sample>[a-z]+)/(?P<stem>[A-Za-z0-9_-][A-Za-z0-9_.-]{0,119})$")
MAX_STEM = 100


class UnsupportedFileName(ValueError):
    """A file that cannot be an input partition (wrong directory or extension)."""


def partition_key(sample: str, file_name: str) -> str:
    """The partition key of ``<data root>/incoming/<sample>/<file_name>``."""
    if sample not in SAMPLES:
        raise UnsupportedFileName(f"{sample}/{file_name}: unknown sample directory {sample!r}")
    if not file_name.endswith(".root") or file_name.startswith(".") or "/" in file_name:
        raise UnsupportedFileName(f"{sample}/{file_name}: not a visible '.root' file")
    stem = file_name[: -len(".root")]
    safe = _DOTS.sub(".", _UNSAFE.sub("_", stem)).strip("._-")
    if safe != stem or len(safe) > MAX_STEM or not safe:
        digest = hashlib.sha1(file_name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        safe = f"{safe[:MAX_STEM]}-{digest}" if safe else f"file-{digest}"
    return f"{sample}/{safe}"


def parse_key(key: str) -> tuple[str, str]:
    """(sample, stem) of a valid key; ValueError for anything else."""
    m = _KEY.match(key)
    if not m or m["sample"] not in SAMPLES or ".." in m["stem"]:
        raise ValueError(f"invalid partition key {key!r}: expected '<sample>/<safe name>'")
    return m["sample"], m["stem"]


def key_path(key: str) -> PurePosixPath:
    """Relative path of a partition's directory (validated)."""
    sample, stem = parse_key(key)
    return PurePosixPath(sample) / stem
