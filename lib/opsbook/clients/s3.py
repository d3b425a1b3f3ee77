"""The S3 client: an S3-compatible object store (AWS S3, MinIO, SeaweedFS) through boto3.

    s3 = S3(endpoint_url="https://minio.staging:9000", access_key=key_id, secret_key=secret)
    s3.bucket_exists("mlflow-artifacts")            # True / False; Forbidden if the keys are refused
    s3.probe("mlflow-artifacts", prefix="mlflow")   # put, get and delete a small probe object
    s3.list("mlflow-artifacts", prefix="mlflow/1/models/m-abc/")   # [{key, size, modified}]

Write-once objects (the S3 run archive, ``opsbook.records.s3``, is built on these)::

    etag = s3.put_if_absent(bucket, key, body)      # If-None-Match: *; Conflict if the key exists
    s3.put_if_absent(bucket, key, body, lock_mode="GOVERNANCE", retain_until=until)   # Object Lock
    for obj in s3.iter_objects(bucket, "runs/"): ...   # ObjectInfo(key, size, etag), 1000 per page
    s3.object_lock_enabled(bucket)                  # True if the bucket was created with Object Lock

Errors are ours, with the botocore error chained::

    ClientError
    ├── NotFound        NoSuchBucket, NoSuchKey, 404
    ├── Conflict        412 PreconditionFailed (a conditional write lost: the key exists), 409
    ├── Forbidden       InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied, 401/403
    ├── Invalid         400 (InvalidBucketName...)
    ├── Unreachable     connection refused, DNS, TLS; 5xx after botocore's retries
    └── TimedOut        connect or read timeout

The credentials are never put into an error message or a repr. ``boto3`` is imported on first use.
The seam is the constructor: pass ``client=`` (any boto3-compatible S3 client) to bypass the session.
"""

from __future__ import annotations

import builtins
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opsbook.errors import ClientError, Conflict, Forbidden, Invalid, NotFound, TimedOut, Unreachable

__all__ = ["S3", "CREDENTIAL_ERRORS", "ObjectInfo"]

CREDENTIAL_ERRORS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                               "ExpiredToken", "InvalidClientTokenId", "AuthorizationHeaderMalformed"})
_NOT_FOUND = frozenset({"NoSuchBucket", "NoSuchKey", "NotFound", "404"})
_FORBIDDEN = frozenset({"AccessDenied", "Forbidden", "403", "401", "AllAccessDisabled"})
_CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_NO_LOCK_CONFIG = "ObjectLockConfigurationNotFoundError"
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a listing shows it. ``etag`` is without its quotes (for a single-part PUT
    without SSE-KMS it is the hex md5 of the content)."""

    key: str
    size: int
    etag: str


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


class S3:
    """One S3 endpoint with one set of credentials (None: boto3's default chain)."""

    def __init__(self, *, endpoint_url: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, region: str = "us-east-1", client: Any = None,
                 connect_timeout: float = 5.0, read_timeout: float = 20.0, path_style: bool = True,
                 max_pool_connections: int = 10):
        self.endpoint_url = endpoint_url or None
        self.region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._client = client
        self._timeouts = (connect_timeout, read_timeout)
        self._path_style = path_style
        self._pool = max_pool_connections
        self._client_lock = threading.Lock()  # the client is shared by worker threads: build it once

    def __repr__(self) -> str:
        return f"S3(endpoint_url={self.endpoint_url!r}, region={self.region!r})"

    @property
    def where(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region})"

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    cfg = Config(signature_version="s3v4",
                                 s3={"addressing_style": "path" if self._path_style else "auto"},
                                 retries={"max_attempts": 2, "mode": "standard"},
                                 connect_timeout=self._timeouts[0], read_timeout=self._timeouts[1],
                                 max_pool_connections=self._pool)
                    self._client = boto3.session.Session().client(
                        "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self._access_key,
                        aws_secret_access_key=self._secret_key, region_name=self.region, config=cfg)
        return self._client

    # -- errors ----------------------------------------------------------------------------------
    def _error(self, exc: Exception, what: str, bucket: str | None = None) -> ClientError:
        from botocore import exceptions as bx

        where = f"S3 at {self.where}"
        if isinstance(exc, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
            return TimedOut(f"{what}: {where} did not answer in time")
        if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.SSLError)):
            return Unreachable(f"{what}: cannot connect to {where}")
        if isinstance(exc, bx.NoCredentialsError):
            return Forbidden(f"{what}: no S3 credentials were given and none were found in the environment")
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error") or {}
            code = str(err.get("Code") or "")
            status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            message = str(err.get("Message") or "").strip()
            detail = code + (f" ({message})" if message and message != code else "")
            if code in CREDENTIAL_ERRORS:
                return Forbidden(f"{what}: {where} rejected the credentials: {detail}")
            if code in _CONFLICT or status in (409, 412):
                return Conflict(f"{what}: {detail or status}")
            if code in _NOT_FOUND or status == 404:
                if bucket and code in ("NoSuchBucket", "404", "NotFound"):
                    return NotFound(f"{what}: bucket {bucket!r} does not exist on {where}")
                return NotFound(f"{what}: {detail or 'not found'}")
            if code in _FORBIDDEN or status in (401, 403):
                return Forbidden(f"{what}: access denied by {where}: {detail or status}")
            if status == 400:
                return Invalid(f"{what}: {where} refused the request: {detail}")
            if status >= 500:
                return Unreachable(f"{what}: {where} answered HTTP {status}: {detail}")
            return ClientError(f"{what}: {where}: {detail or status}")
        if isinstance(exc, bx.BotoCoreError):
            return ClientError(f"{what}: {where}: {exc}")
        return ClientError(f"{what}: {where}: {type(exc).__name__}: {exc}")

    def _call(self, what: str, bucket: str | None, fn: Any, **kwargs: Any) -> Any:
        from botocore import exceptions as bx

        try:
            return fn(**kwargs)
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise self._error(exc, what, bucket) from exc

    # -- buckets ---------------------------------------------------------------------------------
    def bucket_exists(self, bucket: str) -> bool:
        """True if the bucket exists and these credentials may use it; False if it does not exist.
        Rejected credentials raise Forbidden naming the reason (HEAD replies carry no error code, so a
        403 is asked again with a ListObjectsV2 to learn it)."""
        try:
            self._call(f"HEAD bucket {bucket}", bucket, self.client.head_bucket, Bucket=bucket)
        except NotFound:
            return False
        except Forbidden:
            # learn why: credentials rejected, or no permission on this bucket
            self._call(f"list bucket {bucket}", bucket, self.client.list_objects_v2, Bucket=bucket, MaxKeys=1)
            raise
        return True

    def list_buckets(self) -> list[str]:
        out = self._call("list buckets", None, self.client.list_buckets)
        return sorted(b["Name"] for b in out.get("Buckets") or [])

    # -- objects ---------------------------------------------------------------------------------
    def put(self, bucket: str, key: str, body: bytes, *, content_type: str = "application/octet-stream") -> None:
        self._call(f"PUT s3://{bucket}/{key}", bucket, self.client.put_object, Bucket=bucket, Key=key, Body=body,
                   ContentType=content_type)

    def get(self, bucket: str, key: str) -> bytes:
        out = self._call(f"GET s3://{bucket}/{key}", bucket, self.client.get_object, Bucket=bucket, Key=key)
        return out["Body"].read()

    def delete(self, bucket: str, key: str) -> None:
        self._call(f"DELETE s3://{bucket}/{key}", bucket, self.client.delete_object, Bucket=bucket, Key=key)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self._call(f"HEAD s3://{bucket}/{key}", bucket, self.client.head_object, Bucket=bucket, Key=key)
        except NotFound:
            return False
        return True

    def list(self, bucket: str, prefix: str = "", *, limit: int = 10000) -> list[dict[str, Any]]:
        """Objects under ``prefix`` (paginated): ``[{key, size, modified}]`` sorted by key."""
        rows: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(f"list s3://{bucket}/{prefix}", bucket, self.client.list_objects_v2, **kwargs)
            for obj in page.get("Contents") or []:
                rows.append({"key": obj["Key"], "size": int(obj.get("Size") or 0),
                             "modified": str(obj.get("LastModified") or "")})
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token or len(rows) >= limit:
                break
        return sorted(rows, key=lambda r: r["key"])[:limit]

    def put_if_absent(self, bucket: str, key: str, body: bytes, *,
                      content_type: str = "application/octet-stream", lock_mode: str | None = None,
                      retain_until: datetime | None = None) -> str:
        """Create ``key`` only if no object has that key (``If-None-Match: *``); returns the ETag the
        store gave it (no quotes). Raises ``Conflict`` if the key exists: nothing is overwritten. With
        ``lock_mode`` (GOVERNANCE/COMPLIANCE) and ``retain_until`` the object is created under Object
        Lock retention (the bucket must have Object Lock enabled, else ``Invalid``)."""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body, "ContentType": content_type,
                                  "IfNoneMatch": "*"}
        if lock_mode is not None:
            if lock_mode not in LOCK_MODES or retain_until is None:
                raise ValueError(f"lock_mode must be one of {LOCK_MODES} with a retain_until date")
            kwargs.update(ObjectLockMode=lock_mode, ObjectLockRetainUntilDate=retain_until)
        out = self._call(f"PUT (if absent) s3://{bucket}/{key}", bucket, self.client.put_object, **kwargs)
        return _etag(out.get("ETag"))

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        """``{size, etag, lock_mode, retain_until, version_id}`` of an object, ``None`` if it does not exist."""
        try:
            out = self._call(f"HEAD s3://{bucket}/{key}", bucket, self.client.head_object, Bucket=bucket, Key=key)
        except NotFound:
            return None
        return {"size": int(out.get("ContentLength") or 0), "etag": _etag(out.get("ETag")),
                "lock_mode": out.get("ObjectLockMode"), "retain_until": out.get("ObjectLockRetainUntilDate"),
                "version_id": out.get("VersionId")}

    def iter_objects(self, bucket: str, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` in key order (ListObjectsV2, 1000 keys a page, no limit),
        beginning after ``start_after`` if given."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            elif start_after:
                kwargs["StartAfter"] = start_after
            page = self._call(f"list s3://{bucket}/{prefix}", bucket, self.client.list_objects_v2, **kwargs)
            for obj in page.get("Contents") or []:
                yield ObjectInfo(obj["Key"], int(obj.get("Size") or 0), _etag(obj.get("ETag")))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def common_prefixes(self, bucket: str, prefix: str = "", *,
                        delimiter: str = "/") -> tuple[builtins.list[str], builtins.list[str]]:
        """One level of a listing: (sub-prefixes ending in ``delimiter``, keys directly under ``prefix``)."""
        prefixes: list[str] = []
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": delimiter, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(f"list s3://{bucket}/{prefix}", bucket, self.client.list_objects_v2, **kwargs)
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes") or []]
            keys += [o["Key"] for o in page.get("Contents") or []]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(prefixes), sorted(keys)

    def object_lock_enabled(self, bucket: str) -> bool:
        """True if ``bucket`` has Object Lock enabled (it can only be enabled when a bucket is created,
        or later on a versioned bucket); False if it has no Object Lock configuration."""
        from botocore import exceptions as bx

        try:
            out = self.client.get_object_lock_configuration(Bucket=bucket)
        except bx.ClientError as exc:
            if (exc.response.get("Error") or {}).get("Code") == _NO_LOCK_CONFIG:
                return False
            raise self._error(exc, f"read the Object Lock configuration of bucket {bucket}", bucket) from exc
        except bx.BotoCoreError as exc:
            raise self._error(exc, f"read the Object Lock configuration of bucket {bucket}", bucket) from exc
        return (out.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") == "Enabled"

    def probe(self, bucket: str, prefix: str = "") -> dict[str, Any]:
        """Write, read back and delete a small probe object under ``prefix``: proof that the bucket is
        writable with these credentials. Returns the key and timings; raises on any failure (the probe
        object is deleted even when the read-back fails)."""
        key = f"{prefix.strip('/') + '/' if prefix.strip('/') else ''}.opsbook-probe-{uuid.uuid4().hex[:12]}"
        body = f"opsbook write probe {time.time():.0f}\n".encode()
        t0 = time.monotonic()
        self.put(bucket, key, body, content_type="text/plain")
        try:
            got = self.get(bucket, key)
            if got != body:
                raise ClientError(f"s3://{bucket}/{key}: read back {len(got)} bytes that differ from the "
                                  f"{len(body)} written")
        finally:
            self.delete(bucket, key)
        gone = not self.exists(bucket, key)
        return {"key": key, "bytes": len(body), "seconds": round(time.monotonic() - t0, 3), "deleted": gone}
