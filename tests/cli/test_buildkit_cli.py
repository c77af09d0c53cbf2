"""`ghacache buildkit export|import|merge|gc|ls` as a user runs them, against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ghacache.buildkit.layout import read_layout
from ghacache.cacheconfig.merge import merge, normalize
from tests.conftest import SpawnedServer, Spawner
from tests.support.fixtures import layout


def _bk(
    server: SpawnedServer, token: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ACTIONS_", "GHACACHE_"))}
    full = {
        **base,
        "ACTIONS_RESULTS_URL": server.url + "/",
        "ACTIONS_CACHE_SERVICE_V2": "true",
        "ACTIONS_RUNTIME_TOKEN": token,
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "ghacache", "buildkit", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


def test_export_import_ls_gc_round_trip(spawn_server: Spawner, tmp_path: Path) -> None:
    server = spawn_server("--buildkit-merge", "false")
    token = server.token("octo/app", "refs/heads/main:rw")
    out = _bk(server, token, "export", "--dir", str(layout("build-a")), "--scope", "app")
    assert out.returncode == 0, out.stderr
    assert "index-app-1-f921bd05#1" in out.stdout and "6 blobs uploaded" not in out.stdout
    again = _bk(server, token, "export", "--dir", str(layout("build-b")), "--scope", "app")
    assert again.returncode == 0 and "index-app-1-f921bd05#2" in again.stdout

    ls = _bk(server, token, "ls", "--scope", "app", "--json")
    [info] = json.loads(ls.stdout)
    expected = merge(read_layout(layout("build-a")).config, read_layout(layout("build-b")).config)
    assert (info["generation"], info["records"], info["layers"], info["missing_blobs"]) == (
        2,
        len(expected.records),
        len(expected.layers),
        [],
    )

    dest = tmp_path / "restored"
    imp = _bk(server, token, "import", "--dir", str(dest), "--scope", "app")
    assert imp.returncode == 0, imp.stderr
    assert read_layout(dest).config == expected

    gc = _bk(server, token, "gc", "--scope", "app")
    assert (gc.returncode, gc.stdout.strip()) == (0, "nothing to collect")


def test_env_twins_and_merge(spawn_server: Spawner) -> None:
    server = spawn_server("--buildkit-merge", "false")
    token = server.token("octo/app", "refs/heads/main:rw")
    for scope, name in (("a", "build-a"), ("b", "build-b")):
        done = _bk(
            server,
            token,
            "export",
            env={"GHACACHE_BUILDKIT_SCOPE": scope, "GHACACHE_BUILDKIT_DIR": str(layout(name))},
        )
        assert done.returncode == 0, done.stderr
    merged = _bk(server, token, "merge", "--scope", "all", "--from-scope", "a", "--from-scope", "b")
    assert merged.returncode == 0 and "index-all-1-f921bd05#1" in merged.stdout
    ls = _bk(server, token, "ls", "--json", env={"GHACACHE_BUILDKIT_SCOPE": "all a"})
    infos = {i["scope"]: i for i in json.loads(ls.stdout)}
    assert infos["all"]["records"] == len(
        merge(read_layout(layout("build-a")).config, read_layout(layout("build-b")).config).records
    )
    assert infos["a"]["records"] == len(normalize(read_layout(layout("build-a")).config).records)


def test_errors_exit_nonzero_with_a_message(spawn_server: Spawner, tmp_path: Path) -> None:
    server = spawn_server()
    token = server.token("octo/app", "refs/heads/main:rw")
    missing = _bk(server, token, "import", "--dir", str(tmp_path / "x"), "--scope", "nothing-here")
    assert missing.returncode == 1 and "no BuildKit cache found" in missing.stderr
    bad_dir = _bk(server, token, "export", "--dir", str(tmp_path), "--scope", "app")
    assert bad_dir.returncode == 1 and "index.json" in bad_dir.stderr
    usage = _bk(server, token, "export", "--scope", "app")
    assert usage.returncode == 2 and "--dir" in usage.stderr
