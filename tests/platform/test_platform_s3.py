"""The ``s3`` fixture is a real S3 API (SeaweedFS): objects round-trip, errors and auth are the server's."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.services


def _code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_put_list_get(s3):
    client = s3.client()
    body = b"opsbook platform test\n" * 100
    client.put_object(Bucket=s3.bucket, Key="platform/put-list-get/one.txt", Body=body)
    client.put_object(Bucket=s3.bucket, Key="platform/put-list-get/two.txt", Body=b"2")

    assert s3.list_keys("platform/put-list-get/") == [
        "platform/put-list-get/one.txt",
        "platform/put-list-get/two.txt",
    ]
    got = client.get_object(Bucket=s3.bucket, Key="platform/put-list-get/one.txt")
    assert got["Body"].read() == body
    assert got["ContentLength"] == len(body)
    assert s3.bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_missing_key_raises_no_such_key(s3):
    client = s3.client()
    with pytest.raises(client.exceptions.NoSuchKey):
        client.get_object(Bucket=s3.bucket, Key="platform/does/not/exist")


def test_missing_bucket_is_refused(s3):
    with pytest.raises(ClientError) as excinfo:
        s3.client().list_objects_v2(Bucket="no-such-bucket-opsbook")
    assert _code(excinfo) == "NoSuchBucket"


def test_wrong_secret_key_is_refused(s3):
    client = s3.client(aws_secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as excinfo:
        client.put_object(Bucket=s3.bucket, Key="platform/forbidden.txt", Body=b"x")
    assert _code(excinfo) == "SignatureDoesNotMatch"
    assert "platform/forbidden.txt" not in s3.list_keys("platform/")


def test_unknown_access_key_is_refused(s3):
    client = s3.client(aws_access_key_id="AKNOBODY000000000000")
    with pytest.raises(ClientError) as excinfo:
        client.list_objects_v2(Bucket=s3.bucket)
    assert _code(excinfo) == "InvalidAccessKeyId"


def test_env_names_the_endpoint_and_keys(s3):
    env = s3.env()
    assert env["MLFLOW_S3_ENDPOINT_URL"] == s3.endpoint_url.rstrip("/")
    assert env["AWS_ACCESS_KEY_ID"] == s3.access_key
    assert s3.endpoint_url.startswith("http://127.0.0.1:")
