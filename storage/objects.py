"""Objects in S3 (MinIO, SeaweedFS, Ceph RGW or AWS) through the ``minio`` SDK.

Buckets are named by ``S3Settings``: evidence (snapshots and crops: ``transient/``
for every face, ``alerts/`` for hits), frames (claim-check), footage and watchlist
photos. Keys carry the camera and the capture hour (see ``evidence_key``) so
retention can work by prefix.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from datetime import datetime
from typing import Iterable, Iterator

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.retention import COMPLIANCE, Retention

from runtime.settings import S3Settings
from schemas.events import as_utc

_NOT_FOUND = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"}


class StorageError(RuntimeError):
    """An S3 operation failed; ``bucket``, ``key`` and the S3 ``code`` say where and why."""

    def __init__(self, message: str, bucket: str | None = None, key: str | None = None, code: str | None = None):
        where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}" if bucket else "s3"
        super().__init__(f"{where}: {message}")
        self.bucket, self.key, self.code = bucket, key, code


class ObjectNotFound(StorageError):
    """The bucket or the object does not exist."""


class StorageUnavailable(StorageError, ConnectionError):
    """The S3 server could not be reached. A ConnectionError, so the stage runtime retries instead of dropping the event."""


@contextmanager
def _errors(bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn SDK and connection errors into StorageError naming the bucket and key."""
    try:
        yield
    except StorageError:
        raise
    except S3Error as exc:
        kind = ObjectNotFound if exc.code in _NOT_FOUND else StorageError
        raise kind(f"{exc.code}: {exc.message}", bucket, key, exc.code) from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise StorageUnavailable(f"{type(exc).__name__}: {exc}", bucket, key) from exc


def evidence_key(prefix: str, camera_id: str, ts: datetime, name: str) -> str:
    """``{prefix}/{camera_id}/{YYYY}/{MM}/{DD}/{HH}/{name}``, the hour in UTC (naive times are UTC)."""
    for label, part in (("camera_id", camera_id), ("name", name)):
        if not part or "/" in part or part in (".", ".."):
            raise ValueError(f"{label} must be a non-empty path segment without '/': {part!r}")
    ts = as_utc(ts)
    return f"{prefix.strip('/')}/{camera_id}/{ts:%Y/%m/%d/%H}/{name}"


class ObjectStore:
    """The S3 buckets Vigil uses, from ``S3Settings``."""

    def __init__(self, settings: S3Settings, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 60.0,
                 retries: int = 3):
        self.settings = settings
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            maxsize=16,
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(settings.endpoint, access_key=settings.access_key, secret_key=settings.secret_key.get_secret_value(),
                            secure=settings.secure, region=settings.region, http_client=http)

    @property
    def buckets(self) -> dict[str, str]:
        """Role -> bucket name, every bucket the settings name."""
        s = self.settings
        return {"evidence": s.evidence_bucket, "frames": s.frames_bucket, "footage": s.footage_bucket,
                "watchlist": s.watchlist_bucket}

    def ensure_buckets(self) -> list[str]:
        """Create the buckets that do not exist yet; return the names created."""
        created = []
        for bucket in dict.fromkeys(self.buckets.values()):
            with _errors(bucket):
                if self.client.bucket_exists(bucket):
                    continue
                try:
                    self.client.make_bucket(bucket)
                    created.append(bucket)
                except S3Error as exc:  # another process made it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        return created

    def ensure_locked_bucket(self, bucket: str) -> bool:
        """Create ``bucket`` with S3 Object Lock (and so versioning) when missing; True when it was created."""
        with _errors(bucket):
            if self.client.bucket_exists(bucket):
                return False
            try:
                self.client.make_bucket(bucket, object_lock=True)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                return False
        return True

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream",
                  metadata: dict[str, str] | None = None, *, retain_until: datetime | None = None) -> str:
        """Store ``data`` at ``key``; return its ETag. ``retain_until`` locks this version (Object Lock, COMPLIANCE mode)
        until then: the bucket must have been made with Object Lock."""
        retention = Retention(COMPLIANCE, as_utc(retain_until)) if retain_until is not None else None
        with _errors(bucket, key):
            result = self.client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                                            metadata=metadata, retention=retention)
        return result.etag

    def versions(self, bucket: str, prefix: str = "") -> list[tuple[str, str | None]]:
        """(key, version id) of every stored version under ``prefix`` (delete markers left out), in key order."""
        with _errors(bucket, prefix or None):
            return [(obj.object_name, obj.version_id) for obj in
                    self.client.list_objects(bucket, prefix=prefix or None, recursive=True, include_version=True)
                    if not obj.is_dir and not obj.is_delete_marker]

    def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        with _errors(bucket, key):
            response = self.client.get_object(bucket, key, version_id=version_id)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def copy(self, bucket: str, src_key: str, dst_key: str, dst_bucket: str | None = None) -> str:
        """Server-side copy (no bytes through this process); return the new ETag."""
        with _errors(bucket, src_key):
            result = self.client.copy_object(dst_bucket or bucket, dst_key, CopySource(bucket, src_key))
        return result.etag

    def exists(self, bucket: str, key: str) -> bool:
        try:
            with _errors(bucket, key):
                self.client.stat_object(bucket, key)
        except ObjectNotFound:
            return False
        return True

    def list_keys(self, bucket: str, prefix: str = "", *, modified_before: datetime | None = None) -> list[str]:
        """Every key under ``prefix`` (recursive), in key order; with ``modified_before``, only objects last written before it."""
        cutoff = as_utc(modified_before) if modified_before is not None else None
        with _errors(bucket, prefix or None):
            return [obj.object_name for obj in self.client.list_objects(bucket, prefix=prefix or None, recursive=True)
                    if not obj.is_dir and (cutoff is None or (obj.last_modified is not None and obj.last_modified < cutoff))]

    def delete(self, bucket: str, keys: Iterable[str]) -> int:
        """Delete ``keys`` in batches (missing keys are not errors); return how many were asked for."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return 0
        with _errors(bucket):
            errors = list(self.client.remove_objects(bucket, (DeleteObject(k) for k in keys)))
        if errors:
            first = errors[0]
            raise StorageError(f"{len(errors)} of {len(keys)} deletions failed, first: {first.code} {first.message}",
                               bucket, first.name, first.code)
        return len(keys)
