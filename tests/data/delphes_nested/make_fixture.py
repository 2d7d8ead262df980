"""Build a Delphes-3.4-style *nested* (TClonesArray, split 99) ROOT test fixture.

Why this script exists
----------------------
Real Delphes output files store every collection (``Muon``, ``Jet``, ...) as a
``TClonesArray`` branch written with split level 99, so each data member becomes
its own sub-branch.  uproot then shows keys such as ``Muon``, ``Muon/Muon.PT``,
``Muon/Muon.Eta`` plus the explicit ``Muon_size`` counter that Delphes'
``ExRootTreeBranch`` adds.  uproot (which the project uses) can only *write* flat
branches, so the project cannot produce that layout itself.  This script uses
real ROOT (PyROOT) to convert the project's own flat-layout generator output
into the nested layout, and records reference values read back *with ROOT*
(PyROOT TTree/TClonesArray reading, not uproot) in a JSON sidecar, so tests can
compare the project's uproot-based reader against an independent implementation.

It is NOT run by the test suite (ROOT is not a project dependency); the
resulting ``ttbar_muon_nested.root`` and ``ttbar_muon_nested.json`` are
committed.

How it was run
--------------
ROOT came from the PyPI wheel ``root-0.1a12-cp311-cp311-manylinux_2_28_x86_64.whl``
(``pip download --no-deps ROOT``; ROOT 6.40.00, alpha-stage distribution),
installed in a separate virtualenv, never in the project's ``.venv``::

    python3.11 -m venv /tmp/rootenv
    /tmp/rootenv/bin/pip install root-0.1a12-cp311-cp311-manylinux_2_28_x86_64.whl numpy uproot awkward

Source events come from the project's own generator (flat layout)::

    cd /work/main && .venv/bin/lhc-generate --out /tmp/nested_src \\
        --events-per-file 40 --files-per-sample 1 --seed 11 --samples ttbar --quiet

Then::

    cd /work/main/tests/data/delphes_nested && /tmp/rootenv/bin/python make_fixture.py \\
        /tmp/nested_src/ttbar/ttbar_seed11_0000.root --max-events 20 \\
        --out ttbar_muon_nested.root --json ttbar_muon_nested.json

Only the first 20 of the 40 generated events are converted: the EFlow
collections are large (about 1300 tracks+towers per event) and the float values
barely compress, so 40 events gave 1.17 MB and 30 events 0.86 MB (ZLIB 9, LZMA
and ZSTD each save only 2-7 %), while 20 events give about 0.57 MB.

Layout written
--------------
TTree ``Delphes`` (title "Analysis tree"); per collection one TClonesArray
branch (``tree.Branch(name, clonesarray, 64000, 99)``) plus an ``Int_t`` branch
``<Collection>_size``.  Classes are minimal stand-ins for the Delphes classes
(``Track``, ``Tower``, ``Electron``, ``Muon``, ``Jet``, ``MissingET``), deriving
from ``TObject`` with ``ClassDef`` (hence the extra ``fUniqueID``/``fBits``
sub-branches, as in real files).  The source collection ``MuonTight`` is written
as ``Muon`` (the name a standard Delphes card uses).  Fields missing in the
source are filled with 0.  Compression: ZLIB level 1 (setting 101, the TFile
default of this ROOT build and what Delphes files normally carry).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import uproot

# (output collection, source collection, class name, [(field, C++ type), ...])
COLLECTIONS = [
    (
        "EFlowTrack",
        "EFlowTrack",
        "Track",
        [
            ("PID", "Int_t"),
            ("Charge", "Int_t"),
            ("PT", "Float_t"),
            ("Eta", "Float_t"),
            ("Phi", "Float_t"),
            ("X", "Float_t"),
            ("Y", "Float_t"),
            ("Z", "Float_t"),
            ("D0", "Float_t"),
            ("DZ", "Float_t"),
            ("T", "Float_t"),
        ],
    ),
    (
        "EFlowPhoton",
        "EFlowPhoton",
        "Tower",
        [("ET", "Float_t"), ("Eta", "Float_t"), ("Phi", "Float_t"), ("E", "Float_t"), ("EhadOverEem", "Float_t")],
    ),
    ("EFlowNeutralHadron", "EFlowNeutralHadron", "Tower", None),  # same class as EFlowPhoton
    (
        "Electron",
        "Electron",
        "Electron",
        [
            ("PT", "Float_t"),
            ("Eta", "Float_t"),
            ("Phi", "Float_t"),
            ("Charge", "Int_t"),
            ("EhadOverEem", "Float_t"),
            ("IsolationVar", "Float_t"),
        ],
    ),
    (
        "Muon",
        "MuonTight",
        "Muon",
        [("PT", "Float_t"), ("Eta", "Float_t"), ("Phi", "Float_t"), ("Charge", "Int_t"), ("IsolationVar", "Float_t")],
    ),
    ("MissingET", "MissingET", "MissingET", [("MET", "Float_t"), ("Eta", "Float_t"), ("Phi", "Float_t")]),
    (
        "Jet",
        "Jet",
        "Jet",
        [
            ("PT", "Float_t"),
            ("Eta", "Float_t"),
            ("Phi", "Float_t"),
            ("Mass", "Float_t"),
            ("BTag", "Int_t"),
            ("TauTag", "Int_t"),
            ("NCharged", "Int_t"),
            ("NNeutrals", "Int_t"),
        ],
    ),
]


def _class_fields() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for _coll, _src, cls, fields in COLLECTIONS:
        if fields is not None:
            out[cls] = fields
    return out


def _collection_fields(cls: str) -> list[tuple[str, str]]:
    return _class_fields()[cls]


def declare_classes(ROOT) -> None:
    """Declare the Delphes-like classes, plus a C++ filler per class."""
    code = ['#include "TObject.h"', '#include "TClonesArray.h"']
    for cls, fields in _class_fields().items():
        members = "\n".join(f"  {ctype} {name};" for name, ctype in fields)
        init = ", ".join(f"{name}(0)" for name, _ in fields)
        code.append(
            f"class {cls} : public TObject {{\npublic:\n  {cls}() : {init} {{}}\n{members}\n  ClassDef({cls}, 1)\n}};"
        )
        # filler: append n objects to the clones array from flat C arrays
        args = ", ".join(f"const {'int' if ctype == 'Int_t' else 'float'}* a_{name}" for name, ctype in fields)
        sets = "\n".join(f"    o->{name} = a_{name}[i];" for name, _ in fields)
        code.append(
            f"void fill_{cls}(TClonesArray* ca, int n, {args}) {{\n"
            f"  ca->Clear();\n  for (int i = 0; i < n; ++i) {{\n"
            f"    {cls}* o = static_cast<{cls}*>(ca->ConstructedAt(i));\n{sets}\n  }}\n}}"
        )
    ok = ROOT.gInterpreter.Declare("\n\n".join(code))
    if not ok:
        raise RuntimeError("gInterpreter.Declare of the Delphes-like classes failed")


def read_source(path: str, max_events: int | None):
    tree = uproot.open(path)["Delphes"]
    n = tree.num_entries if max_events is None else min(max_events, tree.num_entries)
    src_keys = set(tree.keys())
    data = {}
    for coll, src, cls, _ in COLLECTIONS:
        fields = _collection_fields(cls)
        sizes = tree[f"{src}_size"].array(library="np", entry_stop=n).astype(np.int32)
        per_field = {}
        for name, ctype in fields:
            dtype = np.int32 if ctype == "Int_t" else np.float32
            key = f"{src}.{name}"
            if key in src_keys:
                jag = tree[key].array(library="np", entry_stop=n)
                per_field[name] = [np.ascontiguousarray(x, dtype=dtype) for x in jag]
            else:
                print(f"note: source lacks {key}; filling {coll}.{name} with 0", file=sys.stderr)
                per_field[name] = [np.zeros(int(s), dtype=dtype) for s in sizes]
        for name, arrs in per_field.items():
            for i, a in enumerate(arrs):
                if len(a) != sizes[i]:
                    raise ValueError(f"{src}.{name} event {i}: {len(a)} != {src}_size {sizes[i]}")
        data[coll] = (sizes, per_field)
    return n, data


def write_nested(ROOT, out_path: str, n_events: int, data, compression: int) -> None:
    f = ROOT.TFile(out_path, "RECREATE", "", compression)
    tree = ROOT.TTree("Delphes", "Analysis tree")
    keep = []
    arrays = {}
    sizes_buf = {}
    for coll, _src, cls, _ in COLLECTIONS:
        ca = ROOT.TClonesArray(cls)
        arrays[coll] = ca
        tree.Branch(coll, ca, 64000, 99)
        buf = np.zeros(1, dtype=np.int32)
        sizes_buf[coll] = buf
        tree.Branch(f"{coll}_size", buf, f"{coll}_size/I")
        keep.append((ca, buf))
    for ev in range(n_events):
        for coll, _src, cls, _ in COLLECTIONS:
            sizes, per_field = data[coll]
            n = int(sizes[ev])
            args = [per_field[name][ev] for name, _ in _collection_fields(cls)]
            # cppyy cannot turn a zero-length numpy array into a pointer; n == 0 never reads it
            args = [a if len(a) else np.zeros(1, dtype=a.dtype) for a in args]
            getattr(ROOT, f"fill_{cls}")(arrays[coll], n, *args)
            sizes_buf[coll][0] = n
        tree.Fill()
    tree.Write()
    f.Close()


def reference_from_root(ROOT, path: str) -> dict:
    """Independent reference: read back with PyROOT (TTree + TClonesArray objects)."""
    f = ROOT.TFile.Open(path)
    tree = f.Get("Delphes")
    ref: dict = {"entries": int(tree.GetEntries()), "tree": "Delphes", "collections": {}}
    acc = {}
    for coll, _src, cls, _ in COLLECTIONS:
        fields = _collection_fields(cls)
        acc[coll] = {
            "class": cls,
            "n_objects": 0,
            "size_branch_sum": 0,
            "float_sums": {name: 0.0 for name, t in fields if t == "Float_t"},
            "int_sums": {name: 0 for name, t in fields if t == "Int_t"},
        }
    for i in range(tree.GetEntries()):
        tree.GetEntry(i)
        for coll, _src, cls, _ in COLLECTIONS:
            a = acc[coll]
            ca = getattr(tree, coll)
            n = ca.GetEntriesFast()
            size = int(getattr(tree, f"{coll}_size"))
            if size != n:
                raise AssertionError(f"{coll}_size={size} but TClonesArray has {n} (entry {i})")
            a["n_objects"] += n
            a["size_branch_sum"] += size
            for j in range(n):
                o = ca.At(j)
                if type(o).__name__ != cls:  # make sure we really have the class, not TObject
                    o = ROOT.BindObject(ROOT.AddressOf(o)[0], cls)
                for name in a["float_sums"]:
                    a["float_sums"][name] += float(getattr(o, name))
                for name in a["int_sums"]:
                    a["int_sums"][name] += int(getattr(o, name))
    f.Close()
    ref["collections"] = acc
    return ref


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="flat-layout ROOT file from lhc-generate")
    p.add_argument("--out", default="ttbar_muon_nested.root")
    p.add_argument("--json", default="ttbar_muon_nested.json")
    p.add_argument("--max-events", type=int, default=None)
    p.add_argument(
        "--compression",
        type=int,
        default=101,
        help="ROOT compression setting (algorithm*100+level); 101 = ZLIB level 1",
    )
    args = p.parse_args(argv)

    import ROOT  # the ROOT wheel, from the separate venv (not a project dependency)

    ROOT.gROOT.SetBatch(True)
    declare_classes(ROOT)
    n_events, data = read_source(args.source, args.max_events)
    write_nested(ROOT, args.out, n_events, data, args.compression)
    ref = reference_from_root(ROOT, args.out)
    ref["source"] = {
        "file": os.path.basename(args.source),
        "muon_source_collection": "MuonTight",
        "generator_command": "lhc-generate --events-per-file 40 --files-per-sample 1 --seed 11 --samples ttbar",
        "events_used": f"first {n_events}",
    }
    ref["root_version"] = ROOT.gROOT.GetVersion()
    ref["written_with"] = "root-0.1a12 PyPI wheel (PyROOT), TClonesArray split 99"
    ref["compression"] = args.compression
    with open(args.json, "w") as fh:
        json.dump(ref, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {n_events} events) and {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
