"""Reading a ledger: history, the plan and start look-ups and manifests, made the same way by every
backend once it can list its ledger's entries. A mixin rather than a base class: it implements
everything it offers, and what it needs of the backend is a protocol that mypy checks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from opsbook.errors import ArchiveError, LedgerError, RecordExists
from opsbook.records.ledger import MANIFEST_NAME, LedgerEntry, parse_time

__all__ = ["LedgerReads", "check_start", "filter_history"]


def filter_history(entries: Iterable[LedgerEntry], *, runbook: str | None = None, status: str | None = None,
                   since: datetime | None = None, limit: int | None = None) -> list[LedgerEntry]:
    """``history``'s filters over ledger entries in ledger order."""
    if limit is not None and limit <= 0:
        return []
    since_utc = None
    if since is not None:
        since_utc = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    out: list[LedgerEntry] = []
    for e in entries:
        if runbook is not None and e.runbook_id != runbook:
            continue
        if status is not None and e.status != status:
            continue
        if since_utc is not None:
            t = parse_time(e.started) or parse_time(e.ended)
            if t is None or t < since_utc:
                continue
        out.append(e)
    return out[-limit:] if limit is not None else out


def check_start(archive: Any, *, run_id: str, plan: str | None) -> None:
    """Before a ``started`` entry is appended: the run id has none yet, and the plan is unused."""
    from opsbook.errors import PlanConsumed

    entries = archive.entries()  # one read of the ledger for both checks (on S3, a listing and many GETs)
    if archive.start_entry(run_id, entries=entries) is not None:
        raise RecordExists(f"run {run_id} has already started (a write-ahead entry exists in {archive.root})")
    if plan:
        used = archive.plan_used_by(plan, other_than=run_id, entries=entries)
        if used is not None:
            raise PlanConsumed(f"plan {plan} was already carried out by apply run {used.run_id} (started "
                               f"{used.started}); a plan is consumed once: make a new plan run and approve that",
                               used_by=used.run_id)


class _LedgerSource(Protocol):
    """What :class:`LedgerReads` needs of the backend it is mixed into."""

    root: Any

    def ledger_lines(self) -> list[tuple[int, bytes]]: ...

    def _where(self, n: int) -> str: ...

    def find(self, run_id: str) -> Any: ...

    def entries(self) -> list[LedgerEntry]: ...


class LedgerReads:
    """The reads every backend makes the same way once it can list its ledger's entries (entries,
    history, the plan and start look-ups, manifests). Mixed into a backend; what it needs of it is
    :class:`_LedgerSource`, so a backend missing one of those is a type error, not a runtime one."""

    def entries(self: _LedgerSource) -> list[LedgerEntry]:
        """Every ledger entry in order; ``LedgerError`` if one does not parse."""
        out: list[LedgerEntry] = []
        for n, raw in self.ledger_lines():
            try:
                out.append(LedgerEntry.from_obj(json.loads(raw)))
            except ValueError as exc:
                raise LedgerError(f"{self._where(n)} cannot be parsed ({exc}); run `opsbook verify`") from exc
        return out

    def history(self: _LedgerSource, *, runbook: str | None = None, status: str | None = None,
                since: datetime | None = None, limit: int | None = None) -> list[LedgerEntry]:
        """Ledger entries, oldest first (newest last), filtered; ``limit`` keeps the newest ``limit``.

        ``since`` compares with ``started`` (``ended`` when a run has no start); entries with neither
        are left out when ``since`` is given. Naive datetimes, given or stored, are taken as UTC.
        Reads only the ledger; ``LedgerError`` if an entry does not parse.
        """
        if limit is not None and limit <= 0:
            return []
        entries = self.entries()
        finished = {e.run_id for e in entries if not e.is_start}
        shown = [e for e in entries if not (e.is_start and e.run_id in finished)]  # unfinished runs stay
        return filter_history(shown, runbook=runbook, status=status, since=since, limit=limit)

    def plan_used_by(self: _LedgerSource, plan_run_id: str, *, other_than: str | None = None,
                     entries: list[LedgerEntry] | None = None) -> LedgerEntry | None:
        """The first ledger entry of a run (other than ``other_than``) that consumed ``plan_run_id``
        (in ``entries`` when the caller has read them already)."""
        return next((e for e in (self.entries() if entries is None else entries)
                     if e.plan == plan_run_id and e.run_id != other_than), None)

    def start_entry(self: _LedgerSource, run_id: str, *,
                    entries: list[LedgerEntry] | None = None) -> LedgerEntry | None:
        """The write-ahead ``started`` entry of ``run_id``, if any."""
        return next((e for e in (self.entries() if entries is None else entries)
                     if e.run_id == run_id and e.is_start), None)

    def load_manifest(self: _LedgerSource, run_id: str) -> dict[str, Any]:
        ref = self.find(run_id)
        if ref is None:
            raise ArchiveError(f"no record of run {run_id} in {self.root}")
        try:
            doc = json.loads(ref.manifest_path.read_bytes())
        except FileNotFoundError as exc:
            raise ArchiveError(f"record {ref.record} has no {MANIFEST_NAME}") from exc
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"cannot read the manifest of {ref.record}: {exc}") from exc
        if not isinstance(doc, dict):
            raise ArchiveError(f"the manifest of {ref.record} is not a JSON object")
        return doc
