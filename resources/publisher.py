"""Versioned directories: the one way the platform publishes what an asset wrote (tables, models, reports).

::

    <base>/v-20261125T101500-1a2b3c4d-9f8e7d/...   one complete version per successful write
    <base>/CURRENT                                 name of the version readers use
    <base>/.staging-<host>~<pid>~<start>~<name>/   a write in progress (hidden; removed on failure)

A write goes into a hidden staging directory beside the versions (same filesystem, so publishing is a rename);
only when it is whole is it renamed to a new version and ``CURRENT`` replaced by an atomic rename. A failed or
killed write leaves ``CURRENT`` on the previous good version. After a publish the ``keep`` newest previous
versions stay (default 1, ``LHC_KEEP_VERSIONS``), so a rollback is one rename of ``CURRENT``; older ones go.

A staging directory is named after the process that writes it (host, pid, the process's start time), so the
next write to the same base removes the ones whose process is gone (SIGKILL, OOM, a restart) at once, and never
one of a live process. Staging directories of another host, or of an older naming, are removed once older than
``STALE_STAGING_S``. ``lhc gc`` does both over the whole data root and reports the space reclaimed.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

CURRENT = "CURRENT"
STAGING_PREFIX = ".staging-"
VERSION_PREFIX = "v-"
OWNER_SEP = "~"
# Older than any write of this platform: a staging directory this old belongs to a dead process.
STALE_STAGING_S = 6 * 3600
KEEP_VERSIONS_ENV = "LHC_KEEP_VERSIONS"
DEFAULT_KEEP_VERSIONS = 1


def keep_versions() -> int:
    """Previous versions kept after a publish (``LHC_KEEP_VERSIONS``, default 1: the one to roll back to)."""
    raw = os.environ.get(KEEP_VERSIONS_ENV, "")
    try:
        return max(0, int(raw)) if raw.strip() else DEFAULT_KEEP_VERSIONS
    except ValueError:
        raise ValueError(f"{KEEP_VERSIONS_ENV} must be a whole number of versions, got {raw!r}") from None


def _process_start(pid: int) -> int:
    return int(psutil.Process(pid).create_time())


def staging_owner() -> str:
    """``host~pid~start``: names this process uniquely (pids are reused, with another start time)."""
    return OWNER_SEP.join((socket.gethostname().replace(OWNER_SEP, "-"), str(os.getpid()),
                           str(_process_start(os.getpid()))))


def staging_owner_alive(name: str) -> bool | None:
    """Whether the process that made the staging directory ``name`` still runs: None when it cannot be told
    (another host, or a name without an owner)."""
    parts = name.removeprefix(STAGING_PREFIX).split(OWNER_SEP)
    if len(parts) < 4 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    if parts[0] != socket.gethostname().replace(OWNER_SEP, "-"):
        return None
    try:
        return _process_start(int(parts[1])) == int(parts[2])
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.Error:
        return None


def directory_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if it vanished meanwhile)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                continue
    return total


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


def clean_stale_staging(base: Path, max_age_s: float = STALE_STAGING_S) -> int:
    """Remove the staging directories under ``base`` whose process is gone, and those older than ``max_age_s``
    whose process cannot be checked; returns the bytes reclaimed."""
    now, reclaimed = time.time(), 0
    for child in Path(base).glob(f"{STAGING_PREFIX}*"):
        alive = staging_owner_alive(child.name)
        try:
            dead = alive is False or (alive is None and now - child.stat().st_mtime > max_age_s)
        except FileNotFoundError:
            continue
        if dead:
            reclaimed += directory_bytes(child)
            shutil.rmtree(child, ignore_errors=True)
    return reclaimed


def prune_versions(base: Path, keep: int | None = None) -> int:
    """Remove all but the ``keep`` newest versions before ``CURRENT`` (never CURRENT's, never a newer one);
    returns the bytes reclaimed. ``keep`` defaults to ``keep_versions()``."""
    base = Path(base)
    current = current_version(base)
    if current is None:
        return 0
    keep = keep_versions() if keep is None else keep
    older = sorted((p for p in base.iterdir() if p.is_dir() and p.name.startswith(VERSION_PREFIX)
                    and p.name < current.name), key=lambda p: p.name, reverse=True)
    reclaimed = 0
    for path in older[keep:]:
        reclaimed += directory_bytes(path)
        shutil.rmtree(path, ignore_errors=True)
    return reclaimed


def new_staging(base: Path, name: str | None = None, create: bool = True) -> Path:
    """A fresh hidden directory under ``base`` to write a new version into, named after this process; the ones
    of dead processes are cleaned first.

    ``create=False`` leaves it to the writer (Spark refuses to write into an existing directory)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(base)
    staging = base / f"{STAGING_PREFIX}{staging_owner()}{OWNER_SEP}{name or uuid.uuid4().hex}"
    if create:
        staging.mkdir()
    return staging


def publish_version(src: Path, base: Path, version: str, keep: int | None = None) -> Path:
    """Move a complete staging directory to ``base/version``, point CURRENT at it, and keep ``keep`` previous
    versions (default ``keep_versions()``)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    dest = base / version
    os.replace(src, dest)
    tmp = base / f".{CURRENT}.{uuid.uuid4().hex}"
    tmp.write_text(version + "\n")
    os.replace(tmp, base / CURRENT)
    prune_versions(base, keep)
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


def collect_garbage(root: Path, keep: int | None = None) -> dict[Path, tuple[int, int]]:
    """Under ``root``, every versioned base: staging of dead writers removed and versions pruned to ``keep``.

    Returns ``{base: (staging bytes, version bytes)}`` for the bases where something was reclaimed. Never
    descends into a version or a staging directory (they hold only data)."""
    reclaimed: dict[Path, tuple[int, int]] = {}
    for directory, subdirs, files in os.walk(root):
        base = Path(directory)
        staged = any(d.startswith(STAGING_PREFIX) for d in subdirs)
        subdirs[:] = [d for d in subdirs if not d.startswith((STAGING_PREFIX, VERSION_PREFIX))]
        if CURRENT not in files and not staged:
            continue
        got = (clean_stale_staging(base), prune_versions(base, keep))
        if any(got):
            reclaimed[base] = got
    return reclaimed
