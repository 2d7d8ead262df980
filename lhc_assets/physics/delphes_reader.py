"""Reading Delphes ROOT files into Arrow record batches (uproot + pyarrow; no Spark).

Only the collections and fields of DESIGN.md section 3 are read; every other branch in the file is
pruned. Every problem with an input file is raised as ``DelphesInputError`` whose message starts with
the file path and says what is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import awkward as ak
import numpy as np
import pyarrow as pa

from lhc_assets.physics.schema import REQUIRED_FIELDS, SAMPLES, TREE_NAME, branch_name, field_dtype

IDENTITY_FIELDS = (
    pa.field("sample", pa.string(), nullable=False),
    pa.field("label", pa.int32(), nullable=False),
    pa.field("file", pa.string(), nullable=False),
    pa.field("entry", pa.int64(), nullable=False),
    pa.field("partition_key", pa.string(), nullable=False),
)


def _arrow_type(field: str) -> pa.DataType:
    return pa.int32() if field_dtype(field) == "int32" else pa.float32()


def collection_type(collection: str) -> pa.DataType:
    """A collection as a struct of same-length arrays, one per field (``EFlowTrack.PT`` in Spark SQL).

    Struct-of-arrays rather than array-of-structs: Spark moves primitive arrays between the JVM,
    Arrow and Parquet in bulk, while arrays of structs cost a conversion per element.
    """
    return pa.struct(
        [pa.field(f, pa.list_(pa.field("element", _arrow_type(f), nullable=False)), nullable=False)
         for f in REQUIRED_FIELDS[collection]]
    )


RAW_SCHEMA = pa.schema([*IDENTITY_FIELDS, *(pa.field(c, collection_type(c), nullable=False) for c in REQUIRED_FIELDS)])


class DelphesInputError(Exception):
    """An input file cannot be ingested; the message names the file and the problem."""


@dataclass(frozen=True)
class FileInfo:
    path: str
    num_entries: int


def _open_tree(path: str):
    import uproot

    if not os.path.exists(path):
        raise DelphesInputError(f"{path}: file not found")
    size = os.path.getsize(path)
    if size == 0:
        raise DelphesInputError(f"{path}: empty file (0 bytes); is it still being copied?")
    try:
        f = uproot.open(path, array_cache=None)  # no cache: a task reads each basket once
    except Exception as exc:  # uproot raises many types for a bad header
        raise DelphesInputError(f"{path}: not a readable ROOT file ({type(exc).__name__}: {exc})") from None
    try:
        keys = f.keys(cycle=False)
        if TREE_NAME not in keys:
            found = ", ".join(sorted(keys)[:10]) or "nothing"
            raise DelphesInputError(f"{path}: no TTree '{TREE_NAME}' in the file (found: {found})")
        return f[TREE_NAME]
    except DelphesInputError:
        raise
    except Exception as exc:
        raise DelphesInputError(
            f"{path}: ROOT file is damaged or truncated ({type(exc).__name__}: {exc})"
        ) from None


def inspect_file(path: str) -> FileInfo:
    """Check that ``path`` is a readable Delphes file with every needed branch and at least one event."""
    tree = _open_tree(path)
    missing = [
        branch_name(c, f) for c, fields in REQUIRED_FIELDS.items() for f in fields if branch_name(c, f) not in tree
    ]
    if missing:
        raise DelphesInputError(f"{path}: missing branches in tree '{TREE_NAME}': {', '.join(missing)}")
    n = int(tree.num_entries)
    if n == 0:
        raise DelphesInputError(f"{path}: tree '{TREE_NAME}' has no events")
    return FileInfo(path, n)


def _collection_array(path: str, collection: str, arrays: dict) -> pa.Array:
    children, offsets = [], None
    for field in REQUIRED_FIELDS[collection]:
        name = branch_name(collection, field)
        layout = ak.to_packed(arrays[name]).layout
        off = np.asarray(layout.offsets.data, dtype=np.int64)
        values = np.asarray(layout.content.data)
        if offsets is None:
            offsets = off
        elif not np.array_equal(off, offsets):
            raise DelphesInputError(f"{path}: branch {name} has a different multiplicity than {collection}")
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            bad = np.flatnonzero(~np.isfinite(values))
            first = int(np.searchsorted(off, bad[0], side="right") - 1)
            raise DelphesInputError(
                f"{path}: branch {name} has {len(bad)} NaN/inf value(s) (first in entry {arrays['_entry0'] + first})"
            )
        arrow_type = _arrow_type(field)
        children.append(
            pa.ListArray.from_arrays(
                pa.array(off.astype(np.int32)), pa.array(values.astype(arrow_type.to_pandas_dtype(), copy=False))
            ).cast(collection_type(collection).field(field).type)
        )
    return pa.StructArray.from_arrays(children, fields=list(collection_type(collection)))


def read_batches(
    path: str,
    sample: str,
    partition_key: str,
    entry_start: int,
    entry_stop: int,
    step: int = 2000,
):
    """Yield ``RAW_SCHEMA`` record batches of entries [entry_start, entry_stop) of one file."""
    tree = _open_tree(path)
    branches = [branch_name(c, f) for c, fields in REQUIRED_FIELDS.items() for f in fields]
    label = SAMPLES[sample]
    for start in range(entry_start, entry_stop, step):
        stop = min(start + step, entry_stop)
        try:
            arrays = tree.arrays(branches, entry_start=start, entry_stop=stop, how=dict)
        except Exception as exc:
            raise DelphesInputError(
                f"{path}: cannot read entries {start}-{stop} ({type(exc).__name__}: {exc}); "
                "the file may be truncated"
            ) from None
        n = stop - start
        arrays["_entry0"] = start
        columns = [
            pa.array([sample] * n, pa.string()),
            pa.array(np.full(n, label, np.int32)),
            pa.array([path] * n, pa.string()),
            pa.array(np.arange(start, stop, dtype=np.int64)),
            pa.array([partition_key] * n, pa.string()),
            *(_collection_array(path, c, arrays) for c in REQUIRED_FIELDS),
        ]
        yield pa.RecordBatch.from_arrays(columns, schema=RAW_SCHEMA)
