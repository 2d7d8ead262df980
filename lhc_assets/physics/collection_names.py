"""Which Delphes collection fills each role of raw_events: the names a user chose explicitly.

Collection names depend on the Delphes card (``Muon`` or ``MuonTight``, ``Jet`` or ``JetPUPPI``, ...). The
collections of ``schema.REQUIRED_FIELDS`` are roles, addressed by the keys of ``schema.COLLECTION_ROLES``
(``tracks``, ``photons``, ``neutral_hadrons``, ``electron``, ``muon``, ``jet``, ``missing_et``). A
``CollectionNames`` holds only the explicit choices; a role left unset reads the first of its well-known
names (``schema.COLLECTION_CANDIDATES``) the file has. Matching the choices against a file is the reader's
job (``delphes_reader.resolve_collections``). Pure code: no Dagster, no Spark, no uproot.

Choices come as ``role=collection`` lists (``"muon=Muon,jet=JetPUPPI"``): the ``LHC_DELPHES_COLLECTIONS``
environment variable, the ``collections`` option of the ``delphes`` data source. Invalid values raise
``CollectionConfigError`` naming where they came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Final

from lhc_assets.physics.schema import COLLECTION_ROLES

ENV_VAR: Final = "LHC_DELPHES_COLLECTIONS"
EXAMPLE: Final = "muon=Muon,jet=JetPUPPI"
# ROOT branch names of Delphes collections are C++-identifier-like; anything else (a dot, a slash, a
# space) is a typo such as a field name given for a collection.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CollectionConfigError(ValueError):
    """A collection choice is malformed; the message names where it came from and what is wrong."""


@dataclass(frozen=True)
class CollectionNames:
    """Collection names chosen explicitly per role key; ``None`` = the defaults with fallback."""

    tracks: str | None = None
    photons: str | None = None
    neutral_hadrons: str | None = None
    electron: str | None = None
    muon: str | None = None
    jet: str | None = None
    missing_et: str | None = None

    def explicit(self) -> dict[str, str]:
        """Role key -> the name chosen for it, for the roles chosen explicitly."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def override(self, other: CollectionNames) -> CollectionNames:
        """These choices with ``other``'s explicit ones on top."""
        return replace(self, **other.explicit())

    @classmethod
    def from_mapping(cls, values: Mapping[str, str | None], source: str) -> CollectionNames:
        """Validated choices from ``{role key: name or None}``; ``source`` names the setting in errors."""
        unknown = sorted(set(values) - set(COLLECTION_ROLES))
        if unknown:
            raise CollectionConfigError(
                f"{source}: unknown role {', '.join(map(repr, unknown))} (roles: {', '.join(COLLECTION_ROLES)})")
        chosen = {}
        for key, name in values.items():
            if name is None:
                continue
            if not isinstance(name, str) or not name.strip():
                raise CollectionConfigError(f"{source}: empty collection name for {key}")
            if not _NAME.fullmatch(name.strip()):
                raise CollectionConfigError(
                    f"{source}: {name!r} for {key} is not a collection name (letters, digits and '_', "
                    "e.g. 'Muon'; fields are not named here)")
            chosen[key] = name.strip()
        return cls(**chosen)

    @classmethod
    def parse(cls, text: str, source: str = ENV_VAR) -> CollectionNames:
        """Choices from ``"role=collection,..."``; an empty or blank text chooses nothing."""
        values: dict[str, str] = {}
        for item in (i.strip() for i in text.split(",")):
            if not item:
                continue  # "muon=Muon," or a blank value
            role, sep, name = (p.strip() for p in item.partition("="))
            if not sep or not role:
                raise CollectionConfigError(
                    f"{source}: {item!r} is not role=collection (expected e.g. {EXAMPLE!r})")
            if role in values:
                raise CollectionConfigError(f"{source}: {role} is named twice")
            values[role] = name
        return cls.from_mapping(values, source)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CollectionNames:
        """The choices of ``LHC_DELPHES_COLLECTIONS``, read now (so every run sees the current value)."""
        return cls.parse((os.environ if environ is None else environ).get(ENV_VAR, ""), ENV_VAR)


assert tuple(f.name for f in fields(CollectionNames)) == tuple(COLLECTION_ROLES), "role keys out of sync"
