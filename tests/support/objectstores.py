"""Real object-store emulators for tests: moto (S3) and Azurite (Azure Blob Storage).

Each runs once per session as a subprocess on a free loopback port; every test gets a fresh
bucket or container and a unique prefix. A service that cannot start fails the tests that
need it with its log: nothing is skipped. Credentials are the emulators' published dummy
ones, passed as URL options; the real environment's ``AWS_*``/``AZURE_*`` are cleared.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

import defusedxml.ElementTree as SafeET
import pytest

from tests.support.official import JS_DIR

# The fixtures, for the star import in tests/conftest.py.
__all__ = ["az_storage_url", "azurite", "clean_cloud_env", "moto", "s3_storage_url", "store_url"]

START_TIMEOUT_S = 60
# Azurite's development account, published in Azure's documentation.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURE_API_VERSION = "2021-08-06"
S3_REGION = "us-east-1"
# Environment variables obstore would read; tests must not pick up a developer's cloud login.
_CLOUD_ENV_PREFIXES = ("AWS_", "AZURE_", "AZURITE_", "GOOGLE_")


@dataclass
class Service:
    """An emulator subprocess listening on ``url``."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False


def start_service(name: str, argv: Callable[[int], Sequence[str]], log_dir: Path) -> Service:
    """Start ``argv(port)`` on a free port and wait until it answers HTTP.

    Fails the test (never skips) with the service's log if it does not come up in time.
    """
    for attempt in range(3):  # another process may take the port between probe and bind
        port = _free_port()
        log = log_dir / f"{name}-{attempt}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                list(argv(port)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=log_dir,  # whatever the service writes stays out of the repository
            )
        service = Service(name, proc, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(service.url + "/"):
                return service
            time.sleep(0.1)
        service.stop()
        if "EADDRINUSE" not in log.read_text(errors="replace"):
            break
    pytest.fail(
        f"{name} did not start within {START_TIMEOUT_S} s (exit status {proc.returncode}); "
        f"log {log}:\n{log.read_text(errors='replace')[-3000:]}",
        pytrace=False,
    )


# -- session services -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """moto's S3 server (``moto_server`` from the virtualenv)."""
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.fail(f"moto_server not found at {exe}: install the dev dependencies", pytrace=False)
    service = start_service(
        "moto",
        lambda port: [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        tmp_path_factory.mktemp("moto"),
    )
    yield service
    service.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Azurite's blob service from tests/js/node_modules, keeping its data in memory."""
    exe = JS_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not exe.exists() or shutil.which("node") is None:
        pytest.fail(f"Azurite needs node and {exe}: run `npm ci` in {JS_DIR}", pytrace=False)
    workspace = tmp_path_factory.mktemp("azurite")
    service = start_service(
        "azurite",
        lambda port: [
            str(exe),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--silent",
        ],
        workspace,
    )
    yield service
    service.stop()


# -- per-test buckets and containers ----------------------------------------------------------


def _unique(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(6)}"


def create_bucket(moto: Service, bucket: str) -> None:
    # moto does not check signatures, so a plain PUT creates a bucket.
    request = urllib.request.Request(f"{moto.url}/{bucket}", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200, r.status


def pending_multipart_uploads(endpoint: str, bucket: str) -> list[str]:
    """Keys of multipart uploads started in ``bucket`` and neither completed nor aborted."""
    with urllib.request.urlopen(f"{endpoint}/{bucket}?uploads", timeout=10) as r:
        root = SafeET.fromstring(r.read())
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    return [upload.findtext(f"{ns}Key") or "" for upload in root.iter(f"{ns}Upload")]


def azure_request(azurite: Service, method: str, resource: str, query: dict[str, str]) -> int:
    """A Shared Key-signed request to Azurite (``resource`` = ``container[/blob]``)."""
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": AZURE_API_VERSION}
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    # Path-style emulator URLs repeat the account name in the canonical resource.
    canonical_resource = f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{resource}" + "".join(
        f"\n{k}:{v}" for k, v in sorted(query.items())
    )
    string_to_sign = f"{method}\n" + "\n" * 11 + canonical_headers + canonical_resource
    digest = hmac.new(base64.b64decode(AZURITE_KEY), string_to_sign.encode(), hashlib.sha256)
    signature = base64.b64encode(digest.digest()).decode()
    qs = "&".join(f"{k}={quote(v)}" for k, v in query.items())
    request = urllib.request.Request(
        f"{azurite.url}/{AZURITE_ACCOUNT}/{resource}?{qs}",
        method=method,
        headers={**headers, "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return int(r.status)


def s3_store_url(moto: Service, bucket: str, prefix: str) -> str:
    options = {
        "endpoint": moto.url,
        "region": S3_REGION,
        "allow_http": "true",
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }
    return _with_options(f"s3://{bucket}/{prefix}", options)


def az_store_url(azurite: Service, container: str, prefix: str) -> str:
    options = {
        "account_name": AZURITE_ACCOUNT,
        "account_key": AZURITE_KEY,
        "endpoint": f"{azurite.url}/{AZURITE_ACCOUNT}",
        "allow_http": "true",
    }
    return _with_options(f"az://{container}/{prefix}", options)


def _with_options(base: str, options: dict[str, str]) -> str:
    # Percent-encode values: an account key's "+" would otherwise decode as a space.
    return base + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in options.items())


@pytest.fixture
def clean_cloud_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the developer's cloud credentials and settings from obstore."""
    for name in list(os.environ):
        if name.startswith(_CLOUD_ENV_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture
def s3_storage_url(moto: Service, clean_cloud_env: None) -> str:
    """``s3://`` URL of a fresh moto bucket, under a unique prefix."""
    bucket = _unique("bucket")
    create_bucket(moto, bucket)
    return s3_store_url(moto, bucket, _unique("prefix"))


@pytest.fixture
def az_storage_url(azurite: Service, clean_cloud_env: None) -> str:
    """``az://`` URL of a fresh Azurite container, under a unique prefix."""
    container = _unique("container")
    assert azure_request(azurite, "PUT", container, {"restype": "container"}) == 201
    return az_store_url(azurite, container, _unique("prefix"))


@pytest.fixture(params=["file", "s3", "az"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL per backend: local files, S3 (moto) and Azure (Azurite)."""
    if request.param == "file":
        return f"file://{tmp_path / 'store'}"
    url: str = request.getfixturevalue(f"{request.param}_storage_url")
    return url
