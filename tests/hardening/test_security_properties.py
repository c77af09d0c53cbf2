"""The security properties of the issue, each proved by a test against the real server.

Where each property is proved (tests in this file are marked *):

1. Runtime and admin tokens: ``exp``, ``nbf``, signature and algorithm are checked; no
   ``alg: none``, no HS/RS confusion.
   - tests/server/test_auth.py: test_secret_expired_token_is_rejected,
     test_secret_token_not_yet_valid_is_rejected, test_secret_token_of_another_secret_is_rejected,
     test_secret_alg_none_token_is_rejected, test_secret_garbage_token_is_rejected,
     test_secret_token_without_required_claims_is_rejected, test_github_wrong_issuer_is_rejected,
     test_github_unknown_kid_is_rejected, test_github_token_signed_by_another_key_is_rejected,
     test_github_expired_token_is_rejected, test_github_hs256_signed_with_public_key_is_rejected,
     test_github_alg_none_is_rejected, test_github_mode_rejects_secret_mode_tokens,
     test_none_mode_still_enforces_expiry, test_secret_authenticator_checks_a_cached_token_against_the_clock
   - tests/server/test_management.py: test_every_endpoint_needs_an_admin_token (admin tokens:
     another secret, not yet valid, expired)
   - * test_secret_mode_accepts_only_hs256_under_its_own_token_key (HS512, RS256, and the
     keys derived for URLs, admin tokens and the dashboard, or the raw secret)
   - * test_a_changed_claim_breaks_the_signature
   - * test_admin_tokens_cannot_be_forged (alg none, the cache-token key, HS512, a string
     claim, no exp, an infinite exp, a NaN nbf)
2. Signed URLs cannot be reused for another entry, direction or repository, and expire.
   - tests/server/test_bad_input.py: test_forged_signatures, test_urls_used_in_the_wrong_direction,
     test_url_of_one_entry_on_another_path, test_expired_urls
   - tests/server/test_management.py: test_deleted_entry_is_gone_for_clients_and_its_key_reusable
     (a deleted entry's URL serves nothing; ids are never reused)
   - * test_signed_urls_of_one_repository_do_not_open_another_repositorys_entries
   - * test_upload_url_is_dead_once_its_entry_is_finalized
   - * test_upload_url_of_an_abandoned_reservation_cannot_fill_its_replacement
   - * test_signed_urls_work_until_their_expiry_and_not_at_it
3. A read-only scope cannot write.
   - tests/server/test_auth.py: test_read_only_token_cannot_reserve
   - * test_read_only_token_cannot_complete_an_upload_of_its_scope (v1 PATCH and commit, v2
     finalize)
4. A pull request scope cannot write its base branch (it reads it).
   - tests/server/test_auth.py: test_pr_token_writes_only_to_pr_scope_and_reads_main (v2)
   - * test_pr_token_cannot_complete_or_overwrite_base_branch_entries (v1 and v2)
5. Repository A can neither read nor list nor delete B's entries.
   - tests/server/test_auth.py: test_repositories_are_isolated (v1 and v2 lookups, prefixes),
     test_other_repository_cannot_touch_v1_reservation,
     test_other_repository_cannot_finalize_v2_reservation
   - tests/server/test_management.py: test_delete_by_id_of_another_repository_is_404
   - * test_one_repository_cannot_list_or_delete_anothers_entries (v1 ``GET caches``, the
     management API with runtime tokens)
   - * test_signed_urls_of_one_repository_do_not_open_another_repositorys_entries
6. Management needs an admin token.
   - tests/server/test_management.py: test_every_endpoint_needs_an_admin_token,
     test_admin_token_is_not_a_cache_token
   - tests/server/test_dashboard.py: test_every_page_and_action_needs_a_session,
     test_bad_tokens_are_rejected_at_login
   - tests/hardening/test_schemathesis.py: test_schemathesis_without_a_token_is_refused_everywhere,
     test_schemathesis_with_a_runtime_token_is_refused_everywhere
   - * test_one_repository_cannot_list_or_delete_anothers_entries (runtime tokens, even of the
     repository itself, are refused)
   - * test_none_mode_still_needs_a_signed_admin_token
7. Nothing secret appears in logs or errors.
   - tests/server/test_access_log.py: test_json_access_lines_have_their_fields_and_no_secrets,
     test_formatters_scrub_secrets_from_any_message
   - tests/server/test_auth.py: every rejection (``_assert_rejected`` checks the body does not
     echo the token)
   - * test_no_secret_in_logs_or_error_responses (debug level, text format, failing requests
     of every protocol, a malformed request carrying a token, the metrics token, the server
     secret and every key derived from it)
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.warnings import InsecureKeyLengthWarning

from ghacache.protocol.scopes import encode_ac, parse_scope_spec
from ghacache.server.auth import (
    ADMIN_CLAIM,
    derive_key,
    load_or_create_secret,
    mint_admin_token,
    mint_token,
)
from ghacache.server.logformat import REDACTED
from tests.conftest import Clock, ServerHandle, Spawner, serving
from tests.support import wire

MAIN = "refs/heads/main"
PR = "refs/pull/7/merge"
MANAGEMENT_LIST = "/repos/{repo}/actions/caches"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(server: ServerHandle, repo: str = "octo/repo", **extra: Any) -> dict[str, Any]:
    now = int(server.clock())
    return {
        "repository": repo,
        "ac": encode_ac((parse_scope_spec(f"{MAIN}:rw"),)),
        "nbf": now - 5,
        "iat": now,
        "exp": now + 3600,
        **extra,
    }


def _hs_long(payload: dict[str, Any], key: bytes, algorithm: str) -> str:
    """HS384/HS512 under a 32-byte key (PyJWT warns that the key is short: this is on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm=algorithm)


def _unsigned(payload: dict[str, Any]) -> str:
    head = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{_b64url(json.dumps(payload).encode())}."


async def _cache_statuses(http: aiohttp.ClientSession, base: str, token: str) -> tuple[int, int]:
    """(v2 lookup status, v1 lookup status) for a token."""
    async with http.post(
        base + wire.TWIRP + "GetCacheEntryDownloadURL",
        json={"key": "probe", "version": wire.VERSION},
        headers=wire.auth(token),
    ) as r:
        v2 = r.status
    async with http.get(
        base + wire.V1 + "cache",
        params={"keys": "probe", "version": wire.VERSION},
        headers=wire.auth(token),
    ) as r:
        v1 = r.status
    return v2, v1


async def _management_status(http: aiohttp.ClientSession, base: str, token: str) -> int:
    path = MANAGEMENT_LIST.format(repo="octo/repo")
    async with http.get(base + path, headers=wire.auth(token)) as r:
        await r.read()
        return r.status


async def _request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    async with http.request(method, url, data=data, headers=headers or {}) as r:
        return r.status, await r.read()


def _with_path_of(url: str, other: str) -> str:
    """``url``'s query (its signature) on ``other``'s path."""
    return urlunsplit(urlsplit(url)._replace(path=urlsplit(other).path))


async def _reserve_v2(http: aiohttp.ClientSession, base: str, token: str, key: str) -> str:
    ident = {"key": key, "version": wire.VERSION}
    status, body = await wire.twirp(http, base, "CreateCacheEntry", ident, token)
    assert status == 200 and body["ok"], body
    return str(body["signed_upload_url"])


async def _finalize(
    http: aiohttp.ClientSession, server: ServerHandle, token: str, key: str, size: int
) -> tuple[int, dict[str, Any]]:
    body = {"key": key, "version": wire.VERSION, "size_bytes": str(size)}
    return await wire.twirp(http, server.url, "FinalizeCacheEntryUpload", body, token)


async def _restore(
    http: aiohttp.ClientSession, server: ServerHandle, token: str, key: str
) -> bytes | None:
    found = await wire.v2_lookup(http, server.url, token, key)
    if not found["ok"]:
        return None
    status, data, _ = await wire.download(http, found["signed_download_url"])
    assert status == 200
    return data


# -- 1. tokens -------------------------------------------------------------------------------


async def test_secret_mode_accepts_only_hs256_under_its_own_token_key(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    claims = _claims(server)
    token_key = derive_key(server.secret, "token")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "HS512 under the token key": _hs_long(claims, token_key, "HS512"),
        "HS384 under the token key": _hs_long(claims, token_key, "HS384"),
        "RS256": jwt.encode(claims, rsa_key, algorithm="RS256"),
        "the raw secret": jwt.encode(claims, server.secret, algorithm="HS256"),
        **{
            f"the {purpose} key": jwt.encode(
                claims, derive_key(server.secret, purpose), algorithm="HS256"
            )
            for purpose in ("url", "admin", "ui")
        },
    }
    for what, token in refused.items():
        assert await _cache_statuses(http, server.url, token) == (401, 401), what
    accepted = jwt.encode(claims, token_key, algorithm="HS256")
    assert await _cache_statuses(http, server.url, accepted) == (200, 204)


async def test_a_changed_claim_breaks_the_signature(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token("octo/a", f"{PR}:rw", f"{MAIN}:r")
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changes = [
        {"repository": "octo/b"},
        {"ac": encode_ac((parse_scope_spec(f"{MAIN}:rw"),))},
        {"exp": claims["exp"] + 86400},
    ]
    for change in changes:
        forged_payload = _b64url(json.dumps({**claims, **change}).encode())
        forged = f"{head}.{forged_payload}.{sig}"
        assert await _cache_statuses(http, server.url, forged) == (401, 401), change
        status, _ = await wire.v1_reserve(http, server.url, forged, "forged-write")
        assert status == 401, change
    assert await _cache_statuses(http, server.url, token) == (200, 204)


async def test_admin_tokens_cannot_be_forged(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    now = int(server.clock())
    admin = {"iss": "ghacache", "sub": "admin", ADMIN_CLAIM: True, "nbf": now, "exp": now + 600}
    admin_key = derive_key(server.secret, "admin")
    forged = {
        "alg none": (_unsigned(admin), 401),
        "signed with the cache-token key": (
            jwt.encode(admin, derive_key(server.secret, "token"), algorithm="HS256"),
            401,
        ),
        "signed with the raw secret": (jwt.encode(admin, server.secret, algorithm="HS256"), 401),
        "HS512 under the admin key": (_hs_long(admin, admin_key, "HS512"), 401),
        "no exp": (
            jwt.encode({k: v for k, v in admin.items() if k != "exp"}, admin_key, "HS256"),
            401,
        ),
        # Signed with the admin key itself, yet never valid: no finite exp, or a NaN nbf.
        "exp Infinity": (jwt.encode({**admin, "exp": math.inf}, admin_key, "HS256"), 401),
        "exp true": (jwt.encode({**admin, "exp": True}, admin_key, "HS256"), 401),
        "nbf NaN": (jwt.encode({**admin, "nbf": math.nan}, admin_key, "HS256"), 401),
        "the claim as a string": (
            jwt.encode({**admin, ADMIN_CLAIM: "true"}, admin_key, algorithm="HS256"),
            403,
        ),
        "a runtime token carrying the admin claim": (
            jwt.encode(
                {**_claims(server), ADMIN_CLAIM: True},
                derive_key(server.secret, "token"),
                algorithm="HS256",
            ),
            403,
        ),
    }
    for what, (token, status) in forged.items():
        assert await _management_status(http, server.url, token) == status, what
    assert await _management_status(http, server.url, jwt.encode(admin, admin_key, "HS256")) == 200


@pytest.fixture
async def none_server(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    async with serving(tmp_path, clock, auth="none") as handle:
        yield handle


async def test_none_mode_still_needs_a_signed_admin_token(
    none_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """``--auth none`` stops checking runtime tokens' signatures, never admin tokens'."""
    server = none_server
    now = int(server.clock())
    unsigned_runtime = _unsigned(_claims(server))
    assert await _cache_statuses(http, server.url, unsigned_runtime) == (200, 204)
    assert await _management_status(http, server.url, unsigned_runtime) == 403
    admin = {ADMIN_CLAIM: True, "nbf": now, "exp": now + 600}
    assert await _management_status(http, server.url, _unsigned(admin)) == 401
    stranger = jwt.encode(admin, os.urandom(32), algorithm="HS256")
    assert await _management_status(http, server.url, stranger) == 401
    real = mint_admin_token(server.secret, ttl_s=600, now=now)
    assert await _management_status(http, server.url, real) == 200


# -- 2. signed URLs --------------------------------------------------------------------------


async def test_signed_urls_of_one_repository_do_not_open_another_repositorys_entries(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a, b = server.token("octo/a"), server.token("octo/b")
    a_data, b_data = os.urandom(3000), os.urandom(3000)
    await wire.v2_save(http, server.url, a, "shared-name", a_data)
    await wire.v2_save(http, server.url, b, "shared-name", b_data)
    a_download = (await wire.v2_lookup(http, server.url, a, "shared-name"))["signed_download_url"]
    b_download = (await wire.v2_lookup(http, server.url, b, "shared-name"))["signed_download_url"]

    # A's signature on B's entry: refused, and none of B's bytes come back.
    status, body = await _request(http, "GET", _with_path_of(a_download, b_download))
    assert status == 403
    assert b_data[:32] not in body
    status, body = await _request(http, "HEAD", _with_path_of(a_download, b_download))
    assert status == 403

    # A's upload signature on B's reservation: refused, and B's upload is untouched.
    a_upload = await _reserve_v2(http, server.url, a, "next")
    b_upload = await _reserve_v2(http, server.url, b, "next")
    headers = {"x-ms-blob-type": "BlockBlob"}
    status, _ = await _request(http, "PUT", _with_path_of(a_upload, b_upload), b"evil", headers)
    assert status == 403
    status, out = await _finalize(http, server, b, "next", 4)
    assert status == 412 and out["code"] == "failed_precondition"  # nothing was uploaded
    assert await wire.put_blob(http, b_upload, b"bees") == 201
    assert (await _finalize(http, server, b, "next", 4))[0] == 200
    assert await _restore(http, server, b, "next") == b"bees"
    # A's upload signature on B's committed entry, as a download: wrong direction and path.
    status, body = await _request(http, "GET", _with_path_of(a_upload, b_download))
    assert status == 403 and b_data[:32] not in body
    assert await _restore(http, server, b, "shared-name") == b_data
    assert await _restore(http, server, a, "shared-name") == a_data


async def test_upload_url_is_dead_once_its_entry_is_finalized(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    data = os.urandom(5000)
    upload = await _reserve_v2(http, server.url, token, "final")
    assert await wire.put_blob(http, upload, data) == 201
    assert (await _finalize(http, server, token, "final", len(data)))[0] == 200

    headers = {"x-ms-blob-type": "BlockBlob"}
    status, _ = await _request(http, "PUT", upload, b"overwrite", headers)
    assert status == 404
    block_id = wire._q(wire.js_block_id(0))
    status, _ = await _request(http, "PUT", f"{upload}&comp=block&blockid={block_id}", b"x")
    assert status == 404
    status, _ = await _request(
        http, "PUT", upload + "&comp=blocklist", wire.block_list([wire.js_block_id(0)])
    )
    assert status == 404
    assert await _restore(http, server, token, "final") == data
    # Finalizing again changes nothing either: the entry is immutable.
    status, out = await _finalize(http, server, token, "final", 9)
    assert status == 404 and out["code"] == "not_found"
    assert await _restore(http, server, token, "final") == data


@pytest.fixture
async def short_reservations(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    async with serving(tmp_path, clock, reservation_timeout="1m") as handle:
        yield handle


async def test_upload_url_of_an_abandoned_reservation_cannot_fill_its_replacement(
    short_reservations: ServerHandle, http: aiohttp.ClientSession
) -> None:
    server = short_reservations
    token = server.token()
    stale = await _reserve_v2(http, server.url, token, "retried")
    server.clock.advance(61)  # the reservation is abandoned; its URL has not expired (1 h)
    fresh = await _reserve_v2(http, server.url, token, "retried")
    assert urlsplit(fresh).path != urlsplit(stale).path
    assert await wire.put_blob(http, stale, b"stale bytes") == 404
    status, _ = await _request(http, "PUT", _with_path_of(stale, fresh), b"stale")
    assert status == 403
    assert await wire.put_blob(http, fresh, b"fresh bytes") == 201
    assert (await _finalize(http, server, token, "retried", 11))[0] == 200
    assert await _restore(http, server, token, "retried") == b"fresh bytes"


async def test_signed_urls_work_until_their_expiry_and_not_at_it(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    await wire.v2_save(http, server.url, token, "timed", b"timed bytes")
    server.clock.t = float(int(server.clock()))  # expiries are whole seconds
    download = (await wire.v2_lookup(http, server.url, token, "timed"))["signed_download_url"]
    upload = await _reserve_v2(http, server.url, token, "timed-upload")
    ttl = server.config.url_ttl
    server.clock.advance(ttl - 1)
    assert (await wire.download(http, download))[:2] == (200, b"timed bytes")
    server.clock.advance(1)
    status, body, headers = await wire.download(http, download)
    assert (status, headers["x-ms-error-code"]) == (401, "NoAuthenticationInformation")
    assert b"timed bytes" not in body
    assert await wire.put_blob(http, upload, b"late") == 401
    # A fresh lookup hands out a fresh URL.
    renewed = (await wire.v2_lookup(http, server.url, server.token(), "timed"))[
        "signed_download_url"
    ]
    assert (await wire.download(http, renewed))[:2] == (200, b"timed bytes")


# -- 3. read-only scopes and 4. pull requests --------------------------------------------------


async def test_read_only_token_cannot_complete_an_upload_of_its_scope(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    writer, reader = server.token("octo/repo", f"{MAIN}:rw"), server.token("octo/repo", f"{MAIN}:r")
    v2_upload = await _reserve_v2(http, server.url, writer, "ro-v2")
    assert await wire.put_blob(http, v2_upload, b"writer's v2") == 201
    status, body = await wire.v1_reserve(http, server.url, writer, "ro-v1")
    assert status == 201
    cache_id = int(body["cacheId"])

    status, out = await _finalize(http, server, reader, "ro-v2", 11)
    assert status == 403 and out["code"] == "permission_denied"
    assert await wire.v1_patch(http, server.url, reader, cache_id, 0, b"reader's") == 403
    status, raw = await wire.v1_commit(http, server.url, reader, cache_id, 0)
    assert status == 403 and json.loads(raw)["typeKey"] == "AccessDeniedException"
    assert await _restore(http, server, reader, "ro-v2") is None
    assert (await wire.v1_lookup(http, server.url, reader, ["ro-v1"]))[0] == 204

    # The writer's uploads were not disturbed.
    assert (await _finalize(http, server, writer, "ro-v2", 11))[0] == 200
    assert await wire.v1_patch(http, server.url, writer, cache_id, 0, b"writer's v1") == 204
    assert (await wire.v1_commit(http, server.url, writer, cache_id, 11))[0] == 204
    assert await _restore(http, server, reader, "ro-v2") == b"writer's v2"
    status, hit = await wire.v1_lookup(http, server.url, reader, ["ro-v1"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == b"writer's v1"


async def test_pr_token_cannot_complete_or_overwrite_base_branch_entries(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    main = server.token("octo/repo", f"{MAIN}:rw")
    pr = server.token("octo/repo", f"{PR}:rw", f"{MAIN}:r")

    # main's uploads in progress: the PR can neither fill nor finalize them.
    v2_upload = await _reserve_v2(http, server.url, main, "base-v2")
    assert await wire.put_blob(http, v2_upload, b"main v2") == 201
    status, body = await wire.v1_reserve(http, server.url, main, "base-v1")
    cache_id = int(body["cacheId"])
    status, out = await _finalize(http, server, pr, "base-v2", 7)
    assert status == 404 and out["code"] == "not_found"  # it looks in the PR's scope only
    assert await wire.v1_patch(http, server.url, pr, cache_id, 0, b"pr bytes") == 403
    assert (await wire.v1_commit(http, server.url, pr, cache_id, 0))[0] == 403
    assert (await _finalize(http, server, main, "base-v2", 7))[0] == 200
    assert await wire.v1_patch(http, server.url, main, cache_id, 0, b"main v1") == 204
    assert (await wire.v1_commit(http, server.url, main, cache_id, 7))[0] == 204

    # Saving main's keys from the PR lands in the PR's scope, on both protocols.
    await wire.v2_save(http, server.url, pr, "base-v2", b"pr v2")
    await wire.v1_save(http, server.url, pr, "base-v1", b"pr v1")
    for key, data in (("base-v1", b"main v1"), ("base-v2", b"main v2")):
        status, hit = await wire.v1_lookup(http, server.url, main, [key])
        assert status == 200 and hit is not None and hit["scope"] == MAIN
        assert (await wire.download(http, hit["archiveLocation"]))[1] == data
        status, hit = await wire.v1_lookup(http, server.url, pr, [key])
        assert status == 200 and hit is not None and hit["scope"] == PR
    admin = mint_admin_token(server.secret, ttl_s=600, now=server.clock())
    async with http.get(
        server.url + MANAGEMENT_LIST.format(repo="octo/repo"),
        params={"ref": MAIN},
        headers=wire.auth(admin),
    ) as r:
        listed = await r.json()
    assert sorted(c["key"] for c in listed["actions_caches"]) == ["base-v1", "base-v2"]


# -- 5. repositories and 6. management ---------------------------------------------------------


async def test_one_repository_cannot_list_or_delete_anothers_entries(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a, b = server.token("octo/a"), server.token("octo/b")
    entry_id = await wire.v2_save(http, server.url, a, "a-only", b"a's bytes")

    async def v1_list(token: str) -> Any:
        async with http.get(
            server.url + wire.V1 + "caches", params={"key": "a-only"}, headers=wire.auth(token)
        ) as r:
            assert r.status == 200
            return await r.json()

    assert (await v1_list(a))["totalCount"] == 1
    assert await v1_list(b) == {"totalCount": 0, "artifactCaches": []}

    # No runtime token manages entries, not even of its own repository.
    base = server.url + MANAGEMENT_LIST.format(repo="octo/a")
    for token in (b, a):
        requests = [
            ("GET", base, {}),
            ("DELETE", base, {"key": "a-only"}),
            ("DELETE", f"{base}/{entry_id}", {}),
            ("GET", server.url + "/repos/octo/a/actions/cache/usage", {}),
            ("GET", server.url + "/actions/cache/evictions", {"repo": "octo/a"}),
        ]
        for method, url, params in requests:
            async with http.request(method, url, params=params, headers=wire.auth(token)) as r:
                body = await r.json()
                assert r.status == 403, (method, url, body)
                assert body["code"] == "permission_denied"
                assert "a-only" not in json.dumps(body)
    assert await _restore(http, server, a, "a-only") == b"a's bytes"
    assert await _restore(http, server, b, "a-only") is None


# -- 7. secrets in logs and errors -------------------------------------------------------------


def _sig(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["sig"]


async def _raw_request(url: str, request: bytes) -> bytes:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_no_secret_in_logs_or_error_responses(
    spawn_server: Spawner, http: aiohttp.ClientSession
) -> None:
    metrics_token = "metrics-" + os.urandom(12).hex()
    s = spawn_server(
        "--log-level", "debug", "--log-format", "text", "--metrics-token", metrics_token
    )
    secret = load_or_create_secret(s.data_dir / "secret")
    now = time.time()

    def runtime(*scopes: str) -> str:
        specs = [parse_scope_spec(x) for x in scopes or (f"{MAIN}:rw",)]
        return mint_token(secret, repository="octo/app", scopes=specs, ttl_s=600, now=now)

    token, reader, admin = (
        runtime(),
        runtime(f"{MAIN}:r"),
        mint_admin_token(secret, ttl_s=600, now=now),
    )
    expired = mint_token(
        secret,
        repository="octo/app",
        scopes=[parse_scope_spec(f"{MAIN}:rw")],
        ttl_s=60,
        now=now - 3600,
    )
    stranger = mint_token(
        os.urandom(32),
        repository="octo/app",
        scopes=[parse_scope_spec(f"{MAIN}:rw")],
        ttl_s=600,
        now=now,
    )
    secrets = {
        "server secret": secret.hex(),
        "runtime token": token,
        "read-only token": reader,
        "admin token": admin,
        "expired token": expired,
        "foreign token": stranger,
        "metrics token": metrics_token,
    }
    for purpose in ("token", "url", "admin", "ui"):
        key = derive_key(secret, purpose)
        secrets[f"{purpose} key (hex)"] = key.hex()
        secrets[f"{purpose} key (base64)"] = _b64url(key)

    errors: list[tuple[str, int, str]] = []

    async def call(what: str, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
        async with http.request(method, url, **kwargs) as r:
            body = await r.read()
            if r.status >= 400:
                errors.append((what, r.status, body.decode(errors="replace") + str(r.headers)))
            return r.status, body

    # Valid traffic hands out signed URLs (capabilities the client must get).
    upload = await _reserve_v2(http, s.url, token, "log-key")
    secrets["upload signature"] = _sig(upload)
    assert await wire.put_blob(http, upload, b"logged bytes") == 201
    size = {"key": "log-key", "version": wire.VERSION, "size_bytes": "12"}
    assert (await wire.twirp(http, s.url, "FinalizeCacheEntryUpload", size, token))[0] == 200
    found = await wire.v2_lookup(http, s.url, token, "log-key")
    download = found["signed_download_url"]
    secrets["download signature"] = _sig(download)

    twirp = s.url + wire.TWIRP + "GetCacheEntryDownloadURL"
    lookup = {"key": "log-key", "version": wire.VERSION}
    for name in ("expired token", "foreign token", "admin token"):
        status, _ = await call(name, "POST", twirp, json=lookup, headers=wire.auth(secrets[name]))
        assert status == 401, name
    status, _ = await call(
        "garbage bearer", "POST", twirp, json=lookup, headers=wire.auth(secret.hex())
    )
    assert status == 401
    status, _ = await call(
        "v1 reserve read-only",
        "POST",
        s.url + wire.V1 + "caches",
        json={"key": "ro", "version": wire.VERSION},
        headers=wire.auth(reader),
    )
    assert status == 403
    status, _ = await call(
        "v1 lookup expired",
        "GET",
        s.url + wire.V1 + "cache",
        params={"keys": "log-key", "version": wire.VERSION},
        headers=wire.auth(expired),
    )
    assert status == 401
    forged = download.replace(_sig(download), _sig(upload))
    assert (await call("forged signature", "GET", forged))[0] == 403
    assert (await call("upload URL as download", "GET", _with_path_of(upload, download)))[0] == 403
    assert (await call("download URL as upload", "PUT", download, data=b"x"))[0] == 405
    assert (await call("unsigned", "GET", download.split("?")[0]))[0] == 401
    management = s.url + "/repos/octo/app/actions/caches"
    assert (await call("management runtime", "GET", management, headers=wire.auth(token)))[0] == 403
    assert (await call("management foreign", "GET", management, headers=wire.auth(stranger)))[
        0
    ] == 401
    assert (
        await call(
            "management bad param",
            "GET",
            management,
            params={"per_page": "0"},
            headers=wire.auth(admin),
        )
    )[0] == 422
    assert (await call("metrics without", "GET", s.url + "/metrics"))[0] == 401
    assert (await call("metrics wrong", "GET", s.url + "/metrics", headers=wire.auth(admin)))[
        0
    ] == 401
    status, _ = await call(
        "dashboard login with a runtime token",
        "POST",
        s.url + "/ui/login",
        data={"token": token, "next": "/ui/"},
        allow_redirects=False,
    )
    assert status == 403
    status, scrape = await call(
        "metrics scrape", "GET", s.url + "/metrics", headers=wire.auth(metrics_token)
    )
    assert status == 200
    # A malformed request carrying a signature, the admin token and, in the bad header line, a
    # runtime token: aiohttp's parser refuses it (400) and logs the error with that line.
    target = urlsplit(download)
    raw = (
        f"GET {target.path}?{target.query} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {admin}\r\nX-Echo: {token}\x00\r\n\r\n"
    ).encode()
    answer = await _raw_request(s.url, raw)
    assert answer.startswith(b"HTTP/1.0 400 Bad Request"), answer
    # Known limitation (docs/security.md): the 400 text quotes the bad line back to its sender.
    quoted = f"X-Echo: {token}".encode()
    assert quoted in answer
    errors.append(("malformed request", 400, answer.replace(quoted, b"").decode()))

    s.stop()  # every line is flushed
    log = s.log.read_text()
    assert " 401" in log and " 403" in log  # the failures were logged
    assert "Error handling request" in log  # and so was the malformed request, scrubbed:
    assert f"X-Echo: {REDACTED}" in log
    for name, value in secrets.items():
        assert value not in log, f"the {name} is in the log"
        for what, status, body in errors:
            assert value not in body, f"the {name} is in the {status} answer to {what}"
        assert value.encode() not in scrape, f"the {name} is in the metrics"
