"""The audit trail: the ledger, the disk and S3 archives, run records, evidence bundles, the site.

``open_archive`` and ``RunArchive`` (:mod:`opsbook.records.archive`) are all most callers need; the
S3 backend is imported only when an ``s3://`` archive is opened."""

from opsbook.records.archive import RunArchive, open_archive

__all__ = ["RunArchive", "open_archive"]
