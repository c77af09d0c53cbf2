"""Object-store URLs and options; configuration from the environment.

The verbs themselves are in test_contract.py. GCS has no emulator here, so for ``gs://``
only store construction and option errors are tested.
"""

from __future__ import annotations

import re

import pytest
from obstore.store import AzureStore, GCSStore, S3Store

from ghacache.errors import BlobNotFound, StorageError
from ghacache.storage import objectstore, open_store
from ghacache.storage.objectstore import ObjectStore
from ghacache.storage.objectstore_url import OPTIONS
from tests.support.blobs import publish_bytes, read_all, stream
from tests.support.objectstores import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    S3_REGION,
    Service,
    azure_request,
    create_bucket,
)


def opened(url: str) -> ObjectStore:
    store = open_store(url)
    assert isinstance(store, ObjectStore)
    return store


@pytest.mark.usefixtures("clean_cloud_env")
@pytest.mark.parametrize(
    ("url", "kind", "prefix"),
    [
        ("s3://bucket/a/b?region=eu-west-1", S3Store, "a/b"),
        ("s3://bucket", S3Store, None),
        ("az://container/p?account_name=acct", AzureStore, "p"),
        ("azure://container/p/q/?account_name=acct", AzureStore, "p/q"),
        ("gs://bucket/prefix", GCSStore, "prefix"),
        ("gs://bucket/prefix?timeout=30s&connect_timeout=5s", GCSStore, "prefix"),
    ],
)
def test_urls_build_stores(url: str, kind: type, prefix: str | None) -> None:
    store = opened(url)
    raw = store.store
    assert isinstance(raw, kind) and isinstance(raw, S3Store | AzureStore | GCSStore)
    assert raw.prefix == prefix
    assert "?" not in store.name and "?" not in repr(store)  # options may hold secrets


@pytest.mark.usefixtures("clean_cloud_env")
async def test_gcs_hands_out_no_upload_url() -> None:
    store = opened("gs://bucket/prefix")
    assert await store.direct_upload_url("u1", 60) is None
    assert store.local_path("blob1") is None


@pytest.mark.usefixtures("clean_cloud_env")
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket/p?bogus=1", r"unknown storage URL option 'bogus' for s3://.*endpoint"),
        ("gs://bucket/p?endpoint=http://x", r"unknown storage URL option 'endpoint' for gs://"),
        ("gs://bucket/p?account_key=k", r"'account_key' for gs://.*service_account"),
        ("s3://bucket/p?account_name=a", r"'account_name' for s3://"),
        ("az://c/p?region=eu-west-1", r"'region' for az://"),
        ("s3://bucket/p?allow_http=yes", r"allow_http must be true or false, got 'yes'"),
        ("s3://bucket/p?region=", r"region needs a value"),
        ("gs://bucket/p?timeout=soon", r"timeout must be a duration like 30s"),
        ("s3://bucket/p?retry_timeout=5x", r"retry_timeout must be a duration like 30s or 500ms"),
        ("s3://bucket/p?max_retries=-1", r"max_retries must be a whole number, got '-1'"),
        ("s3://bucket/p?region=a&region=b", r"region is given twice"),
        ("s3:///prefix", r"needs a plain bucket name"),
        ("az://acct@container/p", r"needs a plain container name"),
        ("az://c/p?use_emulator=true&endpoint=http://x", r"use_emulator ignores endpoint"),
        ("az://c/p", r"cannot open storage az://c/p: .*Account must be specified"),
        ("az://c/p?account_name=a&account_key=!!", r"cannot open storage az://c/p: .*Access Key"),
        ("gs://bucket/p?service_account_key=%7B%7D", r"cannot open storage gs://bucket/p: .*key"),
        ("ftp://host/path", r"unsupported storage URL scheme 'ftp'"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_every_option_is_documented() -> None:
    rows = re.findall(r"^(\w+) +(?:all|s3|az|gs)\b", objectstore.__doc__ or "", re.MULTILINE)
    assert sorted(rows) == sorted(OPTIONS)


async def test_s3_settings_from_the_environment(
    moto: Service, clean_cloud_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_bucket(moto, "from-env")
    monkeypatch.setenv("AWS_ENDPOINT", moto.url)
    monkeypatch.setenv("AWS_REGION", S3_REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    store = open_store("s3://from-env/prefix")
    await publish_bytes(store, "u1", "blob1", b"configured by env")
    assert await read_all(store, "blob1", 0, 17) == b"configured by env"


async def test_azure_emulator_option(
    azurite: Service, clean_cloud_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # use_emulator means Azurite's development account; obstore finds Azurite via this variable.
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", azurite.url)
    assert azure_request(azurite, "PUT", "emulated", {"restype": "container"}) == 201
    store = open_store("az://emulated/prefix?use_emulator=true&allow_http=true")
    await publish_bytes(store, "u1", "blob1", b"emulated")
    assert await read_all(store, "blob1", 0, 8) == b"emulated"
    assert await store.direct_upload_url("u1", 60) is not None  # signed with the account key


async def test_azure_account_from_the_environment(
    azurite: Service, clean_cloud_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert azure_request(azurite, "PUT", "from-env", {"restype": "container"}) == 201
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", f"{azurite.url}/{AZURITE_ACCOUNT}")
    store = open_store("az://from-env/prefix?allow_http=true")
    await publish_bytes(store, "u1", "blob1", b"configured by env")
    assert await read_all(store, "blob1", 0, 17) == b"configured by env"


async def test_a_missing_bucket_is_a_storage_error_not_a_missing_blob(
    moto: Service, s3_storage_url: str
) -> None:
    store = open_store(s3_storage_url.replace("s3://bucket-", "s3://nothere-", 1))
    with pytest.raises(StorageError, match="staging part p of upload u1") as info:
        await store.write_part("u1", "p", stream([b"x"]), max_bytes=1)
    assert not isinstance(info.value, BlobNotFound)
    assert "\n" not in str(info.value)  # obstore's multi-line debug dump is cut
