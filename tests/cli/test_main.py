"""The CLI contract: serve's first line, token minting, and GHACACHE_* variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from ghacache.cli.main import main
from ghacache.server.config import ServerConfig, parse_duration, parse_size
from tests.conftest import Spawner


def _claims(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_token_lists_scopes_in_ac_claim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "token",
            "--data-dir",
            str(tmp_path),
            "--repo",
            "o/r",
            "--scope",
            "refs/pull/1/merge:rw",
            "--scope",
            "refs/heads/main:r",
            "--ttl",
            "2h",
        ]
    )
    assert code == 0
    claims = _claims(capsys.readouterr().out.strip())
    assert claims["repository"] == "o/r"
    assert json.loads(str(claims["ac"])) == [
        {"Scope": "refs/pull/1/merge", "Permission": 3},
        {"Scope": "refs/heads/main", "Permission": 1},
    ]
    assert int(str(claims["exp"])) - int(str(claims["iat"])) == 7200


def test_token_reads_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GHACACHE_REPO", "env/repo")
    monkeypatch.setenv("GHACACHE_SCOPE", "refs/heads/a:rw refs/heads/b:r")
    monkeypatch.setenv("GHACACHE_DATA_DIR", str(tmp_path))
    assert main(["token"]) == 0
    claims = _claims(capsys.readouterr().out.strip())
    assert claims["repository"] == "env/repo"
    assert [s["Scope"] for s in json.loads(str(claims["ac"]))] == ["refs/heads/a", "refs/heads/b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scope", "refs/heads/main:rw"], "--repo"),
        (["--repo", "o/r"], "--scope"),
        (["--repo", "o/r", "--scope", "refs/heads/main"], "REF:rw"),
        (["--repo", "o/r", "--scope", "refs/heads/main:rw", "--ttl", "soon"], "duration"),
    ],
)
def test_token_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["token", "--data-dir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_serve_first_line_and_token_from_same_data_dir(spawn_server: Spawner) -> None:
    server = spawn_server()
    assert server.url.startswith("http://127.0.0.1:")
    assert not server.url.endswith(":0")
    token = server.token("o/r", "refs/heads/main:rw")
    body = json.dumps({"key": "k", "version": "v"}).encode()
    import urllib.request

    req = urllib.request.Request(
        server.url + "/twirp/github.actions.results.api.v1.CacheService/GetCacheEntryDownloadURL",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read()) == {"ok": False, "signed_download_url": "", "matched_key": ""}


def test_serve_reads_environment(tmp_path: Path) -> None:
    # GHACACHE_DATA_DIR chooses the data directory when --data-dir is absent.
    env_dir = tmp_path / "from-env"
    with subprocess.Popen(
        [sys.executable, "-m", "ghacache", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "GHACACHE_PORT": "0", "GHACACHE_DATA_DIR": str(env_dir)},
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("ghacache listening on http://127.0.0.1:")
            assert (env_dir / "secret").is_file()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_serve_rejects_bad_setting(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ghacache",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--url-ttl",
            "forever",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--url-ttl" in proc.stderr and "GHACACHE_URL_TTL" in proc.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("6h", 21600), ("7d", 604800), ("1w", 604800)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1 << 20), ("512MiB", 512 << 20), ("10GiB", 10 << 30), ("10GB", 10 * 10**9)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_config_defaults_match_table() -> None:
    config = ServerConfig.from_strings({})
    assert config == ServerConfig()


@pytest.mark.parametrize("value", ["0", "0s"])
def test_job_lease_must_be_positive(value: str) -> None:
    with pytest.raises(ValueError, match="--job-lease / GHACACHE_JOB_LEASE: must be longer"):
        ServerConfig.from_strings({"job_lease": value})
