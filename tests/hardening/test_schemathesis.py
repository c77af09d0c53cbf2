"""Schemathesis fuzzes the management API of a real server against its OpenAPI description.

The server runs in-process on 127.0.0.1 (port 0) and serves ``/actions/cache/openapi.json``;
Schemathesis loads the description from there (it leaves that document's own operation
out) and runs in its own threads while the test's event loop serves the requests.

- With an admin token: every check Schemathesis has (``checks.enabled``: not a server error,
  status code, content type, response header and response schema conformance, negative data
  rejected, positive data accepted, missing required header, unsupported method, Allow
  header, ignored auth, use after free, resource availability; object-level authorization
  needs several identities and has nothing to check here), positive and negative data, all
  phases (coverage with duplicated query parameters, fuzzing, stateful through the
  description's links), deterministic generation and a bounded number of examples.
  Dictionaries of the seeded names, keys and ids make half the generated values real, so
  listings find entries and deletions delete them. Afterwards every seeded entry is either
  still there or on the eviction record as deleted.
- Without a token, and with a repository's runtime token: every request to a documented
  operation is refused (401, 403), unsupported methods get 405, and nothing changed.

A failure message lists each Schemathesis failure with a curl command that reproduces it.
What earlier runs found (with more examples and random seeds) is pinned in
``test_what_schemathesis_found_is_refused_and_changes_nothing``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import schemathesis
import yarl
from openapi_spec_validator import validate
from schemathesis.engine import StopReason, events, from_schema

from ghacache._version import __version__
from ghacache.server.auth import mint_admin_token
from ghacache.server.routes import management
from tests.conftest import ServerHandle
from tests.support import wire

REPOS = ("octo/a", "octo/b")
MAIN, FEATURE = "refs/heads/main", "refs/heads/feature"
# Keys saved on main in each repository; the first of them on a feature branch too.
KEYS = ("npm-linux-1", "npm-linux-2", "pip", "go", "cargo")
# The keys Schemathesis may delete by key; the others are left for deletion by id.
DELETABLE_KEYS = ("npm-linux-1", "pip")
REFUSED = {401, 403}
PHASES = ("coverage", "fuzzing", "stateful")


@dataclass
class Seeded:
    ids: list[int]
    admin: str


@dataclass
class Run:
    """What one Schemathesis run did and found."""

    requests: int = 0
    # (operation label, request method) -> response statuses
    statuses: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop_reason: StopReason | None = None

    @property
    def operations(self) -> set[str]:
        return {label for label, _ in self.statuses}

    def report(self) -> str:
        return "\n\n".join([*self.failures, *self.errors])


def _spec() -> dict[str, Any]:
    return management.openapi_document()


def _spec_operations() -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return {
        (method.upper(), path)
        for path, item in _spec()["paths"].items()
        for method in item
        if method in methods
    }


def _config(
    headers: dict[str, str], *, phases: tuple[str, ...], examples: int, seeded: Seeded
) -> schemathesis.Config:
    owners = sorted({r.split("/")[0] for r in REPOS})
    names = sorted({r.split("/")[1] for r in REPOS})
    return schemathesis.Config.from_dict(
        {
            "headers": headers,
            "workers": 1,
            "phases": {
                **{p: {"enabled": p in phases} for p in ("examples", *PHASES)},
                # Also send each query parameter twice (the server must refuse that).
                "coverage": {
                    "enabled": "coverage" in phases,
                    "generate-duplicate-query-parameters": True,
                },
            },
            "generation": {"mode": "all", "max-examples": examples, "deterministic": True},
            "checks": {"enabled": True},
            "dictionaries": {
                "owners": {"values": owners},
                "names": {"values": names},
                "keys": {"values": list(DELETABLE_KEYS)},
                "refs": {"values": [MAIN, FEATURE]},
                "ids": {"values": seeded.ids},
                "repos": {"values": list(REPOS)},
            },
            "parameters": {
                "path.owner": {"dictionary": "owners", "probability": 0.5},
                "path.org": {"dictionary": "owners", "probability": 0.5},
                "path.repo": {"dictionary": "names", "probability": 0.5},
                "path.cache_id": {"dictionary": "ids", "probability": 0.5},
                "query.key": {"dictionary": "keys", "probability": 0.5},
                "query.ref": {"dictionary": "refs", "probability": 0.5},
                "query.repo": {"dictionary": "repos", "probability": 0.5},
            },
        }
    )


def run_schemathesis(base_url: str, config: schemathesis.Config) -> Run:
    """Load the description the server serves and run Schemathesis' engine to the end."""
    schema = schemathesis.openapi.from_url(base_url + management.OPENAPI_PATH, config=config)
    run = Run()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _record(run, event.recorder)
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"error in {event.label}: {event.info}")
        elif isinstance(event, events.FatalError):
            run.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            run.stop_reason = event.stop_reason
    return run


def _record(run: Run, recorder: Any) -> None:
    for case_id, interaction in recorder.interactions.items():
        run.requests += 1
        label = recorder.cases[case_id].value.operation.label
        status = interaction.response.status_code if interaction.response else 0
        run.statuses.setdefault((label, interaction.request.method), Counter())[status] += 1
    for checks in recorder.checks.values():
        for check in checks:
            info = check.failure_info
            if info is not None:
                failure = info.failure
                run.failures.append(
                    f"{failure.operation}: {check.name}: {failure.title}\n"
                    f"{failure.message}\n{info.code_sample}"
                )


async def _seed(server: ServerHandle, http: aiohttp.ClientSession) -> Seeded:
    ids = []
    for repo in REPOS:
        main = server.token(repo, f"{MAIN}:rw")
        for key in KEYS:
            ids.append(await wire.v2_save(http, server.url, main, key, key.encode() * 10))
        feature = server.token(repo, f"{FEATURE}:rw", f"{MAIN}:r")
        ids.append(await wire.v2_save(http, server.url, feature, KEYS[0], b"feature"))
    admin = mint_admin_token(server.secret, ttl_s=3600, now=server.clock())
    # One removal on record from the start, so eviction listings have an item to validate.
    path = f"/repos/{REPOS[1]}/actions/caches/{ids[-1]}"
    async with http.delete(server.url + path, headers=wire.auth(admin)) as r:
        assert r.status == 204, await r.text()
    return Seeded(ids=ids, admin=admin)


async def _snapshot(
    server: ServerHandle, http: aiohttp.ClientSession, admin: str
) -> dict[str, Any]:
    """Every listing the API has, as the admin sees it."""

    async def get(path: str, **params: str) -> Any:
        async with http.get(server.url + path, params=params, headers=wire.auth(admin)) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    caches = {repo: await get(f"/repos/{repo}/actions/caches", per_page="100") for repo in REPOS}
    return {
        "caches": caches,
        "usage": await get("/actions/cache/usage-by-repository", per_page="100"),
        "evictions": await get("/actions/cache/evictions", per_page="100"),
    }


def _committed_ids(snapshot: dict[str, Any]) -> set[int]:
    return {c["id"] for body in snapshot["caches"].values() for c in body["actions_caches"]}


# -- the description itself ------------------------------------------------------------------


def test_description_is_valid_openapi_and_every_operation_needs_the_admin_token() -> None:
    spec = _spec()
    validate(spec)
    assert spec["info"]["version"] == __version__
    assert spec["security"] == [{"adminToken": []}]
    assert spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if path == management.OPENAPI_PATH:
                assert operation["security"] == []
                continue
            assert "security" not in operation, (method, path)  # the global admin token
            assert {"401", "403", "5XX"} <= set(operation["responses"]), (method, path)


async def test_description_lists_exactly_the_management_routes(server: ServerHandle) -> None:
    registered = {
        (route.method, route.resource.canonical)
        for route in server.app.router.routes()
        if route.resource is not None
        and getattr(route.handler, "__module__", None) == management.__name__
        and route.method != "HEAD"  # aiohttp adds HEAD to every GET
    }
    assert registered == _spec_operations()


async def test_description_is_served_without_a_token(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.url + management.OPENAPI_PATH) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        assert await r.json() == _spec()


# -- what Schemathesis found, pinned ------------------------------------------------------------

FOUND = [
    # Repeated parameters: the first value used to win silently.
    ("GET", "/actions/cache/usage-by-repository", "per_page=10&per_page=abc"),
    ("GET", "/repos/octo/a/actions/caches", "sort=size_in_bytes&sort=created_at"),
    ("DELETE", "/repos/octo/a/actions/caches", "key=pip&key=pip"),
    # Empty numbers used to mean the default.
    ("GET", "/repos/octo/a/actions/caches", "per_page="),
    ("GET", "/orgs/octo/actions/cache/usage-by-repository", "page="),
    # NUL: no stored text holds one (PostgreSQL refuses it outright).
    ("GET", "/repos/octo/a/actions/caches", "key=pi%00p"),
    ("GET", "/repos/octo/a/actions/caches", "ref=refs%00"),
    ("DELETE", "/repos/octo/a/actions/caches", "key=pip&ref=refs/heads/main%00"),
    ("GET", "/actions/cache/evictions", "repo=octo/a%00"),
    # A '/' in a path name, smuggled as %2F (found by hand, writing the description).
    ("GET", "/repos/octo%2Fa/b/actions/caches", ""),
    ("DELETE", "/repos/octo/a%2Fb/actions/caches/1", ""),
    ("GET", "/orgs/octo%2Fa/actions/cache/usage", ""),
]


async def test_what_schemathesis_found_is_refused_and_changes_nothing(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    seeded = await _seed(server, http)
    before = await _snapshot(server, http, seeded.admin)
    for method, path, query in FOUND:
        url = f"{server.url}{path}?{query}" if query else server.url + path
        async with http.request(
            method, yarl.URL(url, encoded=True), headers=wire.auth(seeded.admin)
        ) as r:
            body = await r.json()
            assert r.status == 422, (method, path, query, body)
            assert body["code"] == "invalid_argument" and body["message"]
    assert await _snapshot(server, http, seeded.admin) == before


# -- Schemathesis ------------------------------------------------------------------------------


async def test_schemathesis_finds_nothing_with_an_admin_token(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    seeded = await _seed(server, http)
    config = _config(wire.auth(seeded.admin), phases=PHASES, examples=10, seeded=seeded)
    run = await asyncio.to_thread(run_schemathesis, server.url, config)

    assert run.stop_reason is StopReason.COMPLETED, run.report()
    assert not run.failures and not run.errors, run.report()
    tested = run.operations
    expected = {f"{m} {p}" for m, p in _spec_operations() if p != management.OPENAPI_PATH}
    assert tested == expected
    # Every operation was reached with real data, not only refused: each has a success.
    for label in expected:
        method = label.split()[0]
        statuses = run.statuses[(label, method)]
        assert any(200 <= s < 300 for s in statuses), (label, statuses)
    assert not any(s >= 500 for counts in run.statuses.values() for s in counts)
    print(f"\nschemathesis (admin): {len(tested)} operations, {run.requests} requests")

    # Nothing lost, nothing invented: each seeded entry is still listed or was deleted.
    after = await _snapshot(server, http, seeded.admin)
    remaining = _committed_ids(after)
    deleted = {e["cache_id"] for e in after["evictions"]["evictions"]}
    assert {e["reason"] for e in after["evictions"]["evictions"]} == {"deleted"}
    assert remaining | deleted == set(seeded.ids)
    assert not remaining & deleted
    assert after["evictions"]["total_count"] == len(deleted)


async def _assert_refused_everything(
    server: ServerHandle,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    phases: tuple[str, ...],
) -> Run:
    seeded = await _seed(server, http)
    before = await _snapshot(server, http, seeded.admin)
    config = _config(headers, phases=phases, examples=10, seeded=seeded)
    run = await asyncio.to_thread(run_schemathesis, server.url, config)

    assert run.stop_reason is StopReason.COMPLETED, run.report()
    assert not run.failures and not run.errors, run.report()
    expected = {f"{m} {p}" for m, p in _spec_operations() if p != management.OPENAPI_PATH}
    assert run.operations == expected
    for (label, method), statuses in run.statuses.items():
        documented = label.split()[0]
        allowed = REFUSED if method == documented else {405}
        assert set(statuses) <= allowed, (label, method, statuses)
    assert await _snapshot(server, http, seeded.admin) == before
    return run


async def test_schemathesis_without_a_token_is_refused_everywhere(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    # The coverage phase: systematic edge cases and schema violations of every parameter.
    run = await _assert_refused_everything(server, http, {}, ("coverage",))
    print(f"\nschemathesis (no token): {len(run.operations)} operations, {run.requests} requests")


async def test_schemathesis_with_a_runtime_token_is_refused_everywhere(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token(REPOS[0], f"{MAIN}:rw")
    # The fuzzing phase: random valid and invalid inputs.
    run = await _assert_refused_everything(server, http, wire.auth(token), ("fuzzing",))
    # A valid runtime token is recognised and refused as the wrong kind of token.
    assert any(403 in counts for counts in run.statuses.values())
    print(f"\nschemathesis (runtime token): {run.requests} requests")
