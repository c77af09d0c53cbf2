"""Run the official ``@actions/cache`` npm client (our conformance oracle).

The Node side lives in ``tests/js``: ``driver.mjs`` calls ``saveCache`` or
``restoreCache`` from one of two pinned client versions and ends its output
with a ``GHACACHE_RESULT <json>`` line, which :func:`run_official` parses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

JS_DIR: Path = Path(__file__).resolve().parent.parent / "js"
DRIVER: Path = JS_DIR / "driver.mjs"

_CLIENT_PACKAGES = ("actions-cache-v6", "actions-cache-v3")
_RESULT_PREFIX = "GHACACHE_RESULT "
_WARNING_PREFIX = "::warning::"
# @actions/core escapes '%', CR and LF in workflow-command data.
_ESCAPES = {"%25": "%", "%0D": "\r", "%0A": "\n"}
_ESCAPE_RE = re.compile("|".join(_ESCAPES))


def ensure_node_modules() -> None:
    """Install the pinned clients from the lockfile unless they are present."""
    modules = JS_DIR / "node_modules"
    if all((modules / name).is_dir() for name in _CLIENT_PACKAGES):
        return
    try:
        proc = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RuntimeError(f"npm is not installed: {exc}") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"npm ci failed in {JS_DIR} (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )


def _unescape(data: str) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], data)


@dataclass(frozen=True)
class OfficialResult:
    """Outcome of one driver run.

    ``result`` is what ``saveCache``/``restoreCache`` returned (``None`` for
    ``undefined``); ``error`` is ``"<name>: <message>"`` if the call threw.
    """

    ok: bool
    result: object
    error: str | None
    stdout: str
    stderr: str

    @property
    def warnings(self) -> list[str]:
        """``::warning::`` messages, prefix stripped and %-escapes undone."""
        return [
            _unescape(line.removeprefix(_WARNING_PREFIX))
            for line in self.stdout.splitlines()
            if line.startswith(_WARNING_PREFIX)
        ]

    @property
    def info_lines(self) -> list[str]:
        """Plain (non ``::command::``) output lines, without the result line."""
        return [
            line
            for line in self.stdout.splitlines()
            if line and not line.startswith(("::", _RESULT_PREFIX))
        ]


def _parse_report(stdout: str, stderr: str) -> tuple[bool, object, str | None]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
    if len(lines) != 1:
        raise AssertionError(
            f"expected one {_RESULT_PREFIX.strip()} line, got {len(lines)}\n"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )
    report = json.loads(lines[0].removeprefix(_RESULT_PREFIX))
    if not isinstance(report, dict) or not isinstance(report.get("ok"), bool):
        raise AssertionError(f"malformed driver report: {lines[0]!r}")
    if report["ok"]:
        return True, report.get("result"), None
    return False, None, str(report.get("error"))


def run_official(
    impl: Literal["v6", "v3"],
    op: Literal["save", "restore"],
    *,
    key: str,
    paths: Sequence[str],
    restore_keys: Sequence[str] = (),
    lookup_only: bool = False,
    env: Mapping[str, str],
    cwd: Path,
    timeout_s: float = 300,
) -> OfficialResult:
    """Run one ``saveCache``/``restoreCache`` call of the official client.

    The child sees only PATH, HOME and ``env`` (see :func:`official_env`).
    The client globs ``paths`` relative to ``cwd`` but runs tar in
    ``GITHUB_WORKSPACE``, so ``cwd`` should normally be the workspace.
    """
    ensure_node_modules()
    args = ["node", str(DRIVER), impl, op, f"--key={key}"]
    args += [f"--path={p}" for p in paths]
    args += [f"--restore-key={k}" for k in restore_keys]
    if lookup_only:
        args.append("--lookup-only")

    child_env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    child_env.update(env)
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"official client {impl} {op} timed out after {timeout_s} s\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        ) from exc
    if proc.returncode != 0:
        raise AssertionError(
            f"driver exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    ok, result, error = _parse_report(proc.stdout, proc.stderr)
    return OfficialResult(ok, result, error, proc.stdout, proc.stderr)


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def official_env(
    *,
    protocol: Literal["v1", "v2"],
    base_url: str,
    token: str,
    workspace: Path,
    temp: Path,
) -> dict[str, str]:
    """Environment that points the official client at ``base_url``.

    For v2 the client drops any path in ``base_url`` (twirp is served at the
    origin root); for v1 the path is kept. GITHUB_SERVER_URL stays unset, since
    6.x would treat a non-github host as GHES and force v1.
    """
    url = base_url if base_url.endswith("/") else base_url + "/"
    env = {
        "ACTIONS_RUNTIME_TOKEN": token,
        "GITHUB_WORKSPACE": str(workspace),
        "RUNNER_TEMP": str(temp),
    }
    if protocol == "v2":
        env["ACTIONS_RESULTS_URL"] = url
        env["ACTIONS_CACHE_SERVICE_V2"] = "true"
    else:
        env["ACTIONS_CACHE_URL"] = url
    return env
