"""Server settings: one table drives flags, ``GHACACHE_*`` variables and the README table.

Each ``Setting`` row names a setting once; ``cli`` builds flags from the rows and a test
checks every row is documented in README.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

AuthMode = Literal["secret", "github", "none"]
LogFormat = Literal["auto", "json", "text"]
TracingMode = Literal["off", "console", "otlp"]


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str
    kind: Literal["str", "int", "bool", "duration", "size", "choice"] = "str"
    choices: tuple[str, ...] = ()
    # A flag other than --<name>, when two commands need one flag with different meanings
    # (e.g. `token --scope` and `buildkit --scope`); the variable stays GHACACHE_<NAME>.
    flag_override: str = ""

    @property
    def flag(self) -> str:
        return self.flag_override or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "GHACACHE_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Address to listen on."),
    Setting("port", "8080", "Port to listen on; 0 picks a free port.", "int"),
    Setting("data_dir", "ghacache-data", "Directory for the secret, the SQLite index and blobs."),
    Setting(
        "auth",
        "secret",
        "How runtime tokens are checked: secret (HS256 with the server's own secret), "
        "github (RS256 against --jwks and --issuer), none (unverified; loopback only).",
        "choice",
        ("secret", "github", "none"),
    ),
    Setting("jwks", "", "github auth: JWKS file path or URL of the token issuer's keys."),
    Setting("issuer", "", "github auth: required 'iss' claim of runtime tokens."),
    Setting(
        "audience",
        "",
        "github auth: required 'aud' claim, if set (otherwise 'aud' is not checked).",
    ),
    Setting(
        "allow_insecure_bind",
        "false",
        "Allow --auth none on a non-loopback address (anyone who can reach it can read and write).",
        "bool",
    ),
    Setting(
        "secret_file",
        "",
        "File holding the token and URL signing secret (default: <data-dir>/secret); "
        "replicas must share it.",
    ),
    Setting(
        "database_url",
        "",
        "Index database: sqlite:///PATH (default: <data-dir>/index.sqlite) or "
        "postgresql://USER@HOST/DB?pool_max=10 for replicas.",
    ),
    Setting(
        "storage_url",
        "",
        "Blob store: file://PATH (default: <data-dir>/store), s3://BUCKET/PREFIX, "
        "az://CONTAINER/PREFIX or gs://BUCKET/PREFIX (options: docs/deploying.md).",
    ),
    Setting(
        "public_url",
        "",
        "Base URL clients use to reach this server, for signed blob URLs "
        "(default: taken from each request's Host).",
    ),
    Setting("url_ttl", "1h", "Lifetime of signed upload and download URLs.", "duration"),
    Setting(
        "reservation_timeout",
        "1h",
        "An upload idle this long is abandoned: its key can be reserved again, its bytes removed.",
        "duration",
    ),
    Setting("max_entry_size", "10GiB", "Largest entry accepted.", "size"),
    Setting(
        "body_read_timeout",
        "60s",
        "A request body that sends nothing for this long is cut off (408) and the connection "
        "closed, so slow-drip clients cannot hold uploads open.",
        "duration",
    ),
    Setting(
        "repo_quota_bytes",
        "10GiB",
        "Per-repository quota; over it, least recently accessed entries are evicted.",
        "size",
    ),
    Setting("idle_expiry", "7d", "Entries not accessed for this long are evicted.", "duration"),
    Setting(
        "repo_overrides",
        "",
        "Per-repository quota and expiry: OWNER/NAME=QUOTA[:EXPIRY], comma-separated, "
        "e.g. octo/big=50GiB:14d,octo/tiny=1GiB.",
    ),
    Setting(
        "eviction_interval",
        "10m",
        "How often eviction and reconciliation sweep all repositories.",
        "duration",
    ),
    Setting(
        "orphan_grace",
        "1h",
        "Bytes without an entry (and staged uploads without a reservation) older than this are removed.",
        "duration",
    ),
    Setting(
        "job_lease",
        "5m",
        "Replicas: a background job's database lease lasts this long, so a replica that dies "
        "mid-job is replaced after at most this delay.",
        "duration",
    ),
    Setting(
        "direct_transfers",
        "false",
        "Hand out the object store's own signed URLs (Azure SAS) so clients upload and "
        "download without passing through the server; needs an az:// storage URL.",
        "bool",
    ),
    Setting(
        "rate_limit",
        "0",
        "Cache-entry creations allowed per minute per repository (0 = no limit); over it, 429 with Retry-After.",
        "int",
    ),
    Setting(
        "fsync", "true", "fsync blobs and directories before an entry becomes visible.", "bool"
    ),
    Setting(
        "buildkit_merge",
        "true",
        "Merge each new BuildKit index generation with the previous one, and drop index records "
        "whose blobs were evicted.",
        "bool",
    ),
    Setting(
        "buildkit_index_max_bytes",
        "1MiB",
        "Merged BuildKit indexes are trimmed (oldest results first) to at most this size.",
        "size",
    ),
    Setting(
        "buildkit_index_max_age",
        "0",
        "Drop merged BuildKit index results older than this (0 = keep while their blobs exist).",
        "duration",
    ),
    Setting("log_level", "info", "Log level: debug, info, warning or error."),
    Setting(
        "log_format",
        "auto",
        "Log lines as json (one object a line) or text; auto: json unless stderr is a terminal.",
        "choice",
        ("auto", "json", "text"),
    ),
    Setting(
        "metrics_token",
        "",
        "Bearer token GET /metrics requires (empty: /metrics is open, as Prometheus expects).",
    ),
    Setting(
        "tracing",
        "off",
        "OpenTelemetry spans for requests, storage and database calls: off, console (stdout) "
        "or otlp (needs opentelemetry-exporter-otlp-proto-http; OTEL_* variables apply).",
        "choice",
        ("off", "console", "otlp"),
    ),
)

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZES = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
    "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4,
    "tib": 1024**4,
}  # fmt: skip


def parse_duration(value: str) -> float:
    """Parse ``90``, ``90s``, ``30m``, ``6h``, ``7d`` or ``1w`` into seconds.

    Raises:
        ValueError: not a duration.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 30m, 6h, 7d)")
    return float(m.group(1)) * _UNITS_S[m.group(2) or "s"]


def parse_size(value: str) -> int:
    """Parse ``1048576``, ``512MiB``, ``10GiB`` or ``10GB`` into bytes.

    Raises:
        ValueError: not a size.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).lower() not in _SIZES:
        raise ValueError(f"not a size: {value!r} (use e.g. 1048576, 512MiB, 10GiB)")
    return int(m.group(1)) * _SIZES[m.group(2).lower()]


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r} (use true or false)")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Typed server settings, built once from the ``SETTINGS`` table."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("ghacache-data")
    auth: AuthMode = "secret"
    jwks: str = ""
    issuer: str = ""
    audience: str = ""
    allow_insecure_bind: bool = False
    secret_file: str = ""
    database_url: str = ""
    storage_url: str = ""
    public_url: str = ""
    url_ttl: float = 3600.0
    reservation_timeout: float = 3600.0
    max_entry_size: int = 10 * 1024**3
    body_read_timeout: float = 60.0
    repo_quota_bytes: int = 10 * 1024**3
    idle_expiry: float = 7 * 86400.0
    repo_overrides: str = ""
    eviction_interval: float = 600.0
    orphan_grace: float = 3600.0
    job_lease: float = 300.0
    direct_transfers: bool = False
    rate_limit: int = 0
    buildkit_merge: bool = True
    buildkit_index_max_bytes: int = 1024 * 1024
    buildkit_index_max_age: float = 0.0
    fsync: bool = True
    log_level: str = "info"
    log_format: LogFormat = "auto"
    metrics_token: str = field(default="", repr=False)
    tracing: TracingMode = "off"

    @property
    def secret_path(self) -> Path:
        return Path(self.secret_file) if self.secret_file else self.data_dir / "secret"

    @property
    def index_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def store_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'store').resolve()}"

    def repo_policies(self) -> dict[str, tuple[int, float]]:
        """Parse ``repo_overrides`` into repo -> (quota bytes, idle expiry seconds).

        Raises:
            ValueError: a malformed override.
        """
        return parse_repo_overrides(
            self.repo_overrides, quota=self.repo_quota_bytes, expiry=self.idle_expiry
        )

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> ServerConfig:
        """Build from setting name -> string value; missing names take table defaults.

        Raises:
            ValueError: a value does not parse, naming the setting.
        """
        by_name = {s.name: s for s in SETTINGS}
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, object] = {}
        for name, setting in by_name.items():
            raw = values.get(name, setting.default)
            try:
                kwargs[name] = _convert(setting, raw)
            except ValueError as exc:
                raise ValueError(f"{setting.flag} / {setting.env}: {exc}") from exc
        for positive in ("job_lease", "body_read_timeout"):
            if not float(kwargs[positive]) > 0:  # type: ignore[arg-type]
                setting = by_name[positive]
                raise ValueError(f"{setting.flag} / {setting.env}: must be longer than 0s")
        config = cls(**{k: v for k, v in kwargs.items() if k in known})  # type: ignore[arg-type]
        try:
            config.repo_policies()
        except ValueError as exc:
            raise ValueError(f"--repo-overrides / GHACACHE_REPO_OVERRIDES: {exc}") from exc
        return config


def _convert(setting: Setting, raw: str) -> object:
    if setting.kind == "int":
        return int(raw)
    if setting.kind == "bool":
        return parse_bool(raw)
    if setting.kind == "duration":
        return parse_duration(raw)
    if setting.kind == "size":
        return parse_size(raw)
    if setting.kind == "choice" and raw not in setting.choices:
        raise ValueError(f"{raw!r} is not one of {', '.join(setting.choices)}")
    if setting.name == "data_dir":
        return Path(raw)
    return raw


def parse_repo_overrides(text: str, *, quota: int, expiry: float) -> dict[str, tuple[int, float]]:
    """Parse ``OWNER/NAME=QUOTA[:EXPIRY],...``; omitted parts take the global values.

    Raises:
        ValueError: a malformed item.
    """
    out: dict[str, tuple[int, float]] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        repo, sep, limits = item.partition("=")
        if not sep or "/" not in repo or not limits:
            raise ValueError(f"override {item!r} must look like OWNER/NAME=QUOTA[:EXPIRY]")
        size, _, age = limits.partition(":")
        out[repo.strip()] = (
            parse_size(size) if size else quota,
            parse_duration(age) if age else expiry,
        )
    return out
