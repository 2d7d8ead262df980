"""Versioned directories: the one way the platform publishes what an asset wrote (tables, models, reports).

::

    <base>/v-20261125T101500-1a2b3c4d-9f8e7d/...   one complete version per successful write
    <base>/CURRENT                                 name of the version readers use
    <base>/.staging-<random>/                      a write in progress (hidden; removed on failure)

A write goes into a hidden staging directory beside the versions (same filesystem, so publishing is a rename);
only when it is whole is it renamed to a new version and ``CURRENT`` replaced by an atomic rename. A failed or
killed write leaves ``CURRENT`` on the previous good version, which is removed only after the new one is in
place. Staging directories left by killed writes are removed by a later write to the same base once they are
older than ``STALE_STAGING_S``.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CURRENT = "CURRENT"
STAGING_PREFIX = ".staging-"
VERSION_PREFIX = "v-"
# Older than any write of this platform: a staging directory this old belongs to a dead process.
STALE_STAGING_S = 6 * 3600


def new_version(run_id: str | None) -> str:
    """A version directory name: sortable by time, traceable to the run that wrote it."""
    return f"{VERSION_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{(run_id or 'local')[:8]}-" \
           f"{uuid.uuid4().hex[:6]}"


def current_version(base: Path) -> Path | None:
    """The version directory ``CURRENT`` points at, or None if nothing was published."""
    try:
        name = (Path(base) / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    path = Path(base) / name
    return path if path.is_dir() else None


def clean_stale_staging(base: Path, max_age_s: float = STALE_STAGING_S) -> None:
    """Remove staging directories under ``base`` older than ``max_age_s`` (left by killed writes)."""
    now = time.time()
    for child in Path(base).glob(f"{STAGING_PREFIX}*"):
        try:
            if now - child.stat().st_mtime > max_age_s:
                shutil.rmtree(child, ignore_errors=True)
        except FileNotFoundError:
            pass


def new_staging(base: Path, name: str | None = None, create: bool = True) -> Path:
    """A fresh hidden directory under ``base`` to write a new version into; stale ones are cleaned first.

    ``create=False`` leaves it to the writer (Spark refuses to write into an existing directory)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(base)
    staging = base / f"{STAGING_PREFIX}{name or uuid.uuid4().hex}"
    if create:
        staging.mkdir()
    return staging


def publish_version(src: Path, base: Path, version: str) -> Path:
    """Move a complete staging directory to ``base/version``, point CURRENT at it, drop older versions."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    dest = base / version
    os.replace(src, dest)
    tmp = base / f".{CURRENT}.{uuid.uuid4().hex}"
    tmp.write_text(version + "\n")
    os.replace(tmp, base / CURRENT)
    for child in base.iterdir():
        if child.is_dir() and child.name.startswith(VERSION_PREFIX) and child.name != version:
            shutil.rmtree(child, ignore_errors=True)
    return dest


@contextmanager
def staging(base: Path) -> Iterator[Path]:
    """A staging directory under ``base`` that is removed when the block ends (published or not)."""
    path = new_staging(base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(base: Path, version: str, write: Callable[[Path], None]) -> Path:
    """Write a new version of ``base`` with ``write(staging_dir)`` and publish it; returns its directory."""
    with staging(base) as path:
        write(path)
        return publish_version(path, base, version)
