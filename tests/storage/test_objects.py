"""ObjectStore against the real S3 server of the session stack."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr

from runtime.settings import S3Settings
from storage.objects import ObjectNotFound, ObjectStore, StorageError, evidence_key


@pytest.fixture(scope="module")
def store(stack) -> ObjectStore:
    store = ObjectStore(stack.settings.s3)
    store.ensure_buckets()
    return store


@pytest.fixture()
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def test_evidence_key_carries_camera_and_hour_in_utc():
    ts = datetime(2025, 3, 9, 23, 59, 1, tzinfo=timezone(timedelta(hours=-2)))
    assert evidence_key("transient", "cam-7", ts, "f1.jpg") == "transient/cam-7/2025/03/10/01/f1.jpg"
    assert evidence_key("/alerts/", "cam-7", datetime(2025, 1, 2, 3), "a.jpg") == "alerts/cam-7/2025/01/02/03/a.jpg"
    for bad in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            evidence_key("transient", bad, ts, "f.jpg")
        with pytest.raises(ValueError):
            evidence_key("transient", "cam", ts, bad)



@pytest.mark.services
def test_ensure_buckets_is_idempotent(store, stack):
    store.ensure_buckets()
    assert store.ensure_buckets() == []
    s3 = stack.settings.s3
    names = {b.name for b in store.client.list_buckets()}
    assert {s3.evidence_bucket, s3.frames_bucket, s3.footage_bucket, s3.watchlist_bucket} <= names


@pytest.mark.services
def test_round_trip_exists_and_content_type(store, prefix):
    bucket = store.settings.evidence_bucket
    key = evidence_key(f"{prefix}/transient", "cam-1", datetime.now(timezone.utc), "face.jpg")
    data = bytes(range(256)) * 400  # 100 KiB, every byte value
    assert not store.exists(bucket, key)
    etag = store.put_bytes(bucket, key, data, "image/jpeg")
    assert etag
    assert store.exists(bucket, key)
    assert store.get_bytes(bucket, key) == data
    assert store.client.stat_object(bucket, key).content_type == "image/jpeg"
    store.put_bytes(bucket, key, b"replaced", "image/jpeg")
    assert store.get_bytes(bucket, key) == b"replaced"
    store.delete(bucket, [key])


@pytest.mark.services
def test_server_side_copy(store, prefix):
    bucket = store.settings.evidence_bucket
    src, dst = f"{prefix}/transient/cam/x.jpg", f"{prefix}/alerts/cam/x.jpg"
    store.put_bytes(bucket, src, b"\xff\xd8evidence", "image/jpeg")
    assert store.copy(bucket, src, dst)
    assert store.get_bytes(bucket, dst) == b"\xff\xd8evidence"
    assert store.client.stat_object(bucket, dst).content_type == "image/jpeg"
    assert store.exists(bucket, src)  # a copy, not a move
    other = store.settings.watchlist_bucket
    store.copy(bucket, src, f"{prefix}/photo.jpg", dst_bucket=other)
    assert store.get_bytes(other, f"{prefix}/photo.jpg") == b"\xff\xd8evidence"
    store.delete(bucket, [src, dst])
    store.delete(other, [f"{prefix}/photo.jpg"])


@pytest.mark.services
def test_list_keys_by_prefix_and_batch_delete(store, prefix):
    bucket = store.settings.frames_bucket
    keys = [f"{prefix}/cam-{c}/{i:04d}.jpg" for c in ("a", "b") for i in range(30)]
    for key in keys:
        store.put_bytes(bucket, key, key.encode(), "image/jpeg")
    assert store.list_keys(bucket, f"{prefix}/") == sorted(keys)
    assert store.list_keys(bucket, f"{prefix}/cam-a/") == sorted(k for k in keys if "/cam-a/" in k)
    assert store.list_keys(bucket, f"{prefix}/cam-z/") == []
    assert store.delete(bucket, keys[:30] + [f"{prefix}/never-existed.jpg"]) == 31
    assert store.list_keys(bucket, f"{prefix}/") == sorted(keys[30:])
    assert store.delete(bucket, keys[30:]) == 30
    assert store.list_keys(bucket, f"{prefix}/") == []
    assert store.delete(bucket, []) == 0


@pytest.mark.services
def test_missing_key_and_bucket_errors_name_them(store, prefix):
    bucket = store.settings.evidence_bucket
    key = f"{prefix}/missing.jpg"
    with pytest.raises(ObjectNotFound) as err:
        store.get_bytes(bucket, key)
    assert err.value.bucket == bucket and err.value.key == key
    assert bucket in str(err.value) and key in str(err.value)
    with pytest.raises(ObjectNotFound):
        store.copy(bucket, key, f"{prefix}/copy.jpg")
    with pytest.raises(StorageError) as err:
        store.get_bytes("vigil-no-such-bucket", "k")
    assert err.value.bucket == "vigil-no-such-bucket"


@pytest.mark.services
def test_wrong_secret_is_rejected(stack):
    s3 = stack.settings.s3
    intruder = ObjectStore(s3.model_copy(update={"secret_key": SecretStr(s3.secret_key.get_secret_value() + "x")}), retries=0)
    with pytest.raises(StorageError) as err:
        intruder.put_bytes(s3.evidence_bucket, "intruder.txt", b"x", "text/plain")
    assert err.value.code in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}
    with pytest.raises(StorageError):
        intruder.list_keys(s3.evidence_bucket)
    assert not ObjectStore(s3).exists(s3.evidence_bucket, "intruder.txt")


def test_unreachable_server_is_a_storage_error():
    s3 = S3Settings(endpoint="127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(StorageError) as err:
        ObjectStore(s3, connect_timeout_s=1, retries=0).get_bytes("vigil-b", "k")
    assert "s3://vigil-b/k" in str(err.value)
