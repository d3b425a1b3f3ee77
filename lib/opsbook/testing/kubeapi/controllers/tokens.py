"""The legacy ServiceAccount token controller of kube-controller-manager, as clusters before v1.24 run it
(and v1.24-v1.25 with the feature gate ``LegacyServiceAccountTokenNoAutoGeneration=false``): every
ServiceAccount gets a Secret of type ``kubernetes.io/service-account-token`` named
``<sa>-token-<5 random>``, referenced in the ServiceAccount's ``secrets``; when that Secret is deleted
while its ServiceAccount exists, the reference is dropped and a new one is issued, a moment later.
It also fills in token Secrets created by hand (token, ca.crt, namespace, the SA's uid annotation) and
deletes token Secrets whose ServiceAccount is gone.

Off by default (v1.24+ clusters do not auto-create token Secrets): a test switches it on, for some
namespaces or everywhere, through the admin endpoint ``/_opsbook/token-controller``
(``KubeApi.set_token_controller``). The token is a random opaque string, not a signed JWT.
"""

from __future__ import annotations

import base64
import copy
import secrets
import weakref
from dataclasses import dataclass, field
from typing import Any

from ..resources import res
from ..store import Cluster
from .common import NSS, ControllerBase

SAS = res("v1", "serviceaccounts")
SECRETS = res("v1", "secrets")
CMS = res("v1", "configmaps")
TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME = "kubernetes.io/service-account.name"
SA_UID = "kubernetes.io/service-account.uid"


@dataclass
class TokenSettings:
    """Where the controller runs: everywhere, or in the namespaces named."""

    everywhere: bool = False
    namespaces: set[str] = field(default_factory=set)

    def covers(self, ns: str) -> bool:
        return self.everywhere or ns in self.namespaces

    def update(self, enabled: bool, namespaces: list[str] | None) -> None:
        if namespaces is None:
            self.everywhere = enabled
            if not enabled:
                self.namespaces.clear()
        elif enabled:
            self.namespaces |= set(namespaces)
        else:
            self.namespaces -= set(namespaces)

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.everywhere or bool(self.namespaces), "everywhere": self.everywhere,
                "namespaces": sorted(self.namespaces)}


_SETTINGS: weakref.WeakKeyDictionary[Cluster, TokenSettings] = weakref.WeakKeyDictionary()


def token_settings(c: Cluster) -> TokenSettings:
    """The token controller's settings of cluster ``c`` (the admin endpoint changes them)."""
    return _SETTINGS.setdefault(c, TokenSettings())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class TokenController(ControllerBase):
    def sync(self) -> None:
        st = token_settings(self.c)
        if not (st.everywhere or st.namespaces):
            return
        c = self.c
        live = {ns["metadata"]["name"] for ns in c.objects(NSS) if not ns["metadata"].get("deletionTimestamp")}
        sas = {(sa["metadata"]["namespace"], sa["metadata"]["name"]): sa for sa in c.objects(SAS)
               if st.covers(sa["metadata"]["namespace"])}
        tokens = [s for s in c.objects(SECRETS) if s.get("type") == TOKEN_TYPE and st.covers(s["metadata"]["namespace"])]
        for sec in tokens:
            self._sync_secret(sec, sas)
        for (ns, _), sa in sas.items():
            if ns in live and not sa["metadata"].get("deletionTimestamp"):
                self._ensure_referenced_token(sa)

    def _owner(self, sec: dict, sas: dict) -> dict | None:
        ann = sec["metadata"].get("annotations") or {}
        sa = sas.get((sec["metadata"]["namespace"], ann.get(SA_NAME, "")))
        if sa is None or (ann.get(SA_UID) and ann[SA_UID] != sa["metadata"]["uid"]):
            return None
        return sa

    def _sync_secret(self, sec: dict, sas: dict) -> None:
        """A token Secret of a ServiceAccount that is gone is deleted; one that lacks data is filled in."""
        if sec["metadata"].get("deletionTimestamp"):
            return
        sa = self._owner(sec, sas)
        if sa is None:
            self._delete(SECRETS, sec)
            return
        data = sec.get("data") or {}
        ns = sec["metadata"]["namespace"]
        want = {"ca.crt": self._root_ca(ns), "namespace": _b64(ns)}
        missing = {k: v for k, v in want.items() if not data.get(k)}
        ann = sec["metadata"].get("annotations") or {}
        if not missing and data.get("token") and ann.get(SA_UID) == sa["metadata"]["uid"]:
            return
        new = copy.deepcopy(sec)
        new["data"] = {**data, **missing, **({} if data.get("token") else {"token": _b64(secrets.token_urlsafe(32))})}
        new["metadata"]["annotations"] = {**ann, SA_NAME: sa["metadata"]["name"], SA_UID: sa["metadata"]["uid"]}
        self._update(SECRETS, new)

    def _ensure_referenced_token(self, sa: dict) -> None:
        """Drop references to Secrets that are gone; with no referenced token left, issue a new one."""
        ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
        refs = [r.get("name") for r in sa.get("secrets") or []]
        kept = [r for r in sa.get("secrets") or [] if self.c.raw(SECRETS, ns, r.get("name", "")) is not None]
        if len(kept) != len(refs):
            new = copy.deepcopy(sa)
            new["secrets"] = kept
            if not kept:
                new.pop("secrets")
            sa = self._update(SAS, new) or sa
        if any(self._is_token_of(self.c.raw(SECRETS, ns, r.get("name", "")), sa) for r in kept):
            return
        created = self._create(SECRETS, ns, {
            "metadata": {"generateName": f"{name}-token-",
                         "annotations": {SA_NAME: name, SA_UID: sa["metadata"]["uid"]}},
            "type": TOKEN_TYPE,
            "data": {"token": _b64(secrets.token_urlsafe(32)), "ca.crt": self._root_ca(ns), "namespace": _b64(ns)}})
        if created is None:
            return
        new = copy.deepcopy(sa)
        new["secrets"] = [*kept, {"name": created["metadata"]["name"]}]
        if self._update(SAS, new) is None:  # as the real controller: a token it cannot reference goes
            self._delete(SECRETS, created)

    @staticmethod
    def _is_token_of(sec: dict | None, sa: dict) -> bool:
        if sec is None or sec.get("type") != TOKEN_TYPE:
            return False
        ann = sec["metadata"].get("annotations") or {}
        return ann.get(SA_NAME) == sa["metadata"]["name"] and ann.get(SA_UID, sa["metadata"]["uid"]) == sa["metadata"]["uid"]

    def _root_ca(self, ns: str) -> str:
        """The cluster's CA as the root-CA publisher put it into the namespace (base64, as Secret data)."""
        cm = self.c.raw(CMS, ns, "kube-root-ca.crt") or {}
        return _b64((cm.get("data") or {}).get("ca.crt") or "")
