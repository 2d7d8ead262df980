"""Reading Delphes ROOT files into Arrow record batches (uproot + pyarrow; no Spark).

Only the collections and fields of DESIGN.md section 3 are read; every other branch in the file is
pruned. Every problem with an input file is raised as ``DelphesInputError`` whose message starts with
the file path and says what is wrong.

Collection names differ between Delphes cards, so each role of ``schema.REQUIRED_FIELDS`` (the canonical
raw_events column) is first resolved to the collection the file holds (``resolve_collections``): a name
chosen explicitly must be there; a role left at its default reads the first of its well-known names
present, with a warning when that is not the study's name. A file's collections are found by leaf name
(``Muon.PT``), which uproot reports the same way for the nested TClonesArray layout of real Delphes files
(branch ``Muon`` with sub-branches ``Muon/Muon.PT``, ...) and the flat layout the generator writes; the bare
``Muon`` is itself a branch in the nested layout (an int32 counter), so it does not count as the collection.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import awkward as ak
import numpy as np
import pyarrow as pa

from lhc_assets.physics.collection_names import ENV_VAR, CollectionNames
from lhc_assets.physics.schema import (
    COLLECTION_CANDIDATES,
    COLLECTION_ROLES,
    REQUIRED_FIELDS,
    SAMPLES,
    TREE_NAME,
    branch_name,
    field_dtype,
)

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
    collections: dict[str, str]  # role (raw_events column) -> the file's collection read for it
    warnings: tuple[str, ...]  # roles that fell back to another well-known collection


def _present_collections(leaf_names: Iterable[str]) -> set[str]:
    """Collections with at least one ``Coll.Field`` leaf (never the bare ``Coll`` branch of the nested layout)."""
    return {name.split(".", 1)[0] for name in leaf_names if "." in name}


def _resolve(leaf_names: Iterable[str], names: CollectionNames) -> tuple[dict, list, list]:
    """(role -> collection, warnings, problems) for one file; problems are messages without the path."""
    present = _present_collections(leaf_names)
    chosen = names.explicit()
    mapping, warnings, problems, absent = {}, [], [], []
    for key, role in COLLECTION_ROLES.items():
        candidates = COLLECTION_CANDIDATES[role]
        if key in chosen:  # an explicit choice is a statement of intent: never second-guessed
            if chosen[key] in present:
                mapping[role] = chosen[key]
                continue
            alternatives = [c for c in candidates if c in present and c != chosen[key]]
            hint = (f"the file has {', '.join(alternatives)} (set {key}={alternatives[0]}, or leave {key} unset "
                    f"to read the first of {', '.join(candidates)} present)" if alternatives
                    else f"the file has none of {', '.join(candidates)} either")
            problems.append(f"{key} collection {chosen[key]!r} (chosen explicitly) is not in tree "
                            f"'{TREE_NAME}'; {hint}")
            continue
        found = next((c for c in candidates if c in present), None)
        if found is None:
            absent.append(f"{key} (looked for {', '.join(candidates)})")
            continue
        mapping[role] = found
        if found != candidates[0]:
            warnings.append(f"{key}: {candidates[0]!r} not in the file, read {found!r}")
    if absent:
        problems.append(f"missing collections in tree '{TREE_NAME}': {', '.join(absent)}; if the file names them "
                        f"otherwise, choose them as role=collection ({ENV_VAR}, the ingestion's 'collections' "
                        "config or the delphes data source's options)")
    return mapping, warnings, problems


def resolve_collections(
    path: str, leaf_names: Iterable[str], names: CollectionNames | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The collection of the file filling each role, and a warning per role that fell back.

    ``leaf_names`` are the file's leaf names (``tree.keys(recursive=True, full_paths=False)``). A name in
    ``names`` must be in the file; a role left unset reads the first of ``COLLECTION_CANDIDATES`` the file
    has. Raises ``DelphesInputError`` naming the file, the roles and the names looked for.
    """
    mapping, warnings, problems = _resolve(leaf_names, names or CollectionNames())
    if problems:
        raise DelphesInputError(f"{path}: {'; '.join(problems)}")
    return mapping, warnings


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


def inspect_file(path: str, collections: CollectionNames | None = None) -> FileInfo:
    """Check that ``path`` is a readable Delphes file with a collection for every role, every needed
    field of it and at least one event; resolve the roles with the explicit choices ``collections``."""
    tree = _open_tree(path)
    try:
        leaves = set(tree.keys(recursive=True, full_paths=False))
    except Exception as exc:
        raise DelphesInputError(
            f"{path}: ROOT file is damaged or truncated ({type(exc).__name__}: {exc})") from None
    mapping, warnings, problems = _resolve(leaves, collections or CollectionNames())
    missing = [branch_name(mapping[c], f) for c, fields in REQUIRED_FIELDS.items() if c in mapping
               for f in fields if branch_name(mapping[c], f) not in leaves]
    if missing:
        problems.append(f"missing branches in tree '{TREE_NAME}': {', '.join(missing)}")
    if problems:
        raise DelphesInputError(f"{path}: {'; '.join(problems)}")
    n = int(tree.num_entries)
    if n == 0:
        raise DelphesInputError(f"{path}: tree '{TREE_NAME}' has no events")
    return FileInfo(path, n, mapping, tuple(warnings))


def _collection_array(path: str, collection: str, actual: str, arrays: dict) -> pa.Array:
    """Role ``collection`` from the branches of the file's collection ``actual``."""
    children, offsets = [], None
    for field in REQUIRED_FIELDS[collection]:
        name = branch_name(actual, field)
        layout = ak.to_packed(arrays[name]).layout
        off = np.asarray(layout.offsets.data, dtype=np.int64)
        values = np.asarray(layout.content.data)
        if offsets is None:
            offsets = off
        elif not np.array_equal(off, offsets):
            raise DelphesInputError(f"{path}: branch {name} has a different multiplicity than {actual}")
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
    collections: Mapping[str, str] | None = None,
):
    """Yield ``RAW_SCHEMA`` record batches of entries [entry_start, entry_stop) of one file.

    ``collections`` maps a role (raw_events column, e.g. ``MuonTight``) to the collection of the file
    that fills it (``FileInfo.collections``); a role it leaves out is read under its own name.
    """
    unknown = set(collections or {}) - set(REQUIRED_FIELDS)
    if unknown:
        raise ValueError(f"unknown collection roles {sorted(unknown)}; roles are {list(REQUIRED_FIELDS)}")
    actual = {c: (collections or {}).get(c, c) for c in REQUIRED_FIELDS}
    tree = _open_tree(path)
    branches = [branch_name(actual[c], f) for c, fields in REQUIRED_FIELDS.items() for f in fields]
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
            *(_collection_array(path, c, actual[c], arrays) for c in REQUIRED_FIELDS),
        ]
        yield pa.RecordBatch.from_arrays(columns, schema=RAW_SCHEMA)
