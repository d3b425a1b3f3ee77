"""The namespace controller: a deleted namespace is emptied, then goes; every namespace gets its
default service account and root CA config map."""

from __future__ import annotations

from ..errors import ApiError
from .common import (
    NSS,
    ControllerBase,
)


class NamespaceController(ControllerBase):
    def sync(self) -> None:
        c = self.c
        for nso in list(c.objects(NSS)):
            name = nso["metadata"]["name"]
            if nso["metadata"].get("deletionTimestamp"):
                remaining = 0
                for r in list(c.data):
                    if not r.namespaced:
                        continue
                    for o in [o for o in c.data[r].values() if o["metadata"].get("namespace") == name]:
                        remaining += 1
                        if not o["metadata"].get("deletionTimestamp"):
                            try:
                                c.delete(r, name, o["metadata"]["name"], {}, internal=True)
                            except ApiError:
                                pass
                if remaining == 0 or not any(o["metadata"].get("namespace") == name
                                             for r in c.data if r.namespaced for o in c.data[r].values()):
                    c.drop(NSS, nso)
                continue
            c.namespace_defaults(name)
