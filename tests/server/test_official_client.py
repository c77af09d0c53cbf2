"""Conformance oracle: the OFFICIAL ``@actions/cache`` clients against a real ghacache process.

6.3.0 speaks v2 (Twirp + Azure Put Blob/Put Block) when ACTIONS_CACHE_SERVICE_V2 is set and
v1 otherwise; 3.2.4 speaks v1 only. Every client run gets a fresh workspace (its cwd and
GITHUB_WORKSPACE) and a fresh RUNNER_TEMP; restored trees are compared file by file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tests.conftest import SpawnedServer, Spawner
from tests.support.official import OfficialResult, official_env, run_official

pytestmark = pytest.mark.slow

Impl = Literal["v6", "v3"]
Protocol = Literal["v1", "v2"]

PATHS = ("data",)
MiB = 1024 * 1024
PIECE = 8 * MiB
# Over the 128 MiB single-shot limit of the Azure SDK, so v6 must use Put Block.
LARGE_BYTES = 140 * MiB
SINGLE_SHOT_LIMIT = 128 * MiB

V6_V2 = pytest.param("v6", "v2", id="v6-v2")
V3_V1 = pytest.param("v3", "v1", id="v3-v1")
V6_V1 = pytest.param("v6", "v1", id="v6-v1")
ALL_CLIENTS = [V6_V2, V3_V1, V6_V1]

_CACHE_SIZE_RE = re.compile(r"^Cache Size: ~\d+ MB \((\d+) B\)$", re.MULTILINE)
RESERVE_CONFLICT = "another job may be creating this cache"


@dataclass
class Rig:
    """One spawned server, one token, and a supply of fresh directories."""

    server: SpawnedServer
    token: str
    root: Path
    last_temp: Path | None = field(default=None, init=False)
    _count: int = field(default=0, init=False)

    def fresh(self, label: str) -> Path:
        self._count += 1
        path = self.root / f"{label}-{self._count}"
        path.mkdir(parents=True)
        return path

    def run(
        self,
        impl: Impl,
        protocol: Protocol,
        op: Literal["save", "restore"],
        key: str,
        workspace: Path,
        restore_keys: Sequence[str] = (),
    ) -> OfficialResult:
        self.last_temp = self.fresh("runner-temp")
        env = official_env(
            protocol=protocol,
            base_url=self.server.url,
            token=self.token,
            workspace=workspace,
            temp=self.last_temp,
        )
        return run_official(
            impl, op, key=key, paths=PATHS, restore_keys=restore_keys, env=env, cwd=workspace
        )

    def save(self, impl: Impl, protocol: Protocol, key: str, files: dict[str, bytes]) -> int:
        """Save ``files`` (relative to the workspace) under ``key``; return the entry id."""
        workspace = self.fresh("save")
        write_tree(workspace, files)
        res = self.run(impl, protocol, "save", key, workspace)
        assert_clean(res)
        assert isinstance(res.result, int) and res.result > 0, res.stdout
        return res.result

    def restore(
        self, impl: Impl, protocol: Protocol, key: str, restore_keys: Sequence[str] = ()
    ) -> tuple[OfficialResult, Path]:
        """Restore into a fresh, empty workspace."""
        workspace = self.fresh("restore")
        res = self.run(impl, protocol, "restore", key, workspace, restore_keys)
        assert_clean(res)
        return res, workspace


def problems(res: OfficialResult) -> list[str]:
    """Warnings and errors the client printed (``::warning::`` / ``::error::``)."""
    return res.warnings + [ln for ln in res.stdout.splitlines() if ln.startswith("::error::")]


def assert_clean(res: OfficialResult) -> None:
    assert res.ok, (res.error, res.stdout, res.stderr)
    assert problems(res) == [], res.stdout


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path; directories must hold something."""
    out: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            assert any(path.iterdir()), f"unexpected empty directory {rel}"
        else:
            out[rel] = path.read_bytes()
    return out


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, read in pieces (for trees too big to hold)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while piece := f.read(PIECE):
                    digest.update(piece)
            out[path.relative_to(root).as_posix()] = digest.hexdigest()
    return out


def small_tree(tag: str) -> dict[str, bytes]:
    """A few files of a few KB, in nested directories, distinct per ``tag``."""
    return {
        "data/readme.txt": f"cache {tag}\n".encode() * 50,
        "data/random.bin": os.urandom(6000),
        "data/sub/deep/zeros.bin": bytes(4096),
        "data/sub/tag": tag.encode(),
    }


@pytest.fixture
def rig(spawn_server: Spawner, tmp_path: Path) -> Iterator[Rig]:
    server = spawn_server()
    yield Rig(server, server.token("octo/repo", "refs/heads/main:rw"), tmp_path / "runs")
    server.stop()
    for pipe in (server.proc.stdout, server.proc.stderr):
        if pipe is not None:
            pipe.close()


@pytest.mark.parametrize(("impl", "protocol"), ALL_CLIENTS)
def test_small_archive_round_trip_exact_hit(rig: Rig, impl: Impl, protocol: Protocol) -> None:
    files = small_tree("small")
    rig.save(impl, protocol, "small-key", files)

    res, workspace = rig.restore(impl, protocol, "small-key")

    assert res.result == "small-key"
    assert read_tree(workspace) == files
    assert "Cache restored successfully" in res.stdout


@pytest.mark.parametrize(("impl", "protocol"), [V6_V2, V3_V1])
def test_large_archive_round_trip(rig: Rig, impl: Impl, protocol: Protocol) -> None:
    source = rig.fresh("save")
    big = source / "data" / "big.bin"
    big.parent.mkdir(parents=True)
    try:
        with big.open("wb") as f:
            for offset in range(0, LARGE_BYTES, PIECE):
                f.write(os.urandom(min(PIECE, LARGE_BYTES - offset)))
        assert big.stat().st_size == LARGE_BYTES
        (source / "data" / "small.txt").write_bytes(b"next to a big file\n")
        expected = hash_tree(source)

        res = rig.run(impl, protocol, "save", "large-key", source)
        assert_clean(res)
        assert isinstance(res.result, int) and res.result > 0, res.stdout
        shutil.rmtree(source)

        restored, workspace = rig.restore(impl, protocol, "large-key")
        assert restored.result == "large-key"
        sizes = [int(m) for m in _CACHE_SIZE_RE.findall(restored.stdout)]
        assert len(sizes) == 1 and sizes[0] > SINGLE_SHOT_LIMIT, restored.stdout
        assert hash_tree(workspace) == expected
    finally:
        shutil.rmtree(rig.root, ignore_errors=True)
        rig.server.stop()
        shutil.rmtree(rig.server.data_dir, ignore_errors=True)


@pytest.mark.parametrize(("impl", "protocol"), ALL_CLIENTS)
def test_restore_key_prefix_returns_newest(rig: Rig, impl: Impl, protocol: Protocol) -> None:
    older, newer = small_tree("pre-1"), small_tree("pre-2")
    rig.save(impl, protocol, "pre-1", older)
    rig.save(impl, protocol, "pre-2", newer)

    res, workspace = rig.restore(impl, protocol, "nomatch", restore_keys=["pre-"])

    assert res.result == "pre-2"
    assert read_tree(workspace) == newer


@pytest.mark.parametrize(("impl", "protocol"), ALL_CLIENTS)
def test_miss_returns_nothing_and_writes_nothing(rig: Rig, impl: Impl, protocol: Protocol) -> None:
    rig.save(impl, protocol, "present", small_tree("present"))

    res, workspace = rig.restore(impl, protocol, "absent", restore_keys=["present-", "resent"])

    assert res.result is None
    assert list(workspace.iterdir()) == []
    assert rig.last_temp is not None and list(rig.last_temp.iterdir()) == []


@pytest.mark.parametrize(("impl", "protocol"), ALL_CLIENTS)
def test_second_save_of_same_key_already_exists(rig: Rig, impl: Impl, protocol: Protocol) -> None:
    original = small_tree("original")
    rig.save(impl, protocol, "dup-key", original)

    workspace = rig.fresh("save")
    write_tree(workspace, small_tree("impostor"))
    res = rig.run(impl, protocol, "save", "dup-key", workspace)

    assert res.ok and res.result == -1, res.stdout
    conflict = [ln for ln in res.info_lines if ln.startswith("Failed to save:")]
    assert len(conflict) == 1, res.stdout
    assert f"Unable to reserve cache with key dup-key, {RESERVE_CONFLICT}" in conflict[0]
    if protocol == "v1":  # v1 clients append the server's message; v2 ones drop it
        assert "More details:" in conflict[0] and "already exists" in conflict[0]
    assert problems(res) == [], res.stdout
    restored, restored_ws = rig.restore(impl, protocol, "dup-key")
    assert restored.result == "dup-key"
    assert read_tree(restored_ws) == original


@pytest.mark.parametrize(
    ("saver", "restorer"),
    [
        pytest.param(("v6", "v2"), ("v3", "v1"), id="v6v2-to-v3v1"),
        pytest.param(("v3", "v1"), ("v6", "v2"), id="v3v1-to-v6v2"),
    ],
)
def test_cross_protocol_restore(
    rig: Rig, saver: tuple[Impl, Protocol], restorer: tuple[Impl, Protocol]
) -> None:
    files = small_tree("cross")
    rig.save(*saver, "cross-key", files)

    res, workspace = rig.restore(*restorer, "cross-key")

    assert res.result == "cross-key"
    assert read_tree(workspace) == files
