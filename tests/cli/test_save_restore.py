"""``ghacache save``/``restore`` against a real server process, and interop with the OFFICIAL
``@actions/cache`` client both ways (6.3.0 over v2, 3.2.4 over v1): either side restores what
the other saved, into an identical tree."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from ghacache.cli.archive import cache_version
from tests.conftest import SpawnedServer, Spawner
from tests.support.official import official_env, run_official

pytestmark = pytest.mark.slow

PATHS = ("data",)
INTEROP = [pytest.param("v6", "v2", id="v6-v2"), pytest.param("v3", "v1", id="v3-v1")]


def tree(tag: str) -> dict[str, bytes]:
    return {
        "data/readme.txt": f"cache {tag}\n".encode() * 40,
        "data/random.bin": os.urandom(300_000),
        "data/sub/deep/zeros.bin": bytes(5000),
        "data/sub/empty": b"",
        "data/.hidden": tag.encode(),
    }


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.chmod(root / "data/readme.txt", 0o755)


def read_tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: contents and permission bits."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]


@dataclass
class Rig:
    server: SpawnedServer
    token: str
    root: Path
    _n: int = field(default=0, init=False)

    def fresh(self, label: str) -> Path:
        self._n += 1
        path = self.root / f"{label}-{self._n}"
        path.mkdir(parents=True)
        return path

    def env(self, protocol: Literal["v1", "v2"], workspace: Path) -> dict[str, str]:
        return official_env(
            protocol=protocol,
            base_url=self.server.url,
            token=self.token,
            workspace=workspace,
            temp=self.fresh("temp"),
        )

    def ghacache(
        self,
        protocol: Literal["v1", "v2"],
        workspace: Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> Run:
        """Run the ghacache CLI as a job step would: cwd = workspace, runner variables set."""
        output = self.fresh("output") / "github_output"
        child_env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
        child_env |= self.env(protocol, workspace) | {"GITHUB_OUTPUT": str(output)}
        child_env |= env or {}
        proc = subprocess.run(
            [sys.executable, "-m", "ghacache", *args],
            cwd=workspace,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        lines = output.read_text().splitlines() if output.exists() else []
        outputs = dict(line.split("=", 1) for line in lines)
        return Run(proc.returncode, proc.stdout, proc.stderr, outputs)

    def official(self, impl: Literal["v6", "v3"], protocol: Literal["v1", "v2"], op: Literal["save", "restore"], key: str, workspace: Path) -> object:  # fmt: skip
        res = run_official(
            impl, op, key=key, paths=PATHS, env=self.env(protocol, workspace), cwd=workspace
        )
        assert res.ok and not res.warnings, (res.error, res.stdout)
        return res.result


@pytest.fixture
def rig(spawn_server: Spawner, tmp_path: Path) -> Rig:
    server = spawn_server()
    return Rig(server, server.token(), tmp_path / "runs")


def test_version_matches_the_official_client() -> None:
    # actions-cache-client-wire.md: paths ["data"] with zstd, in both clients and protocols.
    assert (
        cache_version(["data"], "zstd-without-long")
        == "3ad75f27293d65a135214b8c82b296080f911dc107e52f1e7ec871a2eda46e69"
    )


@pytest.mark.parametrize(("impl", "protocol"), INTEROP)
def test_ghacache_save_then_official_restore(rig: Rig, impl: str, protocol: str) -> None:
    source = rig.fresh("save")
    write_tree(source, tree("ours"))
    saved = rig.ghacache(protocol, source, "save", "--key", "deps-1", "--path", "data")  # type: ignore[arg-type]
    assert saved.code == 0, saved.stderr
    assert "Cache saved with key: deps-1" in saved.stdout

    target = rig.fresh("restore")
    assert rig.official(impl, protocol, "restore", "deps-1", target) == "deps-1"  # type: ignore[arg-type]
    assert read_tree(target) == read_tree(source)


@pytest.mark.parametrize(("impl", "protocol"), INTEROP)
def test_official_save_then_ghacache_restore(rig: Rig, impl: str, protocol: str) -> None:
    source = rig.fresh("save")
    write_tree(source, tree("theirs"))
    assert rig.official(impl, protocol, "save", "deps-2", source)  # type: ignore[arg-type]

    target = rig.fresh("restore")
    run = rig.ghacache(protocol, target, "restore", "--key", "deps-2", "--path", "data")  # type: ignore[arg-type]
    assert run.code == 0, run.stderr
    assert "Cache restored from key: deps-2 (exact match)" in run.stdout
    assert run.outputs == {
        "cache-hit": "true",
        "cache-primary-key": "deps-2",
        "cache-matched-key": "deps-2",
    }
    assert read_tree(target) == read_tree(source)

    # A restore-key hit restores too, but is not a cache hit.
    other = rig.fresh("restore")
    run = rig.ghacache(
        protocol,  # type: ignore[arg-type]
        other,
        "restore", "--key", "deps-3", "--restore-key", "nothing-", "--restore-key", "deps-",
        "--path", "data",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert "Cache restored from key: deps-2 (restore-key match)" in run.stdout
    assert run.outputs["cache-hit"] == "false" and run.outputs["cache-matched-key"] == "deps-2"
    assert read_tree(other) == read_tree(source)


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_exit_codes(rig: Rig, protocol: Literal["v1", "v2"]) -> None:
    ws = rig.fresh("ws")
    write_tree(ws, tree("codes"))
    assert rig.ghacache(protocol, ws, "save", "--key", "k", "--path", "data").code == 0
    again = rig.ghacache(protocol, ws, "save", "--key", "k", "--path", "data")
    assert again.code == 0 and "already exists" in again.stdout

    empty = rig.fresh("miss")
    miss = rig.ghacache(protocol, empty, "restore", "--key", "other", "--path", "data")
    assert miss.code == 0 and "Cache not found for input keys: other" in miss.stdout
    assert miss.outputs == {
        "cache-hit": "false",
        "cache-primary-key": "other",
        "cache-matched-key": "",
    }
    strict = rig.ghacache(
        protocol, empty, "restore", "--key", "other", "--path", "data", "--fail-on-miss"
    )
    assert strict.code == 4
    # The flag's GHACACHE_* twin works the same.
    strict = rig.ghacache(
        protocol, empty, "restore", "--key", "other", "--path", "data",
        env={"GHACACHE_FAIL_ON_MISS": "true"},
    )  # fmt: skip
    assert strict.code == 4

    look = rig.ghacache(protocol, empty, "restore", "--key", "k", "--path", "data", "--lookup-only")
    assert look.code == 0 and "Cache found and can be restored from key: k" in look.stdout
    assert look.outputs["cache-hit"] == "true"
    assert list(empty.iterdir()) == []  # nothing was downloaded or extracted

    # A different path list is a different version: a miss.
    other_paths = rig.ghacache(protocol, empty, "restore", "--key", "k", "--path", "data/sub")
    assert other_paths.code == 0 and "not found" in other_paths.stdout


def test_environment_twins_and_usage_errors(rig: Rig) -> None:
    ws = rig.fresh("ws")
    write_tree(ws, tree("env"))
    env = {"GHACACHE_KEY": "from-env", "GHACACHE_PATH": "data\n!data/sub\n"}
    assert rig.ghacache("v2", ws, "save", env=env).code == 0
    target = rig.fresh("restore")
    run = rig.ghacache("v2", target, "restore", env=env)
    assert run.code == 0, run.stderr
    # "!data/sub" only drops the listed path itself; tar still takes data/ whole, as upstream.
    assert read_tree(target) == read_tree(ws)

    assert rig.ghacache("v2", ws, "save", "--path", "data").code == 2  # no key
    assert rig.ghacache("v2", ws, "restore", "--key", "k").code == 2  # no path
    bad = rig.ghacache("v2", ws, "restore", "--key", "a,b", "--path", "data")
    assert bad.code == 2 and "commas" in bad.stderr
    no_token = rig.ghacache(
        "v2", ws, "save", "--key", "k", "--path", "data", env={"ACTIONS_RUNTIME_TOKEN": ""}
    )
    assert no_token.code == 2 and "ACTIONS_RUNTIME_TOKEN" in no_token.stderr
    nothing = rig.ghacache("v2", ws, "save", "--key", "k", "--path", "missing")
    assert nothing.code == 1 and "Path Validation Error" in nothing.stderr


def test_errors_exit_1_with_the_reason(rig: Rig) -> None:
    ws = rig.fresh("ws")
    write_tree(ws, tree("err"))
    down = {"ACTIONS_RESULTS_URL": "http://127.0.0.1:9/", "GHACACHE_TIMEOUT": "2s"}
    run = rig.ghacache("v2", ws, "restore", "--key", "k", "--path", "data", env=down)
    assert run.code == 1 and "deadline" in run.stderr
    read_only = rig.server.token("octo/repo", "refs/heads/main:r")
    run = rig.ghacache("v2", ws, "save", "--key", "k", "--path", "data", "--token", read_only)
    assert run.code == 1 and "cache write denied" in run.stderr
