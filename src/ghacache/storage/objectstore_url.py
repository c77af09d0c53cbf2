"""Turn an object-store URL (``s3://``, ``az://``, ``azure://``, ``gs://``) into an obstore store.

The options a URL may carry are data (``OPTIONS``), so the module docstring of
``ghacache.storage.objectstore`` can be checked against them. Anything not given here is
left to obstore, which reads the usual environment itself (``AWS_*``, ``AZURE_STORAGE_*``,
``GOOGLE_*``), so credentials never need to appear in a URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, cast
from urllib.parse import parse_qsl, urlsplit

from obstore.exceptions import BaseError
from obstore.store import AzureStore, GCSStore, S3Store

if TYPE_CHECKING:
    from obstore.store import (
        AzureConfig,
        ClientConfig,
        GCSConfig,
        ObjectStore,
        RetryConfig,
        S3Config,
    )

Kind = Literal["text", "bool", "duration", "count"]
Scheme = Literal["s3", "az", "gs"]
SCHEMES: dict[str, Scheme] = {"s3": "s3", "az": "az", "azure": "az", "gs": "gs"}


@dataclass(frozen=True)
class Option:
    """A URL query option: which schemes accept it, where it goes, and its value's kind."""

    schemes: tuple[Scheme, ...]
    kind: Kind = "text"
    client: bool = False  # an HTTP client option rather than a store config key
    retry: bool = False  # a retry setting rather than a store config key


# obstore retries a failed request (5xx, refused or dropped connections, read timeouts) up to
# 10 times within 3 minutes by default: longer than clients wait on a silent server
# (ghacache's client gives up on an idle socket after 2 minutes). Within 30 s a blip is
# still ridden out, and an outage becomes a 503 that clients retry on their own schedule.
DEFAULT_RETRY_TIMEOUT = timedelta(seconds=30)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


ALL: tuple[Scheme, ...] = ("s3", "az", "gs")
Options = dict[str, str | bool]
OPTIONS: dict[str, Option] = {
    # HTTP client, every scheme.
    "allow_http": Option(ALL, "bool", client=True),
    "timeout": Option(ALL, "duration", client=True),
    "connect_timeout": Option(ALL, "duration", client=True),
    # Retries of failed requests, every scheme.
    "max_retries": Option(ALL, "count", retry=True),
    "retry_timeout": Option(ALL, "duration", retry=True),
    # S3 and S3-compatible stores.
    "endpoint": Option(("s3", "az")),
    "region": Option(("s3",)),
    "access_key_id": Option(("s3",)),
    "secret_access_key": Option(("s3",)),
    "session_token": Option(("s3",)),
    "virtual_hosted_style_request": Option(("s3",), "bool"),
    "copy_if_not_exists": Option(("s3",)),
    # Azure Blob Storage.
    "account_name": Option(("az",)),
    "account_key": Option(("az",)),
    "use_emulator": Option(("az",), "bool"),
    "use_azure_cli": Option(("az",), "bool"),
    "client_id": Option(("az",)),
    "client_secret": Option(("az",)),
    "tenant_id": Option(("az",)),
    # Google Cloud Storage.
    "service_account": Option(("gs",)),
    "service_account_key": Option(("gs",)),
    "application_credentials": Option(("gs",)),
}


def _value(name: str, option: Option, raw: str) -> str | bool:
    if option.kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"storage URL option {name} must be true or false, got {raw!r}")
        return raw.lower() == "true"
    if not raw:
        raise ValueError(f"storage URL option {name} needs a value")
    if option.kind == "duration" and not raw[:1].isdigit():
        raise ValueError(f"storage URL option {name} must be a duration like 30s, got {raw!r}")
    if option.kind == "count" and not raw.isdigit():
        raise ValueError(f"storage URL option {name} must be a whole number, got {raw!r}")
    return raw


def _duration(name: str, raw: str) -> timedelta:
    m = _DURATION.match(raw)
    if m is None:
        raise ValueError(f"storage URL option {name} must be a duration like 30s or 500ms")
    return timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])


def retry_config(options: Options) -> RetryConfig:
    """obstore's retry settings from the URL's retry options (and ghacache's default).

    Raises:
        ValueError: a duration that is not a number and a unit (ms, s, m, h).
    """
    config: RetryConfig = {"retry_timeout": DEFAULT_RETRY_TIMEOUT}
    if "max_retries" in options:
        config["max_retries"] = int(options["max_retries"])
    if "retry_timeout" in options:
        config["retry_timeout"] = _duration("retry_timeout", str(options["retry_timeout"]))
    return config


def parse_options(scheme: Scheme, query: str) -> tuple[Options, Options, Options]:
    """Split a URL query into (store config, HTTP client options, retry options).

    Raises:
        ValueError: an unknown, repeated or misplaced option, or a bad value.
    """
    config: Options = {}
    client: Options = {}
    retry: Options = {}
    for name, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        option = OPTIONS.get(name)
        if option is None or scheme not in option.schemes:
            accepted = ", ".join(sorted(n for n, o in OPTIONS.items() if scheme in o.schemes))
            raise ValueError(
                f"unknown storage URL option {name!r} for {scheme}:// (accepted: {accepted})"
            )
        target = client if option.client else retry if option.retry else config
        if name in target:
            raise ValueError(f"storage URL option {name} is given twice")
        target[name] = _value(name, option, raw)
    if config.get("use_emulator") and "endpoint" in config:
        raise ValueError(
            "use_emulator ignores endpoint (obstore reads AZURITE_BLOB_STORAGE_URL); "
            "give account_name, account_key and endpoint instead"
        )
    return config, client, retry


def open_raw_store(url: str) -> tuple[ObjectStore, str]:
    """The obstore store for ``url`` and a display name without the query (no secrets).

    Raises:
        ValueError: not an object-store URL, no bucket/container, or bad options.
    """
    parts = urlsplit(url)
    scheme = SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"not an object-store URL: {parts.scheme}:// (use s3, az, azure or gs)")
    bucket = parts.netloc
    if not bucket or "@" in bucket:
        what = "container" if scheme == "az" else "bucket"
        raise ValueError(f"storage URL {parts.scheme}://{bucket} needs a plain {what} name")
    prefix = parts.path.strip("/") or None
    config, client, retry = parse_options(scheme, parts.query)
    name = f"{parts.scheme}://{bucket}/{prefix or ''}"
    client_options = cast("ClientConfig", client) if client else None
    retries = retry_config(retry)
    try:
        if scheme == "s3":
            s3_config = cast("S3Config", config)
            return S3Store(
                bucket,
                prefix=prefix,
                config=s3_config,
                client_options=client_options,
                retry_config=retries,
            ), name
        if scheme == "az":
            az_config = cast("AzureConfig", config)
            return AzureStore(
                bucket,
                prefix=prefix,
                config=az_config,
                client_options=client_options,
                retry_config=retries,
            ), name
        gs_config = cast("GCSConfig", config)
        return GCSStore(
            bucket,
            prefix=prefix,
            config=gs_config,
            client_options=client_options,
            retry_config=retries,
        ), name
    except BaseError as exc:  # e.g. no Azure account, a key that is not base64
        detail = str(exc).strip().splitlines()[0]
        raise ValueError(f"cannot open storage {name}: {detail}") from exc
