"""The audit trail: the ledger, the disk and S3 archives, run records, evidence bundles, the site."""
