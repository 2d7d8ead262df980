"""Writing Delphes-format ROOT files with uproot, atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import uproot

from lhc_assets.physics.generators.events import EventBatch
from lhc_assets.physics.schema import TREE_NAME

COMPRESSION = {
    "lz4": lambda: uproot.LZ4(1),
    "zlib": lambda: uproot.ZLIB(1),
    "zstd": lambda: uproot.ZSTD(1),
    "none": lambda: None,
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_delphes_file(
    path: str | os.PathLike,
    batches: Iterable[EventBatch],
    compression: str = "lz4",
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Write events to ``path`` as a TTree ``Delphes`` with flat jagged branches ``Coll.Field``.

    The file appears under its final name only once complete (write to a temporary name in the
    same directory, fsync, rename). Returns the number of events written.
    """
    final = Path(path)
    if compression not in COMPRESSION:
        raise ValueError(f"unknown compression {compression!r}; choose one of {sorted(COMPRESSION)}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    written = 0
    try:
        with uproot.recreate(tmp, compression=COMPRESSION[compression]()) as out:
            tree = None
            for batch in batches:
                data = batch.to_awkward()
                if tree is None:
                    tree = out.mktree(
                        TREE_NAME,
                        data,
                        title="Analysis tree",
                        counter_name=lambda coll: f"{coll}_size",
                        field_name=lambda coll, field: f"{coll}.{field}",
                    )
                else:
                    tree.extend(data)
                written += batch.n_events
                if on_batch is not None:
                    on_batch(batch.n_events)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written
