"""What every archive backend offers (:class:`RunArchive`), and :func:`open_archive`, which picks one.

The disk archive (:class:`opsbook.records.disk.Archive`) and the S3 archive
(:class:`opsbook.records.s3.S3Archive`) implement the same protocol; neither inherits an interface
from the other. Code that only reads or writes records (the runner, approvals, bundles, the site)
depends on this protocol, so a backend is chosen in one place and the S3 backend (boto3 and a thread
pool) is imported only when an ``s3://`` location is actually opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opsbook.records.disk import RecordRef
    from opsbook.records.ledger import LedgerEntry, VerifyReport
    from opsbook.records.s3 import S3Path, S3RecordRef

__all__ = ["RunArchive", "open_archive"]


class RunArchive(Protocol):
    """An archive of run records: written once, chained by a ledger, verifiable.

    ``root`` is where it is (a folder, or its ``s3://`` URL), ``location`` the same as ``--outputs``
    takes it. The record references and paths are the backend's own (a ``Path`` on disk, an
    ``S3Path`` in S3, with the same ``/``, ``read_bytes``, ``is_file``)."""

    @property
    def location(self) -> str: ...

    @property
    def root(self) -> Any: ...

    def check_writable(self, reserve_bytes: int = 0) -> None: ...

    def record(self, *, runbook_id: str, run_id: str, source_dir: Path | str,
               manifest: dict[str, Any]) -> RecordRef | S3RecordRef: ...

    def start_run(self, *, runbook_id: str, run_id: str, fields: dict[str, Any], plan: str | None = None,
                  claim: str | None = None) -> LedgerEntry: ...

    def head(self) -> str | None: ...

    def ledger_lines(self) -> list[tuple[int, bytes]]: ...

    def entries(self) -> list[LedgerEntry]: ...

    def history(self, *, runbook: str | None = None, status: str | None = None,
                since: datetime | None = None, limit: int | None = None) -> list[LedgerEntry]: ...

    def plan_used_by(self, plan_run_id: str, *, other_than: str | None = None,
                     entries: list[LedgerEntry] | None = None) -> LedgerEntry | None: ...

    def start_entry(self, run_id: str, *, entries: list[LedgerEntry] | None = None) -> LedgerEntry | None: ...

    def find(self, run_id: str) -> RecordRef | S3RecordRef | None: ...

    def load_manifest(self, run_id: str) -> dict[str, Any]: ...

    def record_path(self, runbook_id: str, run_id: str) -> Path | S3Path: ...

    def read_manifests(self, entries: Iterable[LedgerEntry],
                       ) -> Iterator[tuple[LedgerEntry, Path | S3Path, bytes | None]]: ...

    def verify(self, *, expect_head: str | None = None, deep: bool = ..., signers: Any = ...,
               only: str | None = None) -> VerifyReport: ...


def open_archive(location: str | os.PathLike[str] | None = None, *,
                 retention: str | None = None, create: bool = True) -> RunArchive:
    """The archive at ``location`` (``--outputs``), else ``$OPSBOOK_OUTPUTS``, else ``outputs/``.

    ``create=False`` (the read verbs) never creates a folder: one that does not exist raises
    ``ArchiveNotFound`` naming the path and whether it came from --outputs, $OPSBOOK_OUTPUTS or the
    default (the same for all three). An S3 archive is not created either way (a missing bucket is an
    error when it is used).

    ``s3://BUCKET/PREFIX`` opens an :class:`opsbook.records.s3.S3Archive` (endpoint from
    ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, credentials from boto3's default chain);
    ``retention`` (``MODE:DAYS``, ``--retention``) is for S3 only (Object Lock).
    """
    from opsbook import catalog
    from opsbook.errors import UsageError

    raw = location if location else os.environ.get(catalog.ENV_OUTPUTS)
    if isinstance(raw, str) and raw.strip().lower().startswith("s3://"):
        from opsbook.records.s3 import S3Archive

        return S3Archive(raw.strip(), retention=retention)
    if retention:
        raise UsageError(f"--retention {retention}: Object Lock retention applies to an S3 archive "
                         "(--outputs s3://BUCKET/PREFIX) only")
    from opsbook.records.disk import Archive

    origin = ("--outputs" if location else f"${catalog.ENV_OUTPUTS}" if os.environ.get(catalog.ENV_OUTPUTS)
              else "the default outputs/ of the project")
    return Archive(catalog.outputs_dir(location), create=create, origin=origin)
