"""What every phase of the incident shares: the run's :class:`Context` (the phases selected, the
accounts named, the quarantine's names, the clients, what earlier steps found), the parsing of
compromised accounts, and the skip conditions the step declarations are built from.

The phases run in separate runs of one incident (containment today, recovery tomorrow), so what a
step learns is kept on the context only for the steps after it *in this run*; what a later run
needs is saved as evidence (``ACCOUNTS_EVIDENCE``, ``SCALE_EVIDENCE``) and read back by recovery.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opsbook.errors import Invalid
from opsbook.ops import base

PHASES = ("identification", "evidence", "containment", "eradication", "recovery", "post-incident")
SEVERITIES = ("sev1", "sev2", "sev3", "sev4")
QUARANTINE_LABEL = "opsbook.io/quarantine"
POLICY_PREFIX = "opsbook-quarantine-"
TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_ANNOTATION = "kubernetes.io/service-account.name"
#: evidence that containment saves and recovery restores from (in this run or a later one)
ACCOUNTS_EVIDENCE = "containment/accounts-removed.json"
SCALE_EVIDENCE = "containment/scaled-down.json"
QUARANTINE_EVIDENCE = "containment/quarantine.json"


# ------------------------------------------------------------------------------------------ accounts


@dataclass(frozen=True)
class Account:
    """A compromised RBAC subject: a ServiceAccount (with its namespace), a User or a Group."""

    kind: str
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.namespace}/{self.name}" if self.namespace else f"{self.kind}:{self.name}"


_SA_FULL = re.compile(r"^system:serviceaccount:(?P<ns>[^:]+):(?P<name>[^:]+)$")


def parse_account(text: str, default_namespace: str) -> Account:
    """``NS/NAME`` or ``NAME`` (a ServiceAccount), ``system:serviceaccount:NS:NAME``,
    ``ServiceAccount:NS/NAME``, ``User:NAME``, ``Group:NAME``."""
    t = str(text).strip()
    if not t:
        raise Invalid("an empty account name")
    m = _SA_FULL.match(t)
    if m:
        return Account("ServiceAccount", m.group("name"), m.group("ns"))
    kind, sep, rest = t.partition(":")
    if sep and kind.lower() in ("user", "group"):
        return Account(kind.capitalize(), rest)
    if sep and kind.lower() in ("serviceaccount", "sa"):
        t = rest
    elif sep:
        raise Invalid(f"account {text!r}: expected NS/NAME, system:serviceaccount:NS:NAME, User:NAME or Group:NAME")
    ns, _, name = t.rpartition("/")
    return Account("ServiceAccount", name, ns or default_namespace)


def subject_matches(subject: Mapping[str, Any], account: Account) -> bool:
    """Whether a binding's subject is ``account`` (a ServiceAccount also as its ``system:serviceaccount``
    User name, which is how a token authenticates)."""
    kind, name = subject.get("kind"), subject.get("name")
    if account.kind == "ServiceAccount":
        if kind == "ServiceAccount":
            return name == account.name and (subject.get("namespace") or "") == account.namespace
        return kind == "User" and name == f"system:serviceaccount:{account.namespace}:{account.name}"
    return kind == account.kind and name == account.name


def label_value(text: str) -> str:
    """``text`` as a valid label value (<= 63 chars of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    v = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63].strip("._-")
    return v or "incident"


# ------------------------------------------------------------------------------------------- context


class Context(base.Context):
    """The incident as its steps see it. Settings are the notebook's parameters (``ctx.settings``);
    this adds what is derived from them and the target, the clients, and what the steps of this run
    found (set by identification and containment, read by the steps after them)."""

    def init(self) -> None:
        self.alerts: list[dict[str, Any]] = []  # identification: Prometheus's alerts
        self.pods: list[dict[str, Any]] | None = None  # the affected pods (None: not listed yet)
        self.bindings: list[dict[str, Any]] | None = None  # bindings naming an account (None: not read yet)
        self.bindings_error = ""  # why the bindings could not be read for the severity
        self.severity = ""  # as assessed (or given)
        self.disabled: list[dict[str, Any]] = []  # containment: what this run removed, for its own recovery
        self.scaled: dict[str, int] = {}  # containment: replica counts before this run's scale-down
        self._db: Any = None

    # -- what the settings mean -----------------------------------------------------------------
    @property
    def phases(self) -> tuple[str, ...]:
        """The phases asked for, in the handbook's order (``all``: every phase)."""
        asked = [str(p) for p in (self.settings.phases or PHASES)]
        bad = [p for p in asked if p not in PHASES and p != "all"]
        if bad:
            raise Invalid(f"phases {bad}: expected some of {', '.join(PHASES)} (or all)")
        return PHASES if "all" in asked else tuple(p for p in PHASES if p in asked)

    def wants(self, phase: str) -> bool:
        return phase in self.phases

    def accounts(self) -> list[Account]:
        return [parse_account(a, self.settings.namespace) for a in self.settings.compromised_accounts]

    @property
    def quarantine_value(self) -> str:
        return label_value(self.settings.incident_id)

    @property
    def policy_name(self) -> str:
        base_name = re.sub(r"[^a-z0-9-]+", "-", self.settings.incident_id.lower()).strip("-") or "incident"
        return (POLICY_PREFIX + base_name)[:63].rstrip("-")

    @property
    def production(self) -> bool:
        return bool(getattr(self.target, "production", False))

    @property
    def prometheus_url(self) -> str:
        """The parameter's, else the target's, else empty (alerts and error rate not read)."""
        url = self.settings.prometheus_url or getattr(self.target, "prometheus_url", None) or ""
        return str(url).rstrip("/")

    @property
    def backup_file(self) -> str:
        """The dump to restore, as a path the tools can open (empty: no restore)."""
        p = self.path("backup_file")
        return str(p) if p is not None else ""

    # -- clients -----------------------------------------------------------------------------------
    @property
    def kube(self) -> Any:
        return self.clients.kube

    @property
    def helm(self) -> Any:
        return self.clients.helm(self.settings.namespace)

    @property
    def prometheus(self) -> Any:
        url = self.prometheus_url
        return self.clients.prometheus(url, timeout=min(30.0, self.settings.timeout)) if url else None

    def db(self) -> Any:
        """The PostgreSQL server the dump is restored into (``clients.pgbackup.PgBackup``; a test
        hands one in as ``Clients(target, pgbackup=...)``)."""
        given = self.clients.given("pgbackup")
        if given is not None:
            return given
        if self._db is None:
            from opsbook.clients.pgbackup import PgBackup

            s = self.settings
            self._db = PgBackup(host=s.db_host, port=s.db_port, user=s.db_user, password=self._db_password(),
                                timeout=max(60.0, s.timeout))
        return self._db

    def _db_password(self) -> str | None:
        """The database password (a ``k8s:`` reference is read through the target's cluster)."""
        return self.secret("db_password") if self.settings.db_password else None

    # -- evidence ----------------------------------------------------------------------------------
    def save(self, name: str, content: Any, description: str) -> dict[str, Any]:
        """Save evidence into the record; the entry (name, bytes, sha256, description) is returned
        whether or not this context keeps evidence, so that a step's table is the same either way."""
        entry = self.evidence(name, content, description=description)
        if entry is None:
            return {"name": name, "bytes": 0, "sha256": "", "description": description + " (not saved: no record)"}
        return {"name": name, "bytes": None, "sha256": "", "description": description, **entry}


# -------------------------------------------------------------------------------- why a step is skipped

Reason = Callable[[Any], str | None]


def unless(*settings: str, why: str) -> Reason:
    """Skip with ``why`` unless every one of ``settings`` is set (true, non-empty, non-zero)."""
    return lambda ctx: None if all(getattr(ctx.settings, n) for n in settings) else why


def apply_needs_cluster(ctx: Any) -> str | None:
    """A change whose plan says what it would do without a cluster, but which needs one to apply."""
    if ctx.applying and not ctx.has_cluster:
        return f"no cluster on target {ctx.target_name}: nothing to change"
    return None


def plan_mode(why: str) -> Reason:
    """A check of what an apply did: nothing to check in plan mode."""
    return lambda ctx: None if ctx.applying else f"plan mode: {why}"


def first(*reasons: Reason) -> Reason:
    """The first of ``reasons`` that says to skip (a declaration takes one ``skip_if``)."""

    def reason(ctx: Any) -> str | None:
        for r in reasons:
            why = r(ctx)
            if why:
                return why
        return None

    return reason
