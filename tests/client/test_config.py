"""Protocol and URL selection: BuildKit's rules (buildkit-real-client-behaviour.md cases A-G)."""

from __future__ import annotations

import pytest

from ghacache.client import ClientConfig, RetrySettings
from tests.client.conftest import VERSION, MakeClient
from tests.conftest import ServerHandle

V1_URL = "http://cache.example:8080/abc/"
V2_URL = "http://results.example:8080/"
TOKEN = {"ACTIONS_RUNTIME_TOKEN": "t"}


@pytest.mark.parametrize(
    ("case", "environ", "args", "expected"),
    [
        ("A", {"ACTIONS_CACHE_URL": V1_URL}, {}, ("v1", V1_URL)),
        (
            "B",
            {"ACTIONS_CACHE_SERVICE_V2": "1", "ACTIONS_RESULTS_URL": V2_URL},
            {},
            ("v2", V2_URL),
        ),
        ("C", {"ACTIONS_CACHE_SERVICE_V2": "1"}, {"url": V1_URL}, ("v1", V1_URL)),
        ("D", {}, {"url": V1_URL, "protocol": "v2"}, ("v2", V1_URL)),
        ("E", {}, {"url_v2": V2_URL}, ("v2", V2_URL)),
        ("F", {}, {"url_v2": V2_URL, "url": V1_URL, "protocol": "v1"}, ("v1", V1_URL)),
        (
            "G",
            {
                "ACTIONS_CACHE_URL": V1_URL,
                "ACTIONS_RESULTS_URL": V2_URL,
                "ACTIONS_CACHE_SERVICE_V2": "true",
            },
            {},
            ("v2", V2_URL),
        ),
        # Without the v2 flag the results URL is only the v1 fallback (buildx fills url so).
        ("results-as-v1", {"ACTIONS_RESULTS_URL": V2_URL}, {}, ("v1", V2_URL)),
        # ... unless it is GitHub's results host, which BuildKit treats as v2.
        (
            "github-host",
            {"ACTIONS_RESULTS_URL": "https://results-receiver.actions.githubusercontent.com/"},
            {},
            ("v2", "https://results-receiver.actions.githubusercontent.com/"),
        ),
        # A forced protocol wins over the environment's flag.
        (
            "forced-v1",
            {"ACTIONS_CACHE_SERVICE_V2": "1", "ACTIONS_RESULTS_URL": V2_URL},
            {"protocol": "v1"},
            ("v1", V2_URL),
        ),
    ],
)
def test_selection_follows_buildkit(
    case: str, environ: dict[str, str], args: dict[str, str], expected: tuple[str, str]
) -> None:
    config = ClientConfig.from_env({**TOKEN, **environ}, **args)  # type: ignore[arg-type]
    assert config.selected() == expected, case


@pytest.mark.parametrize(
    ("value", "v2"),
    [("1", True), ("true", True), ("True", True), ("t", True), ("TRUE", True),
     ("0", False), ("false", False), ("yes", False), ("", False), ("on", False)],
)  # fmt: skip
def test_v2_flag_parses_like_go(value: str, v2: bool) -> None:
    environ = {**TOKEN, "ACTIONS_CACHE_SERVICE_V2": value, "ACTIONS_RESULTS_URL": V2_URL}
    assert ClientConfig.from_env(environ).selected()[0] == ("v2" if v2 else "v1")


def test_explicit_token_and_urls_win_over_the_environment() -> None:
    environ = {**TOKEN, "ACTIONS_CACHE_URL": V1_URL}
    config = ClientConfig.from_env(environ, token="mine", url="http://other:1/")
    assert (config.token, config.url) == ("mine", "http://other:1/")


def test_missing_token_or_url_fails_early() -> None:
    with pytest.raises(ValueError, match="ACTIONS_RUNTIME_TOKEN"):
        ClientConfig.from_env({"ACTIONS_CACHE_URL": V1_URL})
    with pytest.raises(ValueError, match="no cache service URL"):
        ClientConfig.from_env(TOKEN)


def test_only_from_env_reads_an_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONS_CACHE_URL", V1_URL)
    monkeypatch.setenv("ACTIONS_RUNTIME_TOKEN", "t")
    with pytest.raises(ValueError, match="no cache service URL"):
        ClientConfig(token="t").selected()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"protocol": "v3"}, "protocol must be"),
        ({"url": "ftp://x/"}, "http"),
        ({"block_bytes": 0}, "at least 1"),
        ({"concurrency": 0}, "at least 1"),
        ({"single_put_bytes": -1}, "negative"),
    ],
)
def test_invalid_settings_are_rejected(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClientConfig(**{"token": "t", "url": V1_URL, **bad})  # type: ignore[arg-type]


def test_invalid_retry_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        RetrySettings(timeout_s=0)
    with pytest.raises(ValueError, match="max_attempts"):
        RetrySettings(max_attempts=0)
    with pytest.raises(ValueError, match="base_delay_s"):
        RetrySettings(base_delay_s=5, max_delay_s=1)


async def test_v2_ignores_the_url_path_and_v1_keeps_it(
    server: ServerHandle, make_client: MakeClient
) -> None:
    # Twirp lives at the origin root (the official client drops the path); v1 keeps any prefix.
    v2 = make_client("v2", url=server.url + "/ignored/path/")
    v1 = make_client("v1", url=server.url + "/opaque-prefix/")
    await v2.save("path-test", VERSION, b"x")
    entry = await v1.lookup("path-test", VERSION)
    assert entry is not None and entry.scope == "refs/heads/main"
