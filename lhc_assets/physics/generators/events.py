"""The unit both event engines produce and the ROOT writer consumes: a batch of events as flat arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EventBatch:
    """Events of one batch as flat per-collection arrays plus per-event multiplicities.

    ``fields[collection][field]`` holds the values of every object of the batch, event after event;
    ``counts[collection]`` the number of objects per event. The writer stores every field given, so an
    engine decides which of the extra Delphes fields (beyond ``schema.REQUIRED_FIELDS``) it fills.
    """

    n_events: int
    counts: dict[str, np.ndarray]
    fields: dict[str, dict[str, np.ndarray]]

    def to_awkward(self) -> dict:
        """Collections as awkward record arrays, the form ``uproot`` writes as jagged branches."""
        import awkward as ak

        return {
            coll: ak.zip(
                {f: ak.unflatten(arr, self.counts[coll]) for f, arr in self.fields[coll].items()},
                depth_limit=2,
            )
            for coll in self.fields
        }
