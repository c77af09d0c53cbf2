"""``ghacache caches list|delete|usage|evictions`` as a user runs it: a subprocess against a
spawned server, configured by GHACACHE_URL / GHACACHE_ADMIN_TOKEN or by flags.

Exit codes (module docstring of ghacache.cli.caches): 0 ok, 1 nothing matched, 2 usage,
3 server or network error. Each test seeds its own repository on one shared server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from ghacache.cli.main import main
from ghacache.protocol.scopes import parse_scope_spec
from ghacache.server.auth import load_or_create_secret, mint_token
from tests.conftest import SpawnedServer, spawn
from tests.support import wire

MAIN = "refs/heads/main"
FEATURE = "refs/heads/feature"
GH_FIELDS = ["id", "key", "ref", "version", "sizeInBytes", "createdAt", "lastAccessedAt"]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Rig:
    server: SpawnedServer
    admin: str

    def token(self, repo: str, scope: str) -> str:
        """A cache token, minted here (``SpawnedServer.token`` runs a process per token)."""
        secret = load_or_create_secret(self.server.data_dir / "secret")
        return mint_token(
            secret, repository=repo, scopes=[parse_scope_spec(scope)], ttl_s=3600, now=time.time()
        )

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        use_env: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``ghacache caches ARGS``; by default configured through the environment."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("GHACACHE_")}
        if use_env:
            base |= {"GHACACHE_URL": self.server.url, "GHACACHE_ADMIN_TOKEN": self.admin}
        return subprocess.run(
            [sys.executable, "-m", "ghacache", "caches", *args],
            capture_output=True,
            text=True,
            env=base | (env or {}),
            timeout=60,
        )

    def json(self, *args: str) -> Any:
        out = self.run(*args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def seed(self, repo: str, items: Sequence[tuple[str, int, str, str]]) -> list[int]:
        """Save (key, size, ref, version) entries, in order; return their ids."""

        async def go() -> list[int]:
            ids = []
            async with aiohttp.ClientSession() as http:
                for key, size, ref, version in items:
                    token = self.token(repo, f"{ref}:rw")
                    ids.append(
                        await wire.v2_save(
                            http, self.server.url, token, key, b"x" * size, version=version
                        )
                    )
            return ids

        return asyncio.run(go())

    def listed(self, repo: str) -> list[dict[str, Any]]:
        """The server's own view (management API over HTTP, no CLI), oldest first."""
        query = urllib.parse.urlencode({"per_page": 100, "sort": "created_at", "direction": "asc"})
        request = urllib.request.Request(
            f"{self.server.url}/repos/{repo}/actions/caches?{query}",
            headers={"Authorization": f"Bearer {self.admin}"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            return list(json.loads(r.read())["actions_caches"])

    def restore(self, repo: str, key: str, ref: str = MAIN) -> None:
        async def go() -> None:
            async with aiohttp.ClientSession() as http:
                token = self.token(repo, f"{ref}:r")
                found = await wire.v2_lookup(http, self.server.url, token, key)
                assert found["ok"] and found["matched_key"] == key

        asyncio.run(go())


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    data = tmp_path_factory.mktemp("caches-cli") / "data"
    server = spawn(data, "--fsync", "false")
    try:
        admin = subprocess.run(
            [sys.executable, "-m", "ghacache", "token", "--admin", "--data-dir", str(data)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        yield Rig(server, admin)
    finally:
        server.stop()


V = wire.VERSION
V2 = wire.BUILDKIT_VERSION


def standard(rig: Rig, repo: str) -> list[int]:
    """Five entries; ``npm-aaa`` in two versions and two refs."""
    return rig.seed(
        repo,
        [
            ("npm-aaa", 100, MAIN, V),
            ("npm-bbb", 3000, MAIN, V),
            ("pip-ccc", 2048, MAIN, V),
            ("npm-aaa", 700, FEATURE, V),
            ("npm-aaa", 50, MAIN, V2),
        ],
    )


# -- list ------------------------------------------------------------------------------------


def test_list_table(rig: Rig) -> None:
    ids = standard(rig, "cli/table")
    out = rig.run("list", "-R", "cli/table")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "KEY", "SIZE", "REF", "CREATED", "ACCESSED"]
    rows = [line.split() for line in lines[1:]]
    # Most recently accessed first (the default sort), one row per entry.
    assert [int(r[0]) for r in rows] == list(reversed(ids))
    assert rows[-1][:5] == [str(ids[0]), "npm-aaa", "100", "B", MAIN]
    assert rows[2][1:4] == ["pip-ccc", "2.0", "KiB"]
    assert rows[1][1:5] == ["npm-aaa", "700", "B", FEATURE]
    assert all(re.fullmatch(r"\d+[smhd]", r[-4]) and r[-3] == "ago" for r in rows)
    # Columns are aligned: every KEY starts where the header's does.
    column = lines[0].index("KEY")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines[1:])


def test_list_json_uses_ghs_field_names(rig: Rig) -> None:
    ids = standard(rig, "cli/json")
    caches = rig.json("list", "-R", "cli/json", "--json")
    assert [c["id"] for c in caches] == list(reversed(ids))
    for c in caches:
        assert list(c) == GH_FIELDS
        assert isinstance(c["id"], int) and isinstance(c["sizeInBytes"], int)
        assert TIMESTAMP.match(c["createdAt"]) and TIMESTAMP.match(c["lastAccessedAt"])
    assert {(c["key"], c["ref"], c["version"], c["sizeInBytes"]) for c in caches} == {
        ("npm-aaa", MAIN, V, 100),
        ("npm-bbb", MAIN, V, 3000),
        ("pip-ccc", MAIN, V, 2048),
        ("npm-aaa", FEATURE, V, 700),
        ("npm-aaa", MAIN, V2, 50),
    }
    # A chosen subset, in the order asked for.
    some = rig.json("list", "-R", "cli/json", "--json", "sizeInBytes,key")
    assert [list(c) for c in some] == [["sizeInBytes", "key"]] * 5
    # An unknown field is a usage error that names it.
    out = rig.run("list", "-R", "cli/json", "--json", "id,size")
    assert out.returncode == 2 and "size" in out.stderr and out.stdout == ""


def test_list_filters_sort_order_and_limit(rig: Rig) -> None:
    ids = standard(rig, "cli/filters")
    rig.restore("cli/filters", "npm-bbb")  # now the most recently accessed

    def keys(*args: str) -> list[tuple[int, str, str, int]]:
        got = rig.json("list", "-R", "cli/filters", "--json", "id,key,ref,sizeInBytes", *args)
        return [(c["id"], c["key"], c["ref"], c["sizeInBytes"]) for c in got]

    # -k is a prefix (npm-a, not aaa), default order most recently accessed first.
    assert keys("-k", "npm-a") == [
        (ids[4], "npm-aaa", MAIN, 50),
        (ids[3], "npm-aaa", FEATURE, 700),
        (ids[0], "npm-aaa", MAIN, 100),
    ]
    # -r is exact, and combines with -k.
    assert keys("-k", "npm", "-r", FEATURE) == [(ids[3], "npm-aaa", FEATURE, 700)]
    # -S / -O / -L.
    assert [size for *_, size in keys("-S", "size_in_bytes", "-O", "asc", "-L", "4")] == [
        50,
        100,
        700,
        2048,
    ]
    long = keys(
        "--key", "npm", "--ref", MAIN, "--sort", "created_at", "--order", "desc", "--limit", "2"
    )
    assert [i for i, *_ in long] == [ids[4], ids[1]]
    assert keys("-L", "1") == [(ids[1], "npm-bbb", MAIN, 3000)]  # the restored one


def test_list_limit_pages_through_more_than_100(rig: Rig) -> None:
    ids = rig.seed("cli/many", [(f"k-{i:03d}", 1, MAIN, V) for i in range(105)])
    got = rig.json(
        "list", "-R", "cli/many", "--json", "id", "-L", "500", "-S", "created_at", "-O", "asc"
    )
    assert [c["id"] for c in got] == ids
    assert len(rig.json("list", "-R", "cli/many", "--json", "id")) == 30  # default limit


def test_list_nothing(rig: Rig) -> None:
    out = rig.run("list", "-R", "cli/empty")
    assert out.returncode == 0 and out.stdout == "" and "no caches" in out.stderr
    assert rig.json("list", "-R", "cli/empty", "--json") == []


# -- delete ------------------------------------------------------------------------------------


def test_delete_by_id(rig: Rig) -> None:
    ids = standard(rig, "cli/del-id")
    other = rig.seed("cli/del-id-other", [("x", 1, MAIN, V)])[0]
    out = rig.run("delete", str(ids[1]), "-R", "cli/del-id")
    assert out.returncode == 0, out.stderr
    assert "deleted 1 cache from cli/del-id" in out.stdout
    assert [c["id"] for c in rig.listed("cli/del-id")] == [i for i in ids if i != ids[1]]
    again = rig.run("delete", str(ids[1]), "-R", "cli/del-id")
    assert again.returncode == 1 and "no caches" in again.stderr and again.stdout == ""
    # An id of another repository is not found here (and stays), unless told that is fine.
    ok = rig.run("delete", str(other), "-R", "cli/del-id", "--succeed-on-no-caches")
    assert ok.returncode == 0, ok.stderr
    assert [c["id"] for c in rig.listed("cli/del-id-other")] == [other]
    assert len(rig.listed("cli/del-id")) == 4


def test_delete_by_key_with_and_without_ref(rig: Rig) -> None:
    standard(rig, "cli/del-key")
    out = rig.run("delete", "npm-aaa", "-R", "cli/del-key", "--ref", FEATURE)
    assert out.returncode == 0 and "deleted 1 cache from" in out.stdout, out.stderr
    assert [(c["key"], c["ref"], c["version"]) for c in rig.listed("cli/del-key")] == [
        ("npm-aaa", MAIN, V),
        ("npm-bbb", MAIN, V),
        ("pip-ccc", MAIN, V),
        ("npm-aaa", MAIN, V2),
    ]
    # Without --ref: every version of exactly that key; never keys it is a prefix of.
    out = rig.run("delete", "npm-aaa", "-R", "cli/del-key")
    assert out.returncode == 0 and "deleted 2 caches from" in out.stdout, out.stderr
    assert [c["key"] for c in rig.listed("cli/del-key")] == ["npm-bbb", "pip-ccc"]
    prefix = rig.run("delete", "npm", "-R", "cli/del-key")
    assert prefix.returncode == 1 and "no caches" in prefix.stderr
    assert [c["key"] for c in rig.listed("cli/del-key")] == ["npm-bbb", "pip-ccc"]


def test_delete_all(rig: Rig) -> None:
    rig.seed("cli/del-all", [(f"k{i}", 10, MAIN, V) for i in range(4)])
    standard(rig, "cli/del-all-keep")
    out = rig.run("delete", "--all", "-R", "cli/del-all")
    assert out.returncode == 0 and "deleted 4 caches from cli/del-all" in out.stdout, out.stderr
    assert rig.listed("cli/del-all") == []
    assert len(rig.listed("cli/del-all-keep")) == 5
    empty = rig.run("delete", "-a", "-R", "cli/del-all")
    assert empty.returncode == 1 and "no caches" in empty.stderr
    assert rig.run("delete", "-a", "-R", "cli/del-all", "--succeed-on-no-caches").returncode == 0


# -- usage and evictions -----------------------------------------------------------------------


def test_usage_of_one_and_all_repositories(rig: Rig) -> None:
    standard(rig, "cli/usage")
    mine = {
        "full_name": "cli/usage",
        "active_caches_size_in_bytes": 100 + 3000 + 2048 + 700 + 50,
        "active_caches_count": 5,
    }
    assert rig.json("usage", "-R", "cli/usage", "--json") == [mine]
    out = rig.run("usage", "-R", "cli/usage")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "CACHES", "SIZE"]
    assert lines[1:] == [lines[1]] and lines[1].split() == ["cli/usage", "5", "5.8", "KiB"]
    everything = rig.json("usage", "--json")
    names = [u["full_name"] for u in everything]
    assert "cli/usage" in names and names == sorted(set(names))
    assert next(u for u in everything if u["full_name"] == "cli/usage") == mine


def test_evictions_show_deletes(rig: Rig) -> None:
    ids = standard(rig, "cli/evict")
    assert rig.run("delete", "npm-aaa", "-R", "cli/evict").returncode == 0
    assert rig.run("delete", str(ids[1]), "-R", "cli/evict").returncode == 0
    record = rig.json("evictions", "-R", "cli/evict", "--json")
    assert len(record) == 4
    assert {(e["repository"], e["key"], e["reason"]) for e in record} == {
        ("cli/evict", "npm-aaa", "deleted"),
        ("cli/evict", "npm-bbb", "deleted"),
    }
    assert record[0]["cache_id"] == ids[1]  # newest first
    assert sorted(e["size_in_bytes"] for e in record) == [50, 100, 700, 3000]
    out = rig.run("evictions", "-R", "cli/evict", "-L", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "KEY", "SIZE", "REASON", "EVICTED"]
    assert lines[1].split()[:5] == ["cli/evict", "npm-bbb", "2.9", "KiB", "deleted"]
    assert lines[2].split()[:2] == ["cli/evict", "npm-aaa"]
    assert len(lines) == 3  # -L 2


# -- configuration and exit codes ---------------------------------------------------------------


def test_flags_instead_of_environment(rig: Rig) -> None:
    rig.seed("cli/flags", [("f", 5, MAIN, V)])
    out = rig.run(
        "list", "-R", "cli/flags", "--json", "key", "--url", rig.server.url, "--admin-token", rig.admin,
        use_env=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"key": "f"}]
    # Flags win over the environment; the repository may come from GHACACHE_REPO.
    out = rig.run(
        "list", "--json", "key", "--url", rig.server.url,
        env={"GHACACHE_URL": "http://127.0.0.1:9", "GHACACHE_REPO": "cli/flags"},
    )  # fmt: skip
    assert out.returncode == 0 and json.loads(out.stdout) == [{"key": "f"}], out.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("delete", "-R", "cli/usage-errors"),  # neither target nor --all
        ("delete", "keep", "--all", "-R", "cli/usage-errors"),  # both
        ("list",),  # no repository
        ("list", "-R", "norepo"),  # not OWNER/NAME
        ("list", "-R", "a/b", "-S", "name"),
        ("list", "-R", "a/b", "-O", "up"),
        ("list", "-R", "a/b", "-L", "many"),
        ("list", "-R", "a/b", "--json", "id,bogus"),
        ("frobnicate",),
    ],
)
def test_usage_errors_exit_2(
    rig: Rig,
    args: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In-process (the same ``main`` the console script runs): usage errors never need the
    # network, and a subprocess per case would cost a second of imports each.
    if not rig.listed("cli/usage-errors"):
        rig.seed("cli/usage-errors", [("keep", 1, MAIN, V)])
    monkeypatch.delenv("GHACACHE_REPO", raising=False)
    monkeypatch.setenv("GHACACHE_URL", rig.server.url)
    monkeypatch.setenv("GHACACHE_ADMIN_TOKEN", rig.admin)
    try:
        code = main(["caches", *args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code  # type: ignore[assignment]
    out = capsys.readouterr()
    assert code == 2, (out.out, out.err)
    assert out.err and out.out == ""
    assert len(rig.listed("cli/usage-errors")) == 1


def test_missing_admin_token_exits_2(rig: Rig) -> None:
    out = rig.run("list", "-R", "a/b", use_env=False, env={"GHACACHE_URL": rig.server.url})
    assert out.returncode == 2 and "admin" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_and_network_errors_exit_3(rig: Rig) -> None:
    rig.seed("cli/errors", [("keep", 1, MAIN, V)])
    cache_token = rig.token("cli/errors", f"{MAIN}:rw")
    forbidden = rig.run(
        "delete", "keep", "-R", "cli/errors", env={"GHACACHE_ADMIN_TOKEN": cache_token}
    )
    assert forbidden.returncode == 3, forbidden.stderr
    assert "403" in forbidden.stderr and "admin" in forbidden.stderr
    garbage = rig.run("usage", "-R", "cli/errors", env={"GHACACHE_ADMIN_TOKEN": "garbage"})
    assert garbage.returncode == 3 and "401" in garbage.stderr, garbage.stderr
    down = rig.run(
        "list", "-R", "cli/errors", env={"GHACACHE_URL": f"http://127.0.0.1:{_free_port()}"}
    )
    assert down.returncode == 3 and "error" in down.stderr, down.stderr
    for out in (forbidden, garbage, down):
        assert out.stdout == "" and "Traceback" not in out.stderr
    assert [c["key"] for c in rig.listed("cli/errors")] == ["keep"]


def test_module_docstring_documents_the_exit_codes() -> None:
    import ghacache.cli.caches as caches

    doc = caches.__doc__ or ""
    for code, meaning in (
        ("0", "success"),
        ("1", "nothing matched"),
        ("2", "usage"),
        ("3", "server"),
    ):
        assert re.search(rf"\b{code}\b[^0-9]*{meaning}", doc), (code, doc)
