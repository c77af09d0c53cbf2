"""Client configuration: which server, which protocol, how to transfer and retry.

Built once and passed down (BuildKit's ``getConfig``). Only ``ClientConfig.from_env`` looks at
an environment, and only the mapping it is given; the CLI is the one caller that hands it
``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlsplit

Protocol = Literal["v1", "v2"]

MiB = 1024 * 1024

# Transfer defaults, chosen by measurement against ghacache over loopback (docs/client.md,
# "Measured defaults"): one block in flight beat two or four on both protocols (the server
# writes every block straight into place, so more streams only add contention), and 16 to
# 64 MiB blocks were alike; 32 MiB is actions/cache's own size. Blocks are streamed from
# the file, so memory stays near 4 MiB per block in flight. Bodies up to 128 MiB (the
# official client's single-shot limit) go in one streamed request; above it, blocks keep a
# failure's cost to one block. Over a WAN to Azure, more in flight may pay off.
DEFAULT_BLOCK_BYTES = 32 * MiB
DEFAULT_CONCURRENCY = 1
DEFAULT_SINGLE_PUT_BYTES = 128 * MiB
# BuildKit's default ``timeout`` (PR #4702): the budget of one request and all its retries.
DEFAULT_TIMEOUT_S = 600.0
# A socket that delivers nothing for this long is treated as dropped (and retried).
DEFAULT_IDLE_TIMEOUT_S = 120.0
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_USER_AGENT = "ghacache"

# Hosted v2 endpoint; BuildKit picks v2 for a URL on this host when no version is given.
_V2_HOST_MARK = "results-receiver.actions.githubusercontent.com"
# Azure allows at most 50,000 blocks per blob.
MAX_BLOCKS = 50_000


@dataclass(frozen=True, kw_only=True)
class RetrySettings:
    """Capped exponential back-off with jitter, bounded by a deadline per request.

    ``timeout_s`` bounds one logical request (an API call, one block, one ranged read) and
    all its retries and waits; ``idle_timeout_s`` bounds silence on a socket.
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.idle_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Where the cache service is and how to talk to it.

    ``url`` is the v1 base URL (``ACTIONS_CACHE_URL``; any path prefix is kept), ``url_v2``
    the v2 one (``ACTIONS_RESULTS_URL``; Twirp lives at its origin root, as the official
    client assumes). ``protocol`` forces a protocol; unset, it is chosen like BuildKit does
    (see :meth:`selected`).
    """

    token: str
    url: str | None = None
    url_v2: str | None = None
    protocol: Protocol | None = None
    block_bytes: int = DEFAULT_BLOCK_BYTES
    concurrency: int = DEFAULT_CONCURRENCY
    single_put_bytes: int = DEFAULT_SINGLE_PUT_BYTES
    retry: RetrySettings = field(default_factory=RetrySettings)
    user_agent: str = DEFAULT_USER_AGENT

    def __post_init__(self) -> None:
        if self.protocol not in (None, "v1", "v2"):
            raise ValueError(f"protocol must be 'v1' or 'v2', got {self.protocol!r}")
        if self.block_bytes < 1 or self.concurrency < 1:
            raise ValueError("block_bytes and concurrency must be at least 1")
        if self.single_put_bytes < 0:
            raise ValueError("single_put_bytes must not be negative")
        for name in ("url", "url_v2"):
            value = getattr(self, name)
            if value is not None and urlsplit(value).scheme not in ("http", "https"):
                raise ValueError(f"{name} must be an http(s) URL, got {value!r}")

    def selected(self) -> tuple[Protocol, str]:
        """The protocol and base URL to use, by BuildKit's rules (``gha.go`` ``getConfig``).

        ``protocol="v1"`` uses ``url``; otherwise a ``url_v2`` means v2; otherwise ``url``
        is used with ``protocol`` if given, else v2 only for GitHub's results host.

        Raises:
            ValueError: no URL fits.
        """
        if self.protocol != "v1" and self.url_v2:
            return "v2", self.url_v2
        if not self.url:
            raise ValueError(
                "no cache service URL: set url (ACTIONS_CACHE_URL) or url_v2 (ACTIONS_RESULTS_URL)"
            )
        if self.protocol is not None:
            return self.protocol, self.url
        return ("v2" if _V2_HOST_MARK in self.url else "v1"), self.url

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        token: str | None = None,
        url: str | None = None,
        url_v2: str | None = None,
        protocol: Protocol | None = None,
        **settings: object,
    ) -> ClientConfig:
        """Fill what the arguments leave out from a runner's environment, as buildctl does.

        ``url_v2`` comes from ``ACTIONS_RESULTS_URL`` when ``ACTIONS_CACHE_SERVICE_V2`` is
        true and no protocol is forced; ``url`` from ``ACTIONS_CACHE_URL``, else
        ``ACTIONS_RESULTS_URL``; the token from ``ACTIONS_RUNTIME_TOKEN``. ``settings`` are
        passed to the constructor (``block_bytes=``, ``retry=`` ...).

        Raises:
            ValueError: no token, or no URL at all.
        """
        if (
            url_v2 is None
            and protocol is None
            and go_parse_bool(environ.get("ACTIONS_CACHE_SERVICE_V2", ""))
        ):
            url_v2 = environ.get("ACTIONS_RESULTS_URL") or None
        if url is None:
            url = environ.get("ACTIONS_CACHE_URL") or environ.get("ACTIONS_RESULTS_URL") or None
        if token is None:
            token = environ.get("ACTIONS_RUNTIME_TOKEN", "")
        if not token:
            raise ValueError("no runtime token: pass token= or set ACTIONS_RUNTIME_TOKEN")
        config = cls(token=token, url=url, url_v2=url_v2, protocol=protocol, **settings)  # type: ignore[arg-type]
        config.selected()  # fail now, not at the first request
        return config

    def with_changes(self, **changes: object) -> ClientConfig:
        """A copy with some fields replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]


def go_parse_bool(value: str) -> bool:
    """Go's ``strconv.ParseBool``, with anything unparsable read as false (as buildctl does)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")
