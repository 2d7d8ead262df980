"""Hand-made Delphes events for edge-case tests, as raw Arrow batches and reference-event dicts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from lhc_assets.physics.delphes_reader import RAW_SCHEMA, collection_type
from lhc_assets.physics.schema import REQUIRED_FIELDS, field_dtype


def empty_event() -> dict[str, list]:
    ev = {f"{c}.{f}": [] for c, fields in REQUIRED_FIELDS.items() for f in fields}
    ev["MissingET.MET"] = [20.0]
    ev["MissingET.Phi"] = [0.5]
    return ev


def add(ev: dict, collection: str, **fields) -> dict:
    """Append one object to a collection; unspecified fields get neutral defaults."""
    for f in REQUIRED_FIELDS[collection]:
        ev[f"{collection}.{f}"].append(fields.get(f, 0))
    return ev


def add_lepton(ev: dict, collection: str, pt: float, eta: float, phi: float, charge: int = -1) -> dict:
    """A reconstructed lepton and, as in Delphes, its track."""
    add(ev, collection, PT=pt, Eta=eta, Phi=phi, Charge=charge)
    pid = (11 if collection == "Electron" else 13) * -charge
    return add(ev, "EFlowTrack", PT=pt, Eta=eta, Phi=phi, PID=pid, Charge=charge)


def to_reference(ev: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=field_dtype(k.split(".")[1])) for k, v in ev.items()}


def to_batch(events: list[dict], sample: str = "ttbar", key: str = "ttbar/handmade") -> pa.RecordBatch:
    n = len(events)
    columns = [
        pa.array([sample] * n), pa.array(np.full(n, 1, np.int32)), pa.array(["handmade.root"] * n),
        pa.array(np.arange(n, dtype=np.int64)), pa.array([key] * n),
    ]
    for coll, fields in REQUIRED_FIELDS.items():
        children = []
        for f in fields:
            t = collection_type(coll).field(f).type
            children.append(pa.array([list(ev[f"{coll}.{f}"]) for ev in events], type=t))
        columns.append(pa.StructArray.from_arrays(children, fields=list(collection_type(coll))))
    return pa.RecordBatch.from_arrays(columns, schema=RAW_SCHEMA)
