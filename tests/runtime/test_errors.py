"""Error classification on the errors the client libraries really raise: S3 and Milvus refusals from the real
services, and the libraries' own exception objects for what the stack cannot be made to do (SlowDown, a 503)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import urllib3
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from kafka.errors import SaslAuthenticationFailedError, TopicAuthorizationFailedError
from minio.error import S3Error
from PIL import Image, UnidentifiedImageError
from pydantic import SecretStr
from pymilvus.exceptions import MilvusException

from runtime.errors import BadEvent, ExitCode, Kind, classify
from storage.objects import ObjectStore
from storage.vectors import Watchlist


def raised(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def s3_error(code: str, status: int) -> S3Error:
    return S3Error(urllib3.HTTPResponse(status=status), code, "from the test", "/bucket/key", "req", None)


@pytest.mark.services
def test_s3_refusals_are_permanent(stack):
    s3 = stack.settings.s3
    wrong_secret = ObjectStore(s3.model_copy(update={"secret_key": SecretStr("wrong")}), retries=0)
    wrong_key = ObjectStore(s3.model_copy(update={"access_key": "nobody"}), retries=0)
    right = ObjectStore(s3, retries=0)
    for fn, cause in ((lambda: wrong_secret.get_bytes(s3.frames_bucket, "k"), "s3:SignatureDoesNotMatch"),
                      (lambda: wrong_key.get_bytes(s3.frames_bucket, "k"), "s3:InvalidAccessKeyId"),
                      (lambda: right.get_bytes("vigil-no-such-bucket", "k"), "s3:NoSuchBucket")):
        verdict = classify(raised(fn))
        assert (verdict.kind, verdict.cause, verdict.exit_code) == (Kind.PERMANENT, cause, ExitCode.PERMANENT), verdict


@pytest.mark.services
def test_milvus_refusals_are_permanent_and_an_outage_transient(stack):
    milvus = stack.settings.milvus
    missing = Watchlist(milvus.model_copy(update={"collection": "vigil_no_such_collection"}))
    try:
        verdict = classify(raised(lambda: missing.search(np.ones((1, 512), np.float32))))
    finally:
        missing.close()
    assert (verdict.kind, verdict.cause) == (Kind.PERMANENT, "milvus:collection-not-found"), verdict
    if milvus.token is not None:  # the local stack has authentication on
        user = milvus.token.get_secret_value().split(":")[0]
        bad_login = raised(lambda: Watchlist(milvus.model_copy(update={"token": SecretStr(f"{user}:wrong")}), timeout_s=5))
        assert (classify(bad_login).kind, classify(bad_login).cause) == (Kind.PERMANENT, "milvus:auth")
    down = raised(lambda: Watchlist(milvus.model_copy(update={"uri": "http://127.0.0.1:1"}), timeout_s=2))
    verdict = classify(down)
    assert (verdict.kind, verdict.exit_code) == (Kind.TRANSIENT, ExitCode.UNAVAILABLE), verdict
    assert classify(MilvusException(code=2, message="service unavailable")).kind is Kind.TRANSIENT


def test_s3_slowdown_and_5xx_are_transient():
    assert classify(s3_error("SlowDown", 503)).kind is Kind.TRANSIENT
    assert classify(s3_error("SomethingNew", 502)).kind is Kind.TRANSIENT
    assert classify(s3_error("AccessDenied", 403)).kind is Kind.PERMANENT


def test_kafka_errors():
    assert classify(KafkaConnectionError("broker down")).kind is Kind.TRANSIENT
    for exc in (MessageSizeTooLargeError(), SaslAuthenticationFailedError(), TopicAuthorizationFailedError()):
        assert classify(exc).kind is Kind.PERMANENT, exc


def test_event_errors_and_what_lies_beneath():
    try:
        Image.open(io.BytesIO(b"not an image"))
    except UnidentifiedImageError as pil:  # an OSError: alone it would read as the network
        try:
            raise BadEvent("undecodable") from pil
        except BadEvent as bad:
            assert classify(bad).kind is Kind.EVENT
    try:  # a missing bucket under a BadEvent is still the bucket's fault, not every event's
        raise BadEvent("frame gone") from s3_error("NoSuchBucket", 404)
    except BadEvent as bad:
        assert classify(bad).kind is Kind.PERMANENT
    unknown = classify(KeyError("bug"), Kind.PERMANENT)
    assert not unknown.known and unknown.exit_code == ExitCode.INTERNAL
    assert classify(KeyError("bug")).kind is Kind.EVENT  # process(): dead-letter the event
