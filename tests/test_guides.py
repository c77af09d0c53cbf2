"""docs/runners.md is executable: its shell blocks run here, as written, against a real server.

Every ```sh block in the guide is preceded by one of two comments:

- ``<!-- tested: NAME -->``: the block is run by bash (``set -euo pipefail``) in a fresh
  directory, against a ``ghacache serve`` subprocess, by the one test that declares NAME with
  ``@runs_blocks``; that test must run it and check what it did.
- ``<!-- not runnable here: REASON -->``: it needs what this machine lacks (Docker, act, buildctl,
  a runner binary, the internet).

The placeholders are environment variables set by the test, never substituted into the text:
``GHACACHE_URL`` (the server's base URL, no trailing slash), ``TOKEN`` (a runtime token for
octo/app with refs/heads/main read-write) and ``GHACACHE_DATA_DIR`` (so that ``ghacache token``
signs with the server's secret). A block that only exports variables is checked by running the
official ``@actions/cache`` client with exactly the values it exported.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import jwt
import pytest

from ghacache.client import decode_token
from tests.conftest import SpawnedServer, Spawner
from tests.support.official import run_official

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "runners.md"
SHELL_LANGUAGES = {"sh", "bash", "shell"}

FENCE = re.compile(r"^\s*```(\S*)\s*$")
MARKER = re.compile(r"^<!--.*-->$")
TESTED = re.compile(r"^<!--\s*tested:\s*([a-z0-9][a-z0-9-]*)\s*-->$")
NOT_RUNNABLE = re.compile(r"^<!--\s*not runnable here:\s*(\S.*?)\s*-->$")

# The official client's archive version covers its paths, so the workspaces all cache "data".
CACHE_VARIABLES = (
    "GITHUB_SERVER_URL",
    "ACTIONS_RESULTS_URL",
    "ACTIONS_CACHE_URL",
    "ACTIONS_CACHE_SERVICE_V2",
    "ACTIONS_RUNTIME_TOKEN",
)


# -- reading the guide --------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    marker: str | None  # the comment right above the fence, if there is one


def parse_blocks(text: str) -> list[Block]:
    """Every fenced block, with the HTML comment on the nearest non-blank line above it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"runners.md:{i + 1}: code block never closed"
        above = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        code = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
        marker = above if MARKER.match(above) else None
        blocks.append(Block(opening.group(1), code, i + 1, marker))
        i = end + 1
    return blocks


BLOCKS = parse_blocks(GUIDE.read_text())


def name_blocks() -> dict[str, Block]:
    named: dict[str, Block] = {}
    for block in BLOCKS:
        match = TESTED.match(block.marker or "")
        if match:
            name = match.group(1)
            assert name not in named, f"runners.md:{block.line}: block name {name!r} used twice"
            named[name] = block
    return named


TESTED_BLOCKS = name_blocks()

# Which test runs which block: filled in by @runs_blocks at import time.
BLOCK_OWNERS: dict[str, str] = {}

F = TypeVar("F", bound=Callable[..., object])


def runs_blocks(*names: str) -> Callable[[F], F]:
    """Declare that the decorated test runs these guide blocks (and checks their outcome)."""

    def register(test: F) -> F:
        for name in names:
            assert name not in BLOCK_OWNERS, f"{name} is already run by {BLOCK_OWNERS[name]}"
            BLOCK_OWNERS[name] = test.__name__
        return test

    return register


# -- running blocks -----------------------------------------------------------------------


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    cwd: Path
    exported: dict[str, str]  # the block's environment when it finished


@dataclass
class Guide:
    """Runs the blocks its test declared, against one server, and remembers which ran."""

    server: SpawnedServer
    token: str
    root: Path
    owned: frozenset[str]
    ran: set[str] = field(default_factory=set)

    def fresh(self, label: str) -> Path:
        path = self.root / f"{label}-{len(list(self.root.iterdir()))}"
        path.mkdir()
        return path

    def base_env(self) -> dict[str, str]:
        """A clean environment: only PATH (with this venv's ghacache first), HOME, placeholders."""
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return {
            "PATH": path,
            "HOME": str(self.root),
            "GHACACHE_URL": self.server.url,
            "TOKEN": self.token,
            "GHACACHE_DATA_DIR": str(self.server.data_dir),
        }

    def run(self, name: str, *, env: Mapping[str, str] | None = None, check: bool = True) -> Ran:
        assert name in self.owned, f"block {name!r} is not declared by this test (@runs_blocks)"
        self.ran.add(name)
        cwd = self.fresh(name)
        script = self.root / f"{cwd.name}.sh"
        script.write_text(TESTED_BLOCKS[name].code)
        dump = self.root / f"{cwd.name}.env"
        # The block is sourced verbatim; the environment it leaves is dumped after it.
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", '. "$0"; env -0 > "$1"', str(script), str(dump)],
            cwd=cwd,
            env={**self.base_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check:
            assert proc.returncode == 0, f"block {name} exited {proc.returncode}:\n{proc.stderr}"
        exported = {}
        if dump.exists():
            pairs = (item.split("=", 1) for item in dump.read_text().split("\0") if item)
            exported = {key: value for key, value in pairs}
        return Ran(proc.returncode, proc.stdout, proc.stderr, cwd, exported)


@pytest.fixture
def guide(request: pytest.FixtureRequest, spawn_server: Spawner, tmp_path: Path) -> Iterator[Guide]:
    server = spawn_server()
    owned = frozenset(n for n, test in BLOCK_OWNERS.items() if test == request.function.__name__)
    root = tmp_path / "guide"
    root.mkdir()
    g = Guide(server, server.token("octo/app"), root, owned)
    yield g
    assert g.ran == owned, f"declared but never run: {sorted(owned - g.ran)}"


def job_env(ran: Ran, workspace: Path, temp: Path) -> dict[str, str]:
    """What a job step would see: the cache variables the block exported, plus a workspace."""
    env = {k: ran.exported[k] for k in CACHE_VARIABLES if k in ran.exported}
    return env | {"GITHUB_WORKSPACE": str(workspace), "RUNNER_TEMP": str(temp)}


def write_data(workspace: Path, text: str) -> None:
    (workspace / "data").mkdir()
    (workspace / "data" / "hello.txt").write_text(text)


# -- the guide's structure ------------------------------------------------------------------


def test_every_shell_block_is_marked() -> None:
    for block in BLOCKS:
        marked = block.marker is not None and (
            TESTED.match(block.marker) or NOT_RUNNABLE.match(block.marker)
        )
        if block.language in SHELL_LANGUAGES:
            assert marked, (
                f"runners.md:{block.line}: a ```{block.language} block needs "
                "<!-- tested: NAME --> or <!-- not runnable here: REASON --> right above it"
            )
        else:
            assert not marked, f"runners.md:{block.line}: only shell blocks are run or excused"


def test_every_marker_belongs_to_a_block() -> None:
    markers = [
        line.strip()
        for line in GUIDE.read_text().splitlines()
        if TESTED.match(line.strip()) or NOT_RUNNABLE.match(line.strip())
    ]
    attached = [b.marker for b in BLOCKS if b.marker is not None]
    assert markers == attached, "a marker must sit right above the block it describes"


def test_every_tested_block_is_run_by_a_test() -> None:
    unknown = sorted(set(BLOCK_OWNERS) - set(TESTED_BLOCKS))
    assert not unknown, f"tests run blocks the guide does not have: {unknown}"
    unowned = sorted(set(TESTED_BLOCKS) - set(BLOCK_OWNERS))
    assert not unowned, f"tested blocks no test runs: {unowned}"


def test_readme_links_the_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    pointing = readme.split("## Pointing clients at the server", 1)[1].split("\n## ", 1)[0]
    documentation = readme.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    assert "docs/runners.md" in pointing
    assert "docs/runners.md" in documentation


# -- the blocks ---------------------------------------------------------------------------


@runs_blocks("mint-token", "decode-token", "probe-token")
def test_a_minted_token_is_accepted(guide: Guide) -> None:
    minted = guide.run("mint-token").stdout.strip()
    info = decode_token(minted)
    assert info.repository == "octo/app"
    assert info.writable_refs == ("refs/heads/main",)
    assert info.expires_at is not None
    assert info.expires_at - time.time() == pytest.approx(30 * 86400, abs=120)

    claims = json.loads(guide.run("decode-token", env={"TOKEN": minted}).stdout)
    assert claims["repository"] == "octo/app"
    assert json.loads(claims["ac"]) == [{"Scope": "refs/heads/main", "Permission": 3}]

    lookup = json.loads(guide.run("probe-token", env={"TOKEN": minted}).stdout)
    assert lookup["ok"] is False  # a miss, answered: the token was accepted
    refused = guide.run("probe-token", env={"TOKEN": "not-a-token"}, check=False)
    assert refused.code == 22  # curl -f on an HTTP error (401 here)


@runs_blocks("run-step-v2")
def test_run_step_saves_and_restores(guide: Guide) -> None:
    ran = guide.run("run-step-v2")
    assert "Cache saved with key: deps-linux-1" in ran.stdout
    assert "Cache restored from key: deps-linux-1 (restore-key match)" in ran.stdout
    assert ran.stdout.endswith("built once\n")
    assert (ran.cwd / "deps" / "artifact.txt").read_bytes() == b"built once\n"


@runs_blocks("buildkit-ls")
def test_buildkit_ls_reads_the_scope(guide: Guide) -> None:
    assert guide.run("buildkit-ls").stdout == "app @ refs/heads/main: no index\n"


@runs_blocks("health")
def test_health(guide: Guide) -> None:
    assert json.loads(guide.run("health").stdout) == {"status": "ok"}


@pytest.mark.slow
@runs_blocks("official-roundtrip")
def test_official_client_restores_what_ghacache_saved(guide: Guide) -> None:
    ran = guide.run("official-roundtrip")
    assert "Cache saved with key: check-1" in ran.stdout
    assert ran.exported["ACTIONS_RESULTS_URL"] == guide.server.url + "/"

    target = guide.fresh("restore")
    env = job_env(ran, target, guide.fresh("temp"))
    result = run_official("v6", "restore", key="check-1", paths=["data"], env=env, cwd=target)
    assert result.ok and not result.warnings, (result.error, result.stdout)
    assert result.result == "check-1"
    assert (target / "data" / "hello.txt").read_bytes() == b"saved by ghacache\n"


@pytest.mark.slow
@runs_blocks("ghes-job-env")
def test_ghes_job_uses_v1_under_a_path_prefix(guide: Guide) -> None:
    ran = guide.run("ghes-job-env")
    assert ran.exported["ACTIONS_CACHE_URL"] == guide.server.url + "/ghes/"
    assert "ACTIONS_RESULTS_URL" not in ran.exported  # so v2 could not have worked

    source = guide.fresh("save")
    write_data(source, "saved on GHES\n")
    env = job_env(ran, source, guide.fresh("temp"))
    saved = run_official("v6", "save", key="ghes-1", paths=["data"], env=env, cwd=source)
    assert saved.ok and not saved.warnings, (saved.error, saved.stdout)
    assert f"{guide.server.url}/ghes/_apis/artifactcache/caches" in saved.stdout

    target = guide.fresh("restore")
    env = job_env(ran, target, guide.fresh("temp"))
    restored = run_official("v6", "restore", key="ghes-1", paths=["data"], env=env, cwd=target)
    assert restored.result == "ghes-1", (restored.error, restored.stdout)
    assert (target / "data" / "hello.txt").read_bytes() == b"saved on GHES\n"

    # The guide's warning: without the trailing "/" the client asks for /ghes_apis/... and misses.
    env["ACTIONS_CACHE_URL"] = env["ACTIONS_CACHE_URL"].rstrip("/")
    missed = run_official("v6", "restore", key="ghes-1", paths=["data"], env=env, cwd=target)
    assert missed.result is None
    assert any("404" in w for w in missed.warnings), missed.stdout


@pytest.mark.slow
@runs_blocks("gitea-job-env")
def test_gitea_job_with_a_step_token(guide: Guide) -> None:
    ran = guide.run("gitea-job-env")
    assert ran.exported["ACTIONS_RESULTS_URL"] == "https://git.example.com"  # never contacted

    source = guide.fresh("save")
    write_data(source, "saved from Gitea\n")
    env = job_env(ran, source, guide.fresh("temp"))
    saved = run_official("v6", "save", key="gitea-1", paths=["data"], env=env, cwd=source)
    assert saved.ok and not saved.warnings, (saved.error, saved.stdout)

    target = guide.fresh("restore")
    env = job_env(ran, target, guide.fresh("temp"))
    restored = run_official("v6", "restore", key="gitea-1", paths=["data"], env=env, cwd=target)
    assert restored.result == "gitea-1", (restored.error, restored.stdout)
    assert (target / "data" / "hello.txt").read_bytes() == b"saved from Gitea\n"


# -- facts the guide states that no block shows ----------------------------------------------


def test_gitea_runtime_token_is_refused_even_without_verification(spawn_server: Spawner) -> None:
    """§3.1: Gitea's token (services/actions/auth.go) names no repository, so even
    ``--auth none`` refuses it."""
    server = spawn_server("--auth", "none")
    now = int(time.time())
    gitea_token = jwt.encode(
        {
            "scp": "Actions.Results:1:2",
            "TaskID": 3,
            "RunID": 1,
            "JobID": 2,
            "ac": json.dumps([{"Scope": "", "Permission": 2}]),
            "exp": now + 3600,
            "nbf": now,
        },
        "a-gitea-instance-secret-of-32-bytes!",
        algorithm="HS256",
    )
    request = urllib.request.Request(
        f"{server.url}/_apis/artifactcache/cache?keys=k&version=v",
        headers={"Authorization": f"Bearer {gitea_token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    with refused.value as answer:
        assert answer.code == 401
        assert "names no repository" in answer.read().decode()
