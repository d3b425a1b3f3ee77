"""The garbage collector: dependents whose owners are all gone are deleted (in the background), and
foreground deletion waits for an owner's dependents before it removes the owner."""

from __future__ import annotations

import copy

from ..deletion import has_dependents
from ..errors import ApiError
from .common import (
    ControllerBase,
)


class GarbageCollector(ControllerBase):
    def sync(self) -> None:
        c = self.c
        uids: dict[str, dict] = {}
        for r in c.data:
            for o in c.data[r].values():
                uids[o["metadata"]["uid"]] = o
        for r in list(c.data):
            for o in list(c.data[r].values()):
                refs = o["metadata"].get("ownerReferences")
                if refs:
                    owners = [uids.get(ref.get("uid")) for ref in refs]
                    if all(ow is None for ow in owners):
                        if not o["metadata"].get("deletionTimestamp"):
                            self._delete(r, o)
                        continue
                    if any(ow is not None and ow["metadata"].get("deletionTimestamp") and
                           "foregroundDeletion" in (ow["metadata"].get("finalizers") or []) for ow in owners):
                        if not o["metadata"].get("deletionTimestamp"):
                            try:
                                c.delete(r, o["metadata"].get("namespace", ""), o["metadata"]["name"],
                                         {"propagationPolicy": "Foreground"}, internal=True)
                            except ApiError:
                                pass
                fins = o["metadata"].get("finalizers") or []
                if "foregroundDeletion" in fins and o["metadata"].get("deletionTimestamp"):
                    if not has_dependents(c, o):
                        new = copy.deepcopy(o)
                        new["metadata"]["finalizers"] = [f for f in fins if f != "foregroundDeletion"]
                        self._update(r, new)
